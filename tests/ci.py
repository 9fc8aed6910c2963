"""The one rule for what a test does when something it needs is missing: in CI it fails (a
suite must not pass because a server was absent), elsewhere it is skipped with the reason.

CI is on when the `CI` variable holds one of the usual true values (`true`, `1`, `yes`, `on`,
any case), as GitHub Actions, GitLab and most runners set it."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

TRUE = frozenset({"true", "1", "yes", "on"})


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in TRUE


def missing(reason: str) -> NoReturn:
    """Skip the test for `reason`, or fail it in CI."""
    if in_ci():
        pytest.fail(f"required in CI and missing: {reason}", pytrace=False)
    pytest.skip(reason)
