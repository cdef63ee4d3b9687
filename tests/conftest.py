import pytest
from hypothesis import HealthCheck, settings

# Hypothesis' timing checks (an example's deadline, slow input generation) are wall-clock assertions: on a loaded
# 2-core CI machine they fail tests whose code is right. Every property test runs under this profile; the number of
# examples stays each test's own.
settings.register_profile("gateway", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gateway")


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/* expected files")
    parser.addoption("--fuzz-corpus", type=int, default=0, metavar="N",
                     help="hostile-media fuzz suite on N mutated files (default 0: the CI size, tests/hostile)")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")
