"""What a test needs from the machine: a CLI (ffmpeg, ffprobe), nginx and its modules, an ffmpeg codec, descriptors.

When it is missing, the test is skipped on a developer's machine, but fails in CI (``CI`` set, as .ci/run does):
CI installs everything (scripts/install-test-deps.sh), so a skip there would be a test that silently never ran.
"""
from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

INSTALL_HINT = "CI installs it: scripts/install-test-deps.sh, see .ci/run"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> NoReturn:
    """Skip the calling test or fixture for something this machine lacks; in CI, fail it with the same reason."""
    if in_ci():
        pytest.fail(f"{reason} ({INSTALL_HINT})", pytrace=False)
    pytest.skip(reason)


def require_executable(name: str) -> str:
    """The path of CLI ``name``; when it is not on PATH, ``missing``."""
    path = shutil.which(name)
    if path is None:
        missing(f"the {name} CLI is not installed")
    return path


def needs_executable(name: str) -> pytest.MarkDecorator:
    """Mark for tests (or ``pytestmark`` for modules) that run CLI ``name``: skipped when it is not on PATH, except in
    CI, where they run and fail on their first use of it."""
    return pytest.mark.skipif(shutil.which(name) is None and not in_ci(), reason=f"the {name} CLI is not installed")
