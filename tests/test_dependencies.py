"""pyproject.toml says what the code needs, no more and no less.

The runtime ``dependencies`` are exactly the third-party distributions that the runtime packages import; what only
``gateway demo``/``gateway bench`` need to make sample media (fixtures/) is the ``demo`` extra; what only tests/ need is
the ``test`` extra. Imports are read with ``ast`` (every ``import`` in a module, also the lazy ones inside functions),
and a module is mapped to the distribution that installed it with ``importlib.metadata.packages_distributions()``, so
``prometheus_client`` is found as ``prometheus-client`` without a hand-written table.
"""
from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("packagers", "gateway", "rtmp", "delivery_profiles")
# Test-extra entries that tests/ never import by name, and where they are used instead.
TEST_TOOLS = {
    "pytest-asyncio": "asyncio_mode in [tool.pytest.ini_options]",
    "pytest-timeout": "timeout in [tool.pytest.ini_options]",
    "import-linter": "the lint-imports command of tests/test_architecture.py",
}


def normalize(name: str) -> str:
    """PEP 503 name: ``Prometheus_Client`` and ``prometheus-client`` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    """Distribution names of PEP 508 requirement strings (``"av>=12"`` → ``av``)."""
    return {normalize(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", r).group(1)) for r in requirements}


@cache
def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def runtime_dependencies() -> set[str]:
    return requirement_names(project()["dependencies"])


def extra(name: str) -> set[str]:
    return requirement_names(project()["optional-dependencies"][name])


def first_party() -> set[str]:
    """The repository's own top-level packages (packagers, gateway, fixtures, tests, ...)."""
    return {p.parent.name for p in REPO.glob("*/__init__.py")}


def imported_modules(*folders: str) -> dict[str, set[str]]:
    """Top-level third-party module → the files under ``folders`` that import it (relative imports are our own)."""
    ours = first_party()
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            if "node_modules" in path.parts:  # the browser tests' npm packages (tests/e2e/browser) are not ours
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in ours:
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def distributions_of(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """Distribution → files importing it; a module that no installed distribution provides maps to ``?module``."""
    installed = importlib.metadata.packages_distributions()
    out: dict[str, set[str]] = {}
    for module, files in modules.items():
        for dist in installed.get(module) or [f"?{module}"]:
            out.setdefault(normalize(dist), set()).update(files)
    return out


def test_every_runtime_dependency_is_imported_by_runtime_code() -> None:
    used = distributions_of(imported_modules(*RUNTIME_PACKAGES))
    unused = sorted(runtime_dependencies() - used.keys())
    assert not unused, (f"{unused} in [project] dependencies but imported by none of {RUNTIME_PACKAGES}: move them to "
                        f"the extra that needs them (test, demo) or drop them")


def test_runtime_code_imports_only_listed_dependencies() -> None:
    used = distributions_of(imported_modules(*RUNTIME_PACKAGES))
    unlisted = {dist: sorted(files) for dist, files in used.items() if dist not in runtime_dependencies()}
    assert not unlisted, f"imported by runtime code but not in [project] dependencies: {unlisted}"


def test_fixtures_need_only_the_demo_extra() -> None:
    """`gateway demo` and `gateway bench` import fixtures/: the demo extra must be enough for them, and all used."""
    used = distributions_of(imported_modules("fixtures"))
    allowed = runtime_dependencies() | extra("demo")
    unlisted = {dist: sorted(files) for dist, files in used.items() if dist not in allowed}
    assert not unlisted, f"imported by fixtures/ but in neither dependencies nor the demo extra: {unlisted}"
    unused = sorted(extra("demo") - used.keys())
    assert not unused, f"{unused} in the demo extra but fixtures/ imports them not"


def test_tests_need_only_the_test_extra() -> None:
    """tests/ import fixtures/, so they need the demo extra's libraries too: the test extra lists them itself."""
    used = distributions_of(imported_modules("tests"))
    allowed = runtime_dependencies() | extra("test")
    unlisted = {dist: sorted(files)[:3] for dist, files in used.items() if dist not in allowed}
    assert not unlisted, f"imported by tests/ but in neither dependencies nor the test extra: {unlisted}"
    assert extra("demo") <= allowed, f"the test extra lacks {sorted(extra('demo') - allowed)}, which fixtures/ needs"
    unused = sorted(extra("test") - used.keys() - {normalize(t) for t in TEST_TOOLS})
    assert not unused, f"{unused} in the test extra but tests/ never import them (a tool? say so in TEST_TOOLS)"


def test_the_tools_of_the_test_extra_are_configured() -> None:
    """The entries of TEST_TOOLS are not imported by name: check that what they are kept for is still there."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    options = pyproject["tool"]["pytest"]["ini_options"]
    assert set(TEST_TOOLS) <= extra("test")
    assert "asyncio_mode" in options, "pytest-asyncio is listed for asyncio_mode, which is gone"
    assert "timeout" in options, "pytest-timeout is listed for the timeout option, which is gone"
    assert "importlinter" in pyproject["tool"] and "lint-imports" in (REPO / "tests/test_architecture.py").read_text()


# Imports every module of the runtime packages with the extras' modules made unimportable, as after `pip install -e .`
IMPORT_WITHOUT = """
import importlib, importlib.abc, pkgutil, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (an extra, not installed by pip install -e .)")
sys.meta_path.insert(0, Block())
for package in sys.argv[2:]:
    importlib.import_module(package)
    for info in pkgutil.walk_packages(sys.modules[package].__path__, package + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
"""


def test_runtime_modules_import_without_the_extras() -> None:
    """What AST cannot see (an import by a computed name): every runtime module imports with only the runtime
    dependencies, so `pip install -e .` serves."""
    extras_only = (extra("test") | extra("demo")) - runtime_dependencies()
    blocked = sorted(module for module, dists in importlib.metadata.packages_distributions().items()
                     if {normalize(d) for d in dists} & extras_only)
    run = subprocess.run([sys.executable, "-c", IMPORT_WITHOUT, ",".join(blocked), *RUNTIME_PACKAGES], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.parametrize("command", ["demo", "test"])
def test_the_readme_commands_install_the_extras_they_need(command: str) -> None:
    """The README's first-screen demo command installs the demo extra; its test command runs the install script,
    whose pip line installs the test and demo extras."""
    if command == "demo":
        readme = (REPO / "README.md").read_text()
        assert re.search(r"pip install -e '?\.\[demo\]'? && python3 -m gateway demo", readme), readme[:1500]
    else:
        script = (REPO / "scripts/install-test-deps.sh").read_text()
        assert re.search(r"pip install -e '\.\[test,demo\]'", script)
