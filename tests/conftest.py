import pytest


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/* expected files")
    parser.addoption("--fuzz-corpus", type=int, default=0, metavar="N",
                     help="hostile-media fuzz suite on N mutated files (default 0: the CI size, tests/hostile)")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")
