"""Golden files: tests/golden/<scenario>/, rewritten by ``pytest --update-golden`` (review the diff, then commit)."""
from __future__ import annotations

from pathlib import Path

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def check_golden(name: str, rendered: dict[str, str], update: bool) -> None:
    """Compare ``rendered`` (file name → text) with tests/golden/<name>/, or rewrite that folder when updating."""
    folder = GOLDEN / name
    if update:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            if old.is_file():
                old.unlink()
        for file_name, text in rendered.items():
            (folder / file_name).write_text(text)
    expected = {p.name: p.read_text() for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}
    assert expected, f"no golden files in {folder}: run pytest with --update-golden"
    assert rendered == expected
