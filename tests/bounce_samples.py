"""Real bounce messages: the 117 samples in flufl.bounce's source distribution (tests/data/).

Fetched once with pip from PyPI into .pytest_cache (not copied into this repository) and read
from there by every later run. Without PyPI the tests that need them fail, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

VERSION = "6.0.0"  # the expectations below were read from this release's samples
ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".pytest_cache" / f"flufl-bounce-{VERSION}-samples"


def samples_dir() -> Path:
    if (CACHE / "dsn_01.txt").is_file():
        return CACHE
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE.parent) as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--no-binary", ":all:", f"flufl.bounce=={VERSION}", "-d", tmp,
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            pytest.fail(
                f"could not fetch flufl.bounce {VERSION}'s source from PyPI for its bounce "
                f"samples (`{' '.join(cmd[2:])}`): {done.stderr.strip()[-500:]}",
                pytrace=False,
            )
        with tarfile.open(archives[0]) as tar:
            tar.extractall(tmp, filter="data")
        data = next(Path(tmp).glob("*/tests/data"))
        staged = Path(tmp) / "samples"
        shutil.copytree(data, staged)
        try:
            os.rename(staged, CACHE)  # atomic: another worker may have won the race
        except OSError:
            if not (CACHE / "dsn_01.txt").is_file():
                raise
    return CACHE


def sample(name: str) -> bytes:
    return (samples_dir() / name).read_bytes()
