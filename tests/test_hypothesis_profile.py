"""Property tests carry no wall-clock assertions: the profile tests/conftest.py loads turns Hypothesis' timing checks
off for every test (a fresh clone on a loaded 2-core machine failed `too_slow` once on correct code)."""
from hypothesis import HealthCheck, settings


def test_the_gateway_profile_is_loaded():
    assert settings.default.deadline is None
    assert HealthCheck.too_slow in settings.default.suppress_health_check

