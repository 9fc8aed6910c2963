"""A real IMAP server for the tests: Debian's Dovecot, started with a configuration of its own
in a temporary folder, on a free loopback port, plaintext login allowed (loopback only), one
passwd-file user. `.ci/run` installs dovecot-imapd when it is missing."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DOVECOT = "/usr/sbin/dovecot"
USER, PASSWORD = "bounces", "imap-test-password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dovecot:
    root: Path
    port: int
    tls_port: int | None = None  # implicit TLS (imaps), when started with a certificate

    @property
    def url(self) -> str:
        return f"imap://{USER}@127.0.0.1:{self.port}/INBOX"

    def stop(self) -> None:
        subprocess.run(
            [DOVECOT, "-c", str(self.root / "dovecot.conf"), "stop"], check=False, timeout=30
        )
        for _ in range(100):  # wait until the port is free again
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    break
            time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)


def start_dovecot(cert_pem: bytes | None = None, key_pem: bytes | None = None) -> Dovecot:
    """Plain IMAP on loopback; with a certificate and key (PEM), also IMAPS on another port."""
    if not os.access(DOVECOT, os.X_OK):
        raise RuntimeError(f"{DOVECOT} is missing: apt-get install dovecot-imapd")
    root = Path(tempfile.mkdtemp(prefix="pshnotify-dovecot-"))
    root.chmod(0o755)  # dovecot's own users must reach their sockets here
    port = _free_port()
    tls_port = _free_port() if cert_pem and key_pem else None
    ssl_conf = "ssl = no"
    if tls_port is not None:
        (root / "cert.pem").write_bytes(cert_pem or b"")
        (root / "key.pem").write_bytes(key_pem or b"")
        (root / "key.pem").chmod(0o600)
        ssl_conf = f"ssl = yes\nssl_cert = <{root}/cert.pem\nssl_key = <{root}/key.pem"
    if os.geteuid() == 0:
        internal, login = "dovecot", "dovenull"
        mail_user, mail_group = "nobody", grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    else:  # one unprivileged user runs everything
        internal = login = mail_user = pwd.getpwuid(os.geteuid()).pw_name
        mail_group = grp.getgrgid(os.getegid()).gr_name
    for sub in ("mail", "home"):
        (root / sub).mkdir()
        shutil.chown(root / sub, mail_user, mail_group)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    (root / "dovecot.conf").write_text(
        f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl_conf}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name}
default_login_user = {login}
mail_location = maildir:{root}/mail/%u
first_valid_uid = 1
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port or 0}
  }}
}}
service stats {{
  inet_listener http {{
    port = 0
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={root}/home/%u
}}
"""
    )
    subprocess.run([DOVECOT, "-c", str(root / "dovecot.conf")], check=True, timeout=30)
    server = Dovecot(root, port, tls_port)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", tls_port or port)) == 0:
                return server
        time.sleep(0.05)
    log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
    server.stop()
    raise RuntimeError(f"dovecot did not start on port {port}: {log[-2000:]}")
