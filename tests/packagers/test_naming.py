import pytest
from hypothesis import given, strategies as st

from packagers.errors import ErrorCode, PackagerError
from packagers.naming import TrackSpec


@pytest.mark.parametrize("text,spec", [
    ("", TrackSpec()), ("-v1-a1", TrackSpec(None, 1, 1)), ("-f2-v1", TrackSpec(2, 1, None)), ("-a3", TrackSpec(None, None, 3)),
])
def test_round_trip(text, spec):
    assert TrackSpec.parse(text) == spec
    assert spec.suffix() == text


@pytest.mark.parametrize("text", ["-v0", "-a1-v1", "-v1-v2", "-x1", "-v", "v1", "-v1-", "-v1234", "-f1a1"])
def test_rejects_malformed(text):
    with pytest.raises(PackagerError) as e:
        TrackSpec.parse(text)
    assert e.value.code is ErrorCode.BAD_REQUEST


@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_bad_request(text):
    try:
        spec = TrackSpec.parse(text)
    except PackagerError as e:
        assert e.code is ErrorCode.BAD_REQUEST
    else:
        assert TrackSpec.parse(spec.suffix()) == spec
