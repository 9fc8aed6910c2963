"""A local mail catcher (aiosmtpd) that stores each message as an .eml file.

For demos and first runs: point PSHNOTIFY_SMTP_HOST/PORT at it and open the files in any mail
client. It accepts everything and relays nothing.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class EmlWriter:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        self._lock = threading.Lock()
        # The messages hold people's names and addresses: readable by their owner only.
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self._lock:
            self.count += 1
            n = self.count
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{n:06d}.eml"
        fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(envelope.original_content or envelope.content)
        return "250 OK stored"


def start(directory: Path, host: str = "127.0.0.1", port: int = 8025) -> Controller:
    controller = Controller(EmlWriter(directory), hostname=host, port=port)
    controller.start()
    return controller


def serve(directory: Path, host: str, port: int) -> None:
    controller = start(directory, host, port)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
