"""The package seams of ../shared/ARCHITECTURE.md, enforced by import-linter (contracts in pyproject.toml)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_kept():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports not installed: pip install -e '.[test]'")
    r = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_packagers_never_import_server_modules_at_runtime():
    code = "import sys, packagers.mp4, packagers.ts, packagers.hls, packagers.media_set; " \
           "bad = [m for m in ('aiohttp', 'asyncio', 'gateway', 'rtmp') if m in sys.modules]; print(bad); assert not bad"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
