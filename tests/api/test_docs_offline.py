"""/docs and /redoc load every script and stylesheet from this server (issue 14): nothing from a
CDN, so the pages work on an offline network."""

from __future__ import annotations

import re
from pathlib import Path

from tests.api.ops_env import HTTP, running


def test_docs_and_redoc_use_packaged_assets(tmp_path: Path) -> None:
    with running(tmp_path) as env:
        for page in ("/docs", "/redoc"):
            r = HTTP.get(env.url + page)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            refs = re.findall(r"""(?:src|href)\s*[=:]\s*['"]([^'"]+)['"]""", r.text)
            assert refs and not [u for u in refs if u.startswith(("http:", "https:", "//"))], refs
            for ref in refs:
                if ref.endswith((".js", ".css")):
                    asset = HTTP.get(env.url + ref)
                    assert asset.status_code == 200 and len(asset.content) > 10_000, ref
        assert HTTP.get(env.url + "/openapi.json").status_code == 200
