"""Connector secrets: read from the environment, only under one prefix.

A connector config names the variable that holds its password (``password_env``), never the
password. The name must start with ``CLEARANCE_CONNECTOR_SECRET_``: otherwise an admin over the
API could name any variable of the server's environment (the SCIM token, an OIDC client secret,
the catalog URL) and have the connector send it as a login password to a host of their choice.
"""

from __future__ import annotations

import os
import re

from core.errors import ConfigError

PREFIX = "CLEARANCE_CONNECTOR_SECRET_"
_NAME = re.compile(r"^CLEARANCE_CONNECTOR_SECRET_[A-Z0-9_]{1,100}$")


def check_secret_name(name: str) -> str:
    """``name`` if it may hold a connector secret, else a ``ConfigError`` naming the rule."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"password_env must name an environment variable {PREFIX}<NAME> (upper case, digits, _); "
                          f"got {str(name)[:60]!r}", code="invalid_source")
    return name


def read_secret(name: str, *, code: str = "invalid_source") -> str:
    """The value of the connector secret ``name`` (checked by :func:`check_secret_name`)."""
    check_secret_name(name)
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(f"environment variable {name} (password_env) is not set", code=code)
    return value
