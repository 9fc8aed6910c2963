"""Where bounces are read from: a Maildir, an IMAP folder, or files named on the command line.

A source lists its mail, gives each one's bytes, and moves a handled one into a folder: never a
delete. The move comes after the database has recorded what the mail did, so a crash between
the two leaves the mail where it was and the next scan finds it again; the bounce's identity
(its Message-ID and recipient, under a UNIQUE key) makes that second reading change nothing.
"""

from __future__ import annotations

import contextlib
import mailbox
import os
import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

PROCESSED = "Processed"
UNRECOGNISED = "Unrecognised"


@dataclass(frozen=True)
class Mail:
    ref: str  # where it is, for the source's move and for people reading a listing
    data: bytes


class Source(Protocol):
    name: str  # maildir | imap | file

    def mails(self) -> Iterator[Mail]: ...

    def move(self, mail: Mail, folder: str) -> str:
        """Move a handled mail into `folder`; returns where it now is."""
        ...

    def close(self) -> None: ...


class FileSource:
    """Files named on the command line: read, never moved (they are the operator's)."""

    name = "file"

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def mails(self) -> Iterator[Mail]:
        for path in self.paths:
            yield Mail(str(path), path.read_bytes())

    def move(self, mail: Mail, folder: str) -> str:
        return mail.ref

    def close(self) -> None:
        return None


class MaildirSource:
    """The Maildir the institution's MTA delivers the bounce address to.

    Mail in `new/` and `cur/` is read; a handled one is renamed into a Maildir++ subfolder
    (`.Processed/cur/`, `.Unrecognised/cur/`), one atomic rename on the same file system.
    Only regular files are read: a symbolic link (to /etc/passwd, say), a FIFO or a folder is
    skipped and left where it is; and at most `parse.MAX_BYTES` + 1 bytes of one (more than
    that is unrecognised, kept whole).
    """

    name = "maildir"

    def __init__(self, root: Path) -> None:
        if not (root / "cur").is_dir() or not (root / "new").is_dir():
            raise FileNotFoundError(f"{root} is not a Maildir (no cur/ and new/ folders)")
        self.root = root
        self._box = mailbox.Maildir(root, factory=None, create=False)

    def mails(self) -> Iterator[Mail]:
        for sub in ("new", "cur"):
            for entry in sorted(os.scandir(self.root / sub), key=lambda e: e.name):
                if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                    continue
                data = _read_regular(entry.path)
                if data is not None:
                    yield Mail(f"{sub}/{entry.name}", data)

    def move(self, mail: Mail, folder: str) -> str:
        if folder not in self._box.list_folders():
            self._box.add_folder(folder)  # .Folder with tmp/, new/, cur/ (mode 0700)
        name = mail.ref.split("/", 1)[1]
        if ":2," not in name:
            name += ":2,S"  # seen: a mail client shows it as read
        target = f".{folder}/cur/{name}"
        os.rename(self.root / mail.ref, self.root / target)
        return target

    def close(self) -> None:
        return None


def _read_regular(path: str) -> bytes | None:
    """A regular file's first MAX_BYTES + 1 bytes; None if it is not one by the time it is
    opened (O_NOFOLLOW: a file swapped for a link after the listing is not followed)."""
    from pshnotify.bounces.parse import MAX_BYTES

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None  # a link (ELOOP), or gone since the listing
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read(MAX_BYTES + 1)


@dataclass(frozen=True)
class ImapAddress:
    host: str
    port: int
    tls: bool
    username: str
    folder: str


def parse_imap_url(url: str) -> ImapAddress:
    """`imaps://user@host[:port]/FOLDER` (TLS, port 993) or `imap://...` (plain, port 143:
    only for a server on the same host). Raises ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imaps"):
        raise ValueError("must start with imaps:// (or imap:// for a server on this host)")
    if not parts.hostname or not parts.username:
        raise ValueError("must name a user and a host: imaps://user@host/INBOX")
    if parts.password:
        raise ValueError("must not carry a password: set PSHNOTIFY_BOUNCE_IMAP_PASSWORD")
    tls = parts.scheme == "imaps"
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return ImapAddress(
        parts.hostname, parts.port or (993 if tls else 143), tls, unquote(parts.username), folder
    )


class ImapSource:
    """An IMAP folder, read by UID (stable across sessions, unlike sequence numbers).

    A handled mail is moved with MOVE (RFC 6851) where the server has it, else copied and then
    flagged and expunged by UID (UIDPLUS): the copy exists before the original goes.
    """

    name = "imap"

    def __init__(
        self, address: ImapAddress, password: str, ca_file: Path | None = None, timeout: float = 30
    ) -> None:
        from imapclient import IMAPClient

        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self.address = address
        self.client = IMAPClient(
            address.host,
            port=address.port,
            ssl=address.tls,
            ssl_context=context if address.tls else None,
            timeout=timeout,
        )
        try:
            self.client.login(address.username, password)
            self.client.select_folder(address.folder)
        except Exception:
            self.close()
            raise
        self._folders: set[str] = set()

    def mails(self) -> Iterator[Mail]:
        uids = sorted(self.client.search(["NOT", "DELETED"]))
        for start in range(0, len(uids), 50):
            part = uids[start : start + 50]
            fetched = self.client.fetch(part, ["BODY.PEEK[]"])
            for uid in part:
                data = fetched.get(uid, {}).get(b"BODY[]")
                if isinstance(data, bytes):
                    yield Mail(str(uid), data)

    def move(self, mail: Mail, folder: str) -> str:
        if folder not in self._folders:
            if not self.client.folder_exists(folder):
                self.client.create_folder(folder)
            self._folders.add(folder)
        uid = int(mail.ref)
        if self.client.has_capability("MOVE"):
            self.client.move([uid], folder)
        else:
            self.client.copy([uid], folder)
            self.client.add_flags([uid], [b"\\Deleted"])
            self.client.uid_expunge([uid])
        return f"{folder} (was {self.address.folder} UID {uid})"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.logout()
