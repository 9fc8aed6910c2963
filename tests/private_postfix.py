"""A real Postfix relay for the tests: Debian's package, started with a configuration, queue
and log of its own in a temporary folder, listening on a free loopback port and relaying
everything to a given SMTP server (the tests' aiosmtpd sink). Debian's own instance and service
are never touched. `scripts/test-deps.sh` installs postfix when it is missing; Postfix's master
runs as root (it drops to the postfix user for its daemons), so the tests that use it need
root.

Loopback is exempt from anvil's limits unless `smtpd_client_event_limit_exceptions` is empty
(its default names $mynetworks), so it is set empty here. `maillog_file` must sit under one of
`maillog_file_prefixes`, else `postfix start` fails without a word: both name the folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"

# Every service a relaying instance uses, none of them chrooted (a chroot needs copies of
# /etc files inside the queue folder).
_MASTER_CF = """\
{listen}  inet  n  -  n  -  -  smtpd
pickup     unix  n  -  n  60    1  pickup
cleanup    unix  n  -  n  -     0  cleanup
qmgr       unix  n  -  n  300   1  qmgr
rewrite    unix  -  -  n  -     -  trivial-rewrite
bounce     unix  -  -  n  -     0  bounce
defer      unix  -  -  n  -     0  bounce
trace      unix  -  -  n  -     0  bounce
verify     unix  -  -  n  -     1  verify
flush      unix  n  -  n  1000? 0  flush
proxymap   unix  -  -  n  -     -  proxymap
proxywrite unix  -  -  n  -     1  proxymap
smtp       unix  -  -  n  -     -  smtp
relay      unix  -  -  n  -     -  smtp
showq      unix  n  -  n  -     -  showq
error      unix  -  -  n  -     -  error
retry      unix  -  -  n  -     -  error
discard    unix  -  -  n  -     -  discard
anvil      unix  -  -  n  -     1  anvil
scache     unix  -  -  n  -     1  scache
postlog    unix-dgram n - n -   1  postlogd
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    if not os.access(POSTFIX, os.X_OK):
        return f"{POSTFIX} is missing: apt-get install postfix (scripts/test-deps.sh does it)"
    if os.geteuid() != 0:
        return "Postfix's master must start as root"
    return None


@dataclass
class Postfix:
    root: Path
    port: int

    @property
    def config(self) -> Path:
        return self.root / "etc"

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        subprocess.run(
            [POSTFIX, "-c", str(self.config), "stop"], check=False, capture_output=True, timeout=60
        )
        pid_file = self.root / "queue" / "pid" / "master.pid"
        for _ in range(200):  # until the master has gone (it removes nothing we wait on else)
            if not _master_running(pid_file):
                break
            time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)


def _master_running(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start_postfix(relay_to: tuple[str, int], settings: dict[str, str]) -> Postfix:
    """Postfix on 127.0.0.1:<free port>, relaying for loopback clients to `relay_to`, with
    `settings` added to its main.cf (e.g. the anvil limits under test)."""
    problem = available()
    if problem:
        raise RuntimeError(problem)
    root = Path(tempfile.mkdtemp(prefix="pshnotify-postfix-"))
    root.chmod(0o755)  # the postfix user reaches its queue and log here
    port = _free_port()
    etc, queue, data = root / "etc", root / "queue", root / "data"
    for folder in (etc, queue, data):
        folder.mkdir()
    shutil.chown(data, "postfix")
    host, sink_port = relay_to
    main = {
        "compatibility_level": "3.6",
        "queue_directory": str(queue),
        "data_directory": str(data),
        "command_directory": "/usr/sbin",
        "daemon_directory": "/usr/lib/postfix/sbin",
        "meta_directory": "/etc/postfix",
        "shlib_directory": "/usr/lib/postfix",
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "relay.test.invalid",
        "mydomain": "test.invalid",
        "myorigin": "$myhostname",
        "mydestination": "",
        "local_recipient_maps": "",
        "alias_maps": "",
        "alias_database": "",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "smtpd_relay_restrictions": "permit_mynetworks, reject",
        "relayhost": f"[{host}]:{sink_port}",
        "smtp_tls_security_level": "none",
        "smtpd_tls_security_level": "none",
        "smtp_dns_support_level": "disabled",
        "disable_dns_lookups": "yes",
        "smtpd_client_event_limit_exceptions": "",
        "maillog_file_prefixes": str(root),
        "maillog_file": str(root / "maillog"),
        "biff": "no",
        **settings,
    }
    (etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
    (etc / "master.cf").write_text(_MASTER_CF.format(listen=f"127.0.0.1:{port}"))
    server = Postfix(root, port)
    try:
        subprocess.run(
            [POSTFIX, "-c", str(etc), "check"], check=True, capture_output=True, timeout=60
        )
        started = subprocess.run(
            [POSTFIX, "-c", str(etc), "start"], capture_output=True, text=True, timeout=60
        )
        if started.returncode != 0:
            raise RuntimeError(f"postfix start failed: {started.stderr}{server.log()}")
        for _ in range(200):  # until smtpd answers
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return server
            time.sleep(0.05)
        raise RuntimeError(f"postfix did not listen on {port}: {server.log()}")
    except BaseException:
        server.stop()
        raise
