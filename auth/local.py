"""The operator at the machine, for commands that act without a token.

``clearance ingest PATH`` (when no server owns the index), ``clearance sources add|update|delete``
and the queue commands open the catalog and the index directly: whoever runs them can read the
data dir, so no token could add to what they may do. They still act as someone, so their writes
are audited: these entitlements name the OS user under the ``local:cli`` issuer (never a token
issuer: tokens only come from configured issuers, whose names are URLs). They carry the admin
scope; the local folder sync (``WriteService.sync_local``) is the one write that trusts them
without a writer principal, because it reads the operator's own filesystem with the operator's
own rights.
"""

from __future__ import annotations

import getpass
import re

from auth.authenticator import ADMIN
from core.types import Entitlements

LOCAL_ISSUER = "local:cli"
_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")


def operator_entitlements(tenant: str, user: str | None = None) -> Entitlements:
    """The local operator (``user``: default the OS login) acting on ``tenant``."""
    try:
        name = user or getpass.getuser()
    except Exception:  # no login name (containers without a passwd entry)
        name = "unknown"
    name = _UNSAFE.sub("_", name)[:64] or "unknown"
    return Entitlements(subject=f"local/{name}", issuer=LOCAL_ISSUER, tenant=tenant,
                        principals=frozenset({f"user:local/{name}", f"tenant:{tenant}"}), scopes=frozenset({ADMIN}))
