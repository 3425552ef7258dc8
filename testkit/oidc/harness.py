"""Loopback identity infrastructure for the auth tests (no mocks: real sockets, real keys).

- ``JwksServer``: an OIDC discovery document and a JWKS on a loopback port, served by
  ``http.server`` in a thread; tests change what it serves (keys, Cache-Control, status, delay)
  and read how often each path was fetched.
- ``mint``/``compact``: JWS compact tokens signed with joserfc's algorithm implementations,
  with full control over the header (the attacker's side: forged headers are the point).
- ``OidcProvider``: the npm ``oidc-provider`` in ``testkit/oidc/provider.mjs`` as a child process.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

OIDC_DIR = Path(__file__).resolve().parent

Key = RSAKey | ECKey | OKPKey


# ---------------------------------------------------------------------------------- tokens

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: Any) -> str:
    """bytes as they are, anything else as compact JSON, then base64url."""
    raw = value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode()
    return b64(raw)


def signature(key: Key, alg: str, signing_input: bytes) -> bytes:
    return JWSRegistry.algorithms[alg].sign(signing_input, key)  # type: ignore[no-any-return]


def compact(header: Any, payload: Any, key: Key | None = None, alg: str | None = None) -> str:
    """A JWS compact string; signed with ``key`` under ``alg`` (default: the header's)."""
    h, p = segment(header), segment(payload)
    sig = b""
    if key is not None:
        sig = signature(key, alg or header["alg"], f"{h}.{p}".encode())
    return f"{h}.{p}.{b64(sig)}"


def claims(issuer: str, audience: str = "clearance", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"iss": issuer, "aud": audience, "sub": "alice", "iat": now, "nbf": now,
                            "exp": now + 300, "jti": os.urandom(8).hex(), "scope": "clearance:search",
                            "groups": ["finance"]}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not _DROP}


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


_DROP: Any = _Drop()
DROP: Any = _DROP  # pass as a claim value to leave the claim out


def mint(key: Key, payload: dict[str, Any], *, alg: str = "RS256", typ: Any = "at+jwt",
         kid: Any = None, **header: Any) -> str:
    """A correctly signed token; header fields beyond alg/typ/kid come from ``header``.

    ``kid``: None for the key's own kid, ``DROP`` for none; ``typ``: None for none.
    """
    h: dict[str, Any] = {"alg": alg}
    if typ is not None:
        h["typ"] = typ
    kid = kid if kid is not None else key.kid
    if kid is not None and kid is not _DROP:
        h["kid"] = kid
    h.update(header)
    return compact(h, payload, key, alg)


def rsa_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)


def ec_key(kid: str, crv: str = "P-256") -> ECKey:
    return ECKey.generate_key(crv, parameters={"kid": kid}, private=True)


def jwks(*keys: Key, **params: Any) -> dict[str, Any]:
    return {"keys": [{**k.as_dict(private=False), **params} for k in keys]}


# ---------------------------------------------------------------------------------- JWKS server

class JwksServer:
    """Discovery + JWKS on ``http://127.0.0.1:<port>``; the issuer is that base URL."""

    def __init__(self, keys: dict[str, Any] | None = None, *, cache_control: str | None = "max-age=300") -> None:
        self.jwks: dict[str, Any] = keys or {"keys": []}
        self.headers: dict[str, str] = {"Cache-Control": cache_control} if cache_control else {}
        self.status = 200
        self.delay_s = 0.0
        self.body: bytes | None = None  # overrides the JWKS body when set
        self.discovery_issuer: str | None = None  # overrides the issuer named by discovery
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with outer._lock:
                    outer.hits[self.path] += 1
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                if outer.status != 200:
                    self.send_response(outer.status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                headers: dict[str, str] = {}
                if self.path == "/.well-known/openid-configuration":
                    body = json.dumps({"issuer": outer.discovery_issuer or outer.issuer,
                                       "jwks_uri": outer.issuer + "/jwks"}).encode()
                elif self.path == "/jwks":
                    body = outer.body if outer.body is not None else json.dumps(outer.jwks).encode()
                    headers = dict(outer.headers)
                else:
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.issuer = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def jwks_fetches(self) -> int:
        return self.hits["/jwks"]

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# ---------------------------------------------------------------------------------- oidc-provider

class NodeUnavailable(RuntimeError):
    pass


def ensure_node_modules() -> None:
    """``npm ci`` once when testkit/oidc/node_modules lacks oidc-provider; node/npm missing: raise."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise NodeUnavailable("node and npm are needed for the oidc-provider tests (not on PATH)")
    if (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    proc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=OIDC_DIR, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"npm ci in {OIDC_DIR} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


class OidcProvider:
    """``node provider.mjs`` on a free loopback port, until ``stop``."""

    RESOURCE = "https://clearance.test/api"

    def __init__(self, workdir: Path, clients: list[dict[str, Any]], *, audience: str = "clearance",
                 scopes: tuple[str, ...] = ("clearance:search", "clearance:ingest", "clearance:admin"),
                 users: dict[str, dict[str, list[str]]] | None = None) -> None:
        """``users``: login name -> ``{"groups": [...], "roles": [...]}`` for clients signing users
        in with the authorization code flow (a client with ``redirect_uris``; provider.mjs)."""
        self.workdir = workdir
        self.clients = {c["client_id"]: c for c in clients}
        self.admin_secret = os.urandom(16).hex()
        self.config = {"port": 0, "resource": self.RESOURCE, "audience": audience, "scopes": list(scopes),
                       "admin_secret": self.admin_secret, "clients": clients, "users": users or {}}
        self.issuer = ""
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()

    def start(self, timeout_s: float = 30.0) -> OidcProvider:
        ensure_node_modules()
        cfg = self.workdir / "provider.json"
        cfg.write_text(json.dumps(self.config), "utf-8")
        self.stderr_path = self.workdir / "provider.stderr"
        stderr = self.stderr_path.open("w")
        self._proc = subprocess.Popen(["node", str(OIDC_DIR / "provider.mjs"), str(cfg)], cwd=OIDC_DIR,
                                      stdout=subprocess.PIPE, stderr=stderr, text=True)
        stderr.close()
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not self.issuer:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"oidc-provider did not start: {self.stderr_path.read_text()[-2000:]}")
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line.startswith("{") and '"issuer"' in line:
                self.issuer = json.loads(line)["issuer"]
        while True:
            try:
                if httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("oidc-provider did not serve discovery in time")
            time.sleep(0.1)

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line.strip())

    def token(self, client_id: str, scope: str) -> httpx.Response:
        """The provider's token endpoint, client_credentials grant, as a client would call it."""
        c = self.clients[client_id]
        return httpx.post(f"{self.issuer}/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": c["client_secret"],
            "scope": scope})

    def access_token(self, client_id: str, scope: str) -> str:
        resp = self.token(client_id, scope)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["access_token"])

    def rotate(self) -> dict[str, Any]:
        resp = httpx.post(f"{self.issuer}/admin/rotate", headers={"x-admin-secret": self.admin_secret}, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
