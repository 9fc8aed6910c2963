"""Command-line checks shared by the benchmark scripts (each says bad input alike, status 2)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def backends(parser: argparse.ArgumentParser, text: str, known: Sequence[str]) -> list[str]:
    """The comma-separated backends of `--backends`, or the parser's usage error (status 2)."""
    chosen = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in known]
    if unknown or not chosen:
        parser.error(
            f"--backends: unknown {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(known)}"
        )
    return chosen
