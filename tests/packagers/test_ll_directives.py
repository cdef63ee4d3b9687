"""LL-HLS delivery directives, pure (packagers.hls.ll_directives): the playlist tail the gateway's poller parses, the
query directives, and the blocking / 400 / preload-hint decisions of draft-pantos-hls-rfc8216bis §6.2.5-6.

Playlists come from the live packager's own writer (packagers.hls.live.build_live_media_playlist), so the parser is
checked against what is really served."""
from __future__ import annotations

import pytest

from packagers.errors import ErrorCode, PackagerError
from packagers.hls.live import LivePart, LiveSegment, LowLatency, build_live_media_playlist, skippable
from packagers.hls.ll_directives import (PartName, advance_part_limit, check_ahead, parse_directives,
                                         parse_part_name, parse_tail, part_hinted, part_settled, reload_ready)

TID = "k3x9q"


def parts(n: int, count: int) -> tuple[LivePart, ...]:
    return tuple(LivePart(f"{TID}-{n}.{k}.m4s", 0.5, k == 0) for k in range(count))


def playlist(last: int, trailing: int, *, window: int = 8, per_segment: int = 4, ended: bool = False,
             skip: bool = False, part_target: float = 0.5) -> str:
    """Segments last-window+1..last complete (per_segment parts of 0.5 s each), then ``trailing`` parts of the next
    one and the hint for the part after them, as rtmp.live.writer renders them."""
    first = max(1, last - window + 1)
    segments = [LiveSegment(n, f"{TID}-{n}.m4s", per_segment * 500, 1000, 1_700_000_000.0 + n, False,
                            parts(n, per_segment), f"{TID}-0-init.mp4") for n in range(first, last + 1)]
    ll = LowLatency(part_target, parts(last + 1, trailing), f"{TID}-{last + 1}.{trailing}.m4s")
    skipped = skippable(segments, 2) if skip else 0
    return build_live_media_playlist(segments, low_latency=ll, ended=ended, skip=skipped)


def test_tail_of_a_live_playlist():
    tail = parse_tail(playlist(10, 2))
    assert (tail.target_duration, tail.part_target, tail.can_block, tail.can_skip, tail.ended) == (2, 0.5, True,
                                                                                                    True, False)
    assert (tail.last_msn, tail.last_parts, tail.trailing_parts) == (10, 4, 2)
    assert tail.newest_part == PartName(TID, 11, 1) and tail.hint == PartName(TID, 11, 2)
    assert tail.low_latency


def test_tail_right_after_a_segment_closed_and_of_the_first_segment():
    tail = parse_tail(playlist(10, 0))
    assert (tail.last_msn, tail.last_parts, tail.trailing_parts) == (10, 4, 0)
    assert tail.newest_part == PartName(TID, 10, 3) and tail.hint == PartName(TID, 11, 0)
    first = parse_tail(playlist(1, 3, window=8))    # one segment only: its parts are walked from the head
    assert (first.last_msn, first.last_parts, first.trailing_parts) == (1, 4, 3)
    empty = parse_tail(build_live_media_playlist([], low_latency=LowLatency(0.5, parts(1, 2), f"{TID}-1.2.m4s")))
    assert (empty.last_msn, empty.last_parts, empty.trailing_parts) == (-1, 0, 2)


def test_tail_of_the_delta_update_counts_the_skipped_segments():
    full, delta = parse_tail(playlist(20, 1)), playlist(20, 1, skip=True)
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in delta    # the window is long enough to skip
    assert parse_tail(delta) == full


def test_tail_of_an_ended_and_of_a_plain_playlist():
    ended = parse_tail(playlist(10, 0, ended=True))
    assert ended.ended and not ended.low_latency and ended.hint is None
    plain = parse_tail(build_live_media_playlist([LiveSegment(n, f"{TID}-{n}.ts", 2000, 1000, 0.0)
                                                  for n in range(3, 7)]))
    assert not plain.can_block and not plain.low_latency and plain.last_msn == 6 and plain.part_target == 0


def test_a_short_window_advertises_no_skip():
    assert not parse_tail(playlist(3, 0, window=3)).can_skip


@pytest.mark.parametrize("query, expected", [
    ({}, None),
    ({"_HLS_msn": "12"}, (12, None, False)),
    ({"_HLS_msn": "12", "_HLS_part": "0"}, (12, 0, False)),
    ({"_HLS_skip": "YES"}, (None, None, True)),
    ({"_HLS_skip": "v2", "_HLS_msn": "7", "_HLS_part": "3"}, (7, 3, True)),
])
def test_directives(query, expected):
    d = parse_directives(query)
    assert (d if d is None else (d.msn, d.part, d.skip)) == expected


