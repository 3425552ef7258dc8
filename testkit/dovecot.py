"""A private Dovecot IMAP server for tests: its own config, ports, users and mail, all under one
temporary folder; the system's Dovecot config and default ports are never touched.

What it runs: Dovecot from Debian's ``dovecot-imapd`` (``/usr/sbin/dovecot``) on 127.0.0.1 with
ephemeral ports, users from a ``passwd-file`` (re-read by Dovecot when it changes, so tests can
add users while it runs), Maildir storage, and the ``acl`` plugin with per-mailbox ``vfile`` ACLs
and a ``shared/<user>/`` namespace, so one user can share a folder with another (SETACL) and the
other sees it. A master user (``ADMIN``) may log in as any user through SASL PLAIN with an
authorization identity. Optionally an implicit-TLS listener with a self-signed certificate for
127.0.0.1 (``tls=True``; its PEM is ``cert_file``, for the client's trust store).

Running as root, Dovecot's internal processes run as the package's ``dovecot``/``dovenull`` users
and mail is stored as the ``mail`` user (Debian's uid 8); as anyone else, everything runs as the
caller. Readiness is checked by reading the IMAP greeting, not by sleeping.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DOVECOT = os.environ.get("CLEARANCE_TEST_DOVECOT", "/usr/sbin/dovecot")
ADMIN = "clearance-admin"  # the master user's login name


def available() -> bool:
    """Whether a Dovecot binary is installed (tests skip with a reason otherwise)."""
    return Path(DOVECOT).is_file() and os.access(DOVECOT, os.X_OK)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DovecotServer:
    """One running Dovecot instance. ``start()`` returns once it answers; ``stop()`` removes it all."""

    def __init__(self, *, users: tuple[str, ...] = ("alice", "bob", "carol"), spare_users: int = 24, tls: bool = False) -> None:
        self.tls = tls
        self.root = Path(tempfile.mkdtemp(prefix="clearance-dovecot-"))
        self.host = "127.0.0.1"
        self.port = 0
        self.tls_port = 0
        self.cert_file: Path | None = None
        self.admin_password = secrets.token_urlsafe(16)
        self._passwords: dict[str, str] = {u: secrets.token_urlsafe(12) for u in users}
        # Dovecot re-reads the passwd-file when it changes, but only on a later second and after a
        # failed login's delay: users for fresh mailboxes are made up front and handed out.
        self._spare = [f"mailbox{i}" for i in range(1, spare_users + 1)]
        self._passwords.update({u: secrets.token_urlsafe(12) for u in self._spare})
        self._proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            mail = pwd.getpwnam("mail")
            self.mail_uid, self.mail_gid = mail.pw_uid, mail.pw_gid
            self.internal_user, self.login_user = "dovecot", "dovenull"
        else:
            me = pwd.getpwuid(os.geteuid())
            self.mail_uid, self.mail_gid = me.pw_uid, me.pw_gid
            self.internal_user = self.login_user = me.pw_name

    # -- paths ----------------------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def log_file(self) -> Path:
        return self.root / "dovecot.log"

    @property
    def mail_root(self) -> Path:
        return self.root / "mail"

    # -- users ----------------------------------------------------------------------------------
    def claim_user(self) -> str:
        """A mailbox user nobody has used yet (a fresh, empty mailbox)."""
        if not self._spare:
            raise RuntimeError("no spare mailbox users left: start the server with more spare_users")
        return self._spare.pop(0)

    def add_user(self, name: str, password: str | None = None) -> str:
        """Create (or keep) a mailbox user; returns its password. Before ``start`` it is there at
        once; afterwards Dovecot sees it only after it re-reads the file (a second or more)."""
        if not name or any(c in name for c in ":\n/ ") or name == ADMIN:
            raise ValueError(f"unusable test user name {name!r}")
        pw = self._passwords.setdefault(name, password or secrets.token_urlsafe(12))
        self._write_passwd()
        return pw

    def password(self, name: str) -> str:
        return self._passwords[name] if name != ADMIN else self.admin_password

    def _write_passwd(self) -> None:
        lines = [f"{u}:{{PLAIN}}{pw}:{self.mail_uid}:{self.mail_gid}::{self.mail_root / u}::\n"
                 for u, pw in sorted(self._passwords.items())]
        self._write_private(self.root / "users", "".join(lines))

    def _write_private(self, path: Path, text: str) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        if os.geteuid() == 0:
            internal = pwd.getpwnam(self.internal_user)
            os.chown(tmp, internal.pw_uid, internal.pw_gid)
        tmp.replace(path)  # atomic: Dovecot never reads half a file
        # passwd-file reloads on a changed mtime; make sure a rewrite within the same second shows
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, time.time_ns() + 1_000_000_000))

    # -- life cycle -----------------------------------------------------------------------------
    def start(self, timeout_s: float = 15.0) -> DovecotServer:
        os.chmod(self.root, 0o755)  # the internal and mail users traverse it
        self.mail_root.mkdir()
        os.chown(self.mail_root, self.mail_uid, self.mail_gid)
        (self.root / "run").mkdir()
        (self.root / "state").mkdir()
        self._write_private(self.root / "masters", f"{ADMIN}:{{PLAIN}}{self.admin_password}\n")
        self._write_passwd()
        self.port = _free_port()
        if self.tls:
            self.tls_port = _free_port()
            self._make_cert()
        self.conf.write_text(self._config())
        self.log_file.touch()
        self._proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"dovecot exited with {self._proc.returncode}: {err.strip()}\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                    greeting = s.recv(512)
                if greeting.startswith(b"* OK"):
                    return
                last = greeting.decode(errors="replace")
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not answer within {timeout_s}s ({last})\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # its own session: the master and its children
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- config ---------------------------------------------------------------------------------
    def _make_cert(self) -> None:
        key, cert = self.root / "key.pem", self.root / "cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
        os.chmod(key, 0o600)
        self.cert_file = cert

    def _config(self) -> str:
        r = self.root
        mail = self.mail_root
        ssl = (f"ssl = yes\nssl_cert = <{r / 'cert.pem'}\nssl_key = <{r / 'key.pem'}\n" if self.tls else "ssl = no\n")
        imaps = (f"  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {self.tls_port}\n    ssl = yes\n  }}\n"
                 if self.tls else "  inet_listener imaps {\n    port = 0\n  }\n")
        return f"""# generated by testkit/dovecot.py: a private test instance
