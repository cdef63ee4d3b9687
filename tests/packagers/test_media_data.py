import numpy as np
import pytest

from packagers.errors import PackagerError
from packagers.media_data import gather, plan_reads
from packagers.model import SampleTable


def table(offsets, sizes):
    n = len(offsets)
    z = np.zeros(n)
    return SampleTable(np.array(offsets), np.array(sizes), z, z, z, np.ones(n, bool))


def test_coalesces_near_ranges_and_gathers_in_sample_order():
    data = bytes(range(256)) * 40  # a fake file
    video = table([100, 150, 5000], [50, 30, 20])
    audio = table([180, 4000], [10, 10])
    reqs = plan_reads([video, audio], max_gap=1000)
    assert [(r.offset, r.size) for r in reqs] == [(100, 90), (4000, 1020)]
    bufs = [data[r.offset:r.end] for r in reqs]
    assert gather(video, reqs, bufs) == data[100:180] + data[5000:5020]
    assert gather(audio, reqs, bufs) == data[180:190] + data[4000:4010]


def test_overlapping_and_unsorted_samples():
    data = bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8))
    t = table([2000, 10, 15], [100, 20, 5])
    reqs = plan_reads([t], max_gap=0)
    bufs = [data[r.offset:r.end] for r in reqs]
    assert gather(t, reqs, bufs) == data[2000:2100] + data[10:30] + data[15:20]


def test_short_read_is_bad_data():
    t = table([0], [100])
    reqs = plan_reads([t])
    with pytest.raises(PackagerError):
        gather(t, reqs, [b"x" * 50])


@pytest.mark.parametrize("cuts", [(), (3, 7), (2, 5), (0, 3, 3, 10)])
def test_sample_views_equal_slices_of_the_joined_payload(cuts):
    """Chunk cuts at sample boundaries (3, 7), inside a sample (2, 5: the joined fallback), and empty chunks."""
    from packagers.media_data import TrackSegment
    from packagers.model import Track

    data = bytes(range(10))
    sizes = [3, 0, 4, 3]  # a zero-size sample sits on the cut at 3
    t = table(np.cumsum([0] + sizes[:-1]), sizes)
    edges = (0, *cuts, len(data))
    chunks = [memoryview(data)[a:b] for a, b in zip(edges, edges[1:])] if cuts else data
    segment = TrackSegment(Track.__new__(Track), t, chunks)
    views = segment.sample_views()
    assert [bytes(v) for v in views] == [b"\x00\x01\x02", b"", b"\x03\x04\x05\x06", b"\x07\x08\x09"]
    if cuts == (3, 7):  # no copy: views of the chunks themselves
        assert views[2].obj is data and views[3].obj is data
    with pytest.raises(PackagerError):
        TrackSegment(Track.__new__(Track), table([0], [11]), data).sample_views()


def test_sample_locations_point_into_the_read_buffer_without_copying():
    """Chunks that are views of one read buffer (in any order, with gaps) locate samples in that buffer; chunks of
    different buffers are joined."""
    from packagers.media_data import TrackSegment
    from packagers.model import Track

    arena = bytearray(b"..AAABBBB..CCC.")  # three samples read into one buffer with gaps between them
    view = memoryview(arena)
    t = table([0, 0, 0], [3, 4, 3])
    located = TrackSegment(Track.__new__(Track), t, [view[2:9], view[11:14]])
    base, starts = located.sample_locations()
    assert base is arena and starts.tolist() == [2, 5, 11]
    swapped = TrackSegment(Track.__new__(Track), table([0, 0], [3, 4]), [view[11:14], view[5:9]])
    base, starts = swapped.sample_locations()
    assert base is arena and [bytes(arena[a:a + n]) for a, n in zip(starts, (3, 4))] == [b"CCC", b"BBBB"]
    mixed = TrackSegment(Track.__new__(Track), t, [view[2:9], memoryview(b"CCC")])
    base, starts = mixed.sample_locations()
    assert bytes(base) == b"AAABBBBCCC" and starts.tolist() == [0, 3, 7]


def test_one_chunk_is_located_as_is():
    from packagers.media_data import TrackSegment
    from packagers.model import Track

    chunk = memoryview(bytearray(b"xxAAABBBB"))[2:]
    base, starts = TrackSegment(Track.__new__(Track), table([0, 0], [3, 4]), [chunk]).sample_locations()
    assert base is chunk and starts.tolist() == [0, 3]