@pytest.mark.parametrize("query", [{"_HLS_part": "1"}, {"_HLS_msn": "-1"}, {"_HLS_msn": "1.5"}, {"_HLS_msn": ""},
                                   {"_HLS_msn": "1", "_HLS_part": "x"}, {"_HLS_msn": "9" * 21},
                                   {"_HLS_skip": "yes"}, {"_HLS_msn": " 3"}])
def test_bad_directives(query):
    with pytest.raises(PackagerError) as e:
        parse_directives(query)
    assert e.value.code is ErrorCode.BAD_REQUEST and e.value.message.startswith("parse_directives: ")


def test_reload_ready_by_segment_and_by_part():
    tail = parse_tail(playlist(10, 2))     # 10 complete (parts 0-3), parts 0-1 of 11
    assert reload_ready(tail, 10, None) and reload_ready(tail, 3, None) and not reload_ready(tail, 11, None)
    assert reload_ready(tail, 11, 0) and reload_ready(tail, 11, 1) and not reload_ready(tail, 11, 2)
    assert reload_ready(tail, 10, 3) and reload_ready(tail, 9, 0) and not reload_ready(tail, 12, 0)


def test_a_part_past_the_last_of_a_complete_segment_is_part_0_of_the_next():
    """§6.2.5.2-M3: segment 10 has parts 0-3; part 4 (or 9) of it means part 0 of 11."""
    closed = parse_tail(playlist(10, 0))
    assert not reload_ready(closed, 10, 4) and not reload_ready(closed, 10, 9)
    opened = parse_tail(playlist(10, 1))
    assert reload_ready(opened, 10, 4) and reload_ready(opened, 10, 9) and not reload_ready(opened, 11, 1)
    assert reload_ready(opened, 9, 7)      # older: both it and the next segment are complete


def test_advance_part_limit():
    assert advance_part_limit(0.5) == 6 and advance_part_limit(0.2) == pytest.approx(15)
    assert advance_part_limit(1.0) == 3 and advance_part_limit(2.0) == 3


def test_too_far_ahead_is_a_bad_request():
    tail = parse_tail(playlist(10, 2))     # the newest part is 11.1; 4 parts a segment; limit 6 parts
    check_ahead(tail, 12, None)             # last + 2: allowed
    with pytest.raises(PackagerError, match="check_ahead: _HLS_msn=13"):
        check_ahead(tail, 13, None)
    check_ahead(tail, 11, 7)                # 6 parts past 11.1
    with pytest.raises(PackagerError, match="check_ahead: _HLS_part=8"):
        check_ahead(tail, 11, 8)
    check_ahead(tail, 12, 3)                # 11.2, 11.3, 12.0 .. 12.3: 6 ahead
    with pytest.raises(PackagerError, match="_HLS_part=4"):
        check_ahead(tail, 12, 4)
    check_ahead(tail, 10, 10_000)           # a complete segment: part 0 of 11 (M3), never too far
    check_ahead(tail, 1, 0)                 # long gone: answered at once with the current playlist


def test_part_names():
    assert parse_part_name(f"{TID}-12.3.m4s") == PartName(TID, 12, 3)
    for name in (f"{TID}-12.m4s", f"{TID}-0-init.mp4", "index.m3u8", f"{TID}-12.3.m4s.tmp", f"{TID}-1.-1.m4s"):
        assert parse_part_name(name) is None


def test_which_missing_parts_may_be_held():
    tail = parse_tail(playlist(10, 2))     # newest 11.1, hint 11.2
    held = [PartName(TID, 11, 2), PartName(TID, 11, 3), PartName(TID, 12, 0)]
    assert all(part_hinted(tail, p) for p in held)
    for p in (PartName(TID, 11, 4), PartName(TID, 12, 1), PartName(TID, 13, 0), PartName("other", 11, 2)):
        assert not part_hinted(tail, p)
    assert not part_hinted(parse_tail(playlist(10, 2, ended=True)), PartName(TID, 11, 2))


def test_when_waiting_for_a_hinted_part_is_over():
    hint = PartName(TID, 11, 2)
    assert not part_settled(parse_tail(playlist(10, 2)), hint)
    assert part_settled(parse_tail(playlist(10, 3)), hint)           # listed
    assert part_settled(parse_tail(playlist(11, 0)), hint)           # its segment closed
    assert part_settled(parse_tail(playlist(10, 2, ended=True)), hint)
    other = parse_tail(playlist(10, 2).replace(TID, "zz"))          # another writer took the stream over
    assert part_settled(other, hint)
