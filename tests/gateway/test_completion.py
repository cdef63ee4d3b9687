"""`gateway completion bash`: the generated script, sourced by a real bash, completes subcommands and options at
every level of the CLI (the table is walked from the parser, so a new command or flag is completed without edits)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from gateway.runtime.cli import _parser
from gateway.runtime.completion import table


def complete(script: str, *words: str) -> list[str]:
    """COMPREPLY for the command line ``gateway <words>`` with the cursor on the last word."""
    line = " ".join(f"'{w}'" for w in ("gateway", *words))
    program = f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words)}; _gateway_complete; echo "${{COMPREPLY[@]}}"'
    done = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_commands_subcommands_and_options():
    script = subprocess.run([sys.executable, "-m", "gateway", "completion", "bash"], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    assert complete(script, "par") == ["partners"]
    assert complete(script, "partners", "") == table(_parser())["gateway partners"]
    assert complete(script, "partners", "re") == ["remove"]
    assert complete(script, "partners", "update", "--n") == ["--name", "--new-secret"]
    assert complete(script, "entries", "update", "0_abcd1234", "--add-") == ["--add-flavor", "--add-caption"]
    assert complete(script, "serve", "--fallback") == ["--fallback-store"]
    assert complete(script, "nginx-config", "--sn") == ["--snippet"]
    assert complete(script, "no-such-command", "--st") == []  # nothing made up


def test_every_command_path_is_in_the_table():
    paths = table(_parser())
    assert {"gateway", "gateway serve", "gateway partners update", "gateway entries remove", "gateway check",
            "gateway completion"} <= set(paths)
    assert "--log-level" in paths["gateway serve"] and "--check" in paths["gateway serve"]
