"""Issue 10, "How it is checked": a seeded corpus of structurally mutated MP4s asked in every protocol of real gateway
workers under an address-space limit. Every answer is documented, every 200 manifest is sane, segments decode, peak
RSS per file stays under the bound, the workers stay up. ``--fuzz-corpus N`` runs N files (e.g. 10000) instead of
the CI size and prints the summary table; ``HOSTILE_FINDINGS=path.md`` also writes the findings grouped by cause."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from fixtures.generate import fixture_path
from fixtures.mutations import CI_SIZE, KINDS, SOURCES, corpus, mutation, write

from . import sanity
from .harness import Fleet, findings, summary

WARM_UP = "source_title_180p.mp4"


def add_sources(store: Path) -> list[str]:
    """Pristine copies of the corpus's sources next to it: the warm-up file, and proof the checks pass good media."""
    names = []
    for name in SOURCES:
        dest = store / f"source_{name}"
        if not dest.exists():
            try:
                os.link(fixture_path(name), dest)
            except OSError:  # another filesystem
                shutil.copyfile(fixture_path(name), dest)
        names.append(dest.name)
    return names


def test_corpus_is_seeded_and_covers_every_kind(tmp_path):
    first = [mutation(i) for i in range(len(KINDS))]
    again = [mutation(i) for i in range(len(KINDS))]
    assert [(m, data, sparse) for m, data, sparse in first] == [(m, data, sparse) for m, data, sparse in again]
    assert {m.kind for m, _, _ in first} == set(KINDS)
    assert mutation(0, seed=1)[1] != mutation(0, seed=2)[1] or mutation(0, seed=1)[0] != mutation(0, seed=2)[0]
    for m, data, _ in first:
        assert data != fixture_path(m.source).read_bytes(), m  # every kind changes something
    sparse = next(i for i, k in enumerate(KINDS) if k == "sparse")
    m, path = write(sparse, tmp_path)
    st = path.stat()
    assert st.st_size > 1 << 20 and st.st_blocks * 512 < st.st_size // 100, (m, st.st_size, st.st_blocks)  # a hole


def test_sanity_rejects_what_the_issue_saw():
    assert sanity.check_hls("#EXTM3U\n#EXT-X-TARGETDURATION:125829857\n#EXTINF:6.0,\ns.ts\n#EXT-X-ENDLIST\n").problems
    assert sanity.check_hls("#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:0.000,\ns.ts\n#EXT-X-ENDLIST\n").problems
    assert sanity.check_hls("#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6.5,\ns.ts\n#EXT-X-ENDLIST\n").problems
    assert not sanity.check_hls("#EXTM3U\n#EXT-X-TARGETDURATION:7\n#EXTINF:6.5,\ns.ts\n#EXT-X-ENDLIST\n").problems
    mpd = ('<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" mediaPresentationDuration="{}"><Period><AdaptationSet>'
           '<Representation id="v1"><SegmentTemplate timescale="1000" media="f-$Number$.m4s" initialization="i.mp4">'
           '<SegmentTimeline><S t="0" d="{}"/></SegmentTimeline></SegmentTemplate></Representation></AdaptationSet>'
           '</Period></MPD>')
    assert sanity.check_mpd(mpd.format("PT0S", 6000)).problems
    assert sanity.check_mpd(mpd.format("PT6S", 0)).problems
    assert not sanity.check_mpd(mpd.format("PT6S", 6000)).problems
    mss = '<SmoothStreamingMedia Duration="{}"><StreamIndex Url="Q({{bitrate}})/F(v={{start time}})">' \
          '<QualityLevel Bitrate="1"/><c t="0" d="{}"/></StreamIndex></SmoothStreamingMedia>'
    assert sanity.check_mss(mss.format(60000000, 0)).problems
    assert not sanity.check_mss(mss.format(60000000, 60000000)).problems
    assert sanity.status_problem(500, b"INTERNAL_ERROR: unexpected server error (logged)\n")
    assert sanity.status_problem(None, b"", "timeout")
    assert sanity.status_problem(500, b"BAD_DATA: stts: too long\n") is None


def test_pristine_sources_pass_the_harness(tmp_path):
    """The checks themselves: good media gives no problem, no decode note and a small peak."""
    store = tmp_path / "store"
    store.mkdir()
    names = add_sources(store)
    with Fleet(tmp_path, store, WARM_UP) as fleet:
        reports = [fleet.probe(name) for name in names]
    for r in reports:
        assert not r.problems and not r.decode_notes, (r.name, r.problems, r.decode_notes)
        assert sum(a.status == 200 for a in r.answers) >= 12, [(a.path, a.status) for a in r.answers]


@pytest.mark.slow
def test_hostile_corpus_in_every_protocol(fuzz_corpus_size, tmp_path):
    started = time.monotonic()
    directory, mutations = corpus(fuzz_corpus_size)
    add_sources(directory)
    made = time.monotonic() - started
    with Fleet(tmp_path, directory, WARM_UP) as fleet:
        reports = [fleet.probe(m.name, m.detail, m.payload_corrupt) for m in mutations]
        idle = fleet.idle_vmsize_mb
    text = summary(reports, time.monotonic() - started)
    text += f"\ncorpus made in {made:.1f} s; idle worker VmSize {idle} MB; CI size {CI_SIZE}"
    print("\n" + text)
    report = f"# Hostile corpus findings\n\n```\n{text}\n```\n\n{findings(reports)}"
    (tmp_path / "findings.md").write_text(report)
    if os.environ.get("HOSTILE_FINDINGS"):
        Path(os.environ["HOSTILE_FINDINGS"]).write_text(report)
    failing = [r for r in reports if r.problems]
    assert not failing, f"{text}\n\n{findings(failing)[:12000]}"