instance_name = clearance-test-{r.name}
base_dir = {r / 'run'}
state_dir = {r / 'state'}
log_path = {self.log_file}
info_log_path = {self.log_file}
protocols = imap
listen = 127.0.0.1
shutdown_clients = yes
default_internal_user = {self.internal_user}
default_login_user = {self.login_user}
first_valid_uid = {self.mail_uid}
first_valid_gid = {self.mail_gid}
mail_uid = {self.mail_uid}
mail_gid = {self.mail_gid}
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0  # tests log in with a wrong password on purpose
auth_master_user_separator = *
passdb {{
  driver = passwd-file
  master = yes
  pass = yes
  args = scheme=PLAIN {r / 'masters'}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {r / 'users'}
}}
userdb {{
  driver = passwd-file
  args = {r / 'users'}
}}
mail_location = maildir:{mail}/%u/Maildir
mail_plugins = acl
namespace inbox {{
  inbox = yes
  separator = /
  prefix =
}}
namespace shared {{
  type = shared
  separator = /
  prefix = shared/%%u/
  location = maildir:{mail}/%%u/Maildir:INDEXPVT={mail}/%u/shared/%%u
  subscriptions = no
  list = children
}}
plugin {{
  acl = vfile
  # a master user reads as the user it logs in as (otherwise ACLs would check the master's name)
  acl_user = %u
  # SETACL for "anyone"/"authenticated" is refused unless allowed; the tests need to set them
  acl_anyone = allow
  acl_shared_dict = file:{mail}/shared-mailboxes.db
}}
protocol imap {{
  mail_plugins = $mail_plugins imap_acl
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
{imaps}}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0600
  }}
}}
service anvil {{
  chroot =
}}
"""
