"""Sidecar captions in a url set: HLS subtitle renditions (segmented WebVTT) and DASH text AdaptationSets.

Ground truth is the caption file itself as ffmpeg's WebVTT/SRT demuxers read it (PyAV), never our parser: every cue
must be in each HLS WebVTT segment whose window it overlaps (and in no other), with its times and text; players
(hls.js, shaka-player, dash.js in headless Chromium) must list the subtitle tracks and show every cue of what they
loaded once, with the file's times and text, though a cue spanning a segment boundary is in two segments.
"""
from __future__ import annotations

import html
import io
import re
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path
from urllib.parse import urljoin

import xml.etree.ElementTree as ET

import av
import m3u8
import pytest

from fixtures.generate import fixture_path
from packagers.ts import TS_PTS_OFFSET

from ..packagers.fmp4_tools import read_fragment, root
from .browser_player import fatal_errors, plays_at_once, require_browser
from .conftest import start_gateway
from .http import get

CAPTIONS = Path(__file__).resolve().parents[2] / "fixtures" / "captions"
MEDIA = "title_360p.mp4"  # 12 s
SET = "title_,360p.mp4,eng.vtt,fra.srt,.urlset"
MEDIA_SECONDS = 12.0


@pytest.fixture(scope="module")
def caption_base(tmp_path_factory):
    store = tmp_path_factory.mktemp("captions-store")
    shutil.copyfile(fixture_path(MEDIA), store / MEDIA)
    shutil.copyfile(CAPTIONS / "sample_eng.vtt", store / "title_eng.vtt")
    shutil.copyfile(CAPTIONS / "sample_eng.srt", store / "title_fra.srt")
    (store / "title_deu.vtt").write_text("WEBVTT\n\n00:01.000 --> later\nbroken\n")
    (store / "movie.mp4").write_bytes(fixture_path(MEDIA).read_bytes())
    (store / "subs").mkdir()
    (store / "subs" / "movie_subs.vtt").write_bytes((CAPTIONS / "sample_eng.vtt").read_bytes())
    proc, base = start_gateway(store, store.parent / "captions.log", "--catalog-ttl", "0")
    fmp4, fmp4_base = start_gateway(store, store.parent / "captions-fmp4.log", "--hls-container", "fmp4")
    stpp, stpp_base = start_gateway(store, store.parent / "captions-stpp.log", "--dash-subtitle-format", "smpte-tt")
    yield base, store, fmp4_base, stpp_base
    for p in (proc, fmp4, stpp):
        p.terminate()
        p.wait(10)


def file_cues(name: str, shift: float = 0.0, end: float = MEDIA_SECONDS, cut: bool = False
              ) -> list[tuple[float, float, str]]:
    """(start, end, text) of the cues ffmpeg reads from a caption file, shifted, that overlap [0, end): a cue
    starting before 0 starts at 0; with ``cut``, one ending after ``end`` ends there (a whole-file output does)."""
    fmt = "srt" if name.endswith(".srt") else "webvtt"
    out = []
    with av.open(str(CAPTIONS / name), format=fmt) as c:
        for p in c.demux():
            if p.pts is None or not p.size:
                continue
            start, stop = float(p.pts * p.time_base) - shift, float((p.pts + p.duration) * p.time_base) - shift
            if stop > 0 and start < end:
                out.append((round(max(start, 0.0), 3), round(min(stop, end) if cut else stop, 3), text(p)))
    return out


def text(packet: av.Packet) -> str:
    """A cue's text with character references resolved: SRT's '&' is WebVTT's '&amp;' (the same text)."""
    return html.unescape(bytes(packet).decode().strip())


def segment_cues(data: bytes) -> list[tuple[float, float, str]]:
    with av.open(io.BytesIO(data), format="webvtt") as c:
        return [(round(float(p.pts * p.time_base), 3), round(float((p.pts + p.duration) * p.time_base), 3),
                 text(p)) for p in c.demux() if p.size]


def test_master_lists_each_caption_file_as_a_subtitle_rendition(caption_base):
    base = caption_base[0]
    master = m3u8.loads(get(f"{base}/hls/{SET}/master.m3u8").decode())
    subs = [m for m in master.media if m.type == "SUBTITLES"]
    assert [(m.language, m.name, m.uri, m.group_id) for m in subs] == [
        ("en", "English", "index-f2.m3u8", "subs"), ("fr", "Français", "index-f3.m3u8", "subs")]
    assert all(p.stream_info.subtitles == "subs" for p in master.playlists)


def test_lang_parameter_and_language_selectors(caption_base):
    """nginx-vod-module's /lang/<code>/ labels the caption files; master-l<code> lists that language's only."""
    base = caption_base[0]
    labelled = m3u8.loads(get(f"{base}/hls/title_,360p.mp4,eng.vtt,.urlset/lang/deu/master.m3u8").decode())
    assert [(m.language, m.name) for m in labelled.media if m.type == "SUBTITLES"] == [("de", "Deutsch")]
    french = m3u8.loads(get(f"{base}/hls/{SET}/master-lfra.m3u8").decode())
    assert [(m.language, m.uri, m.default) for m in french.media if m.type == "SUBTITLES"] == [
        ("fr", "index-f3.m3u8", "YES")]
    with pytest.raises(urllib.error.HTTPError) as raised:
        get(f"{base}/hls/{SET}/lang/english/master.m3u8")
    assert raised.value.code == 400


@pytest.mark.parametrize("name, number", [("sample_eng.vtt", 2), ("sample_eng.srt", 3)])
def test_every_cue_is_in_each_segment_it_overlaps(caption_base, name, number):
    base = caption_base[0]
    playlist = m3u8.loads(get(f"{base}/hls/{SET}/index-f{number}.m3u8").decode())
    media = m3u8.loads(get(f"{base}/hls/{SET}/index-f1-v1-a1.m3u8").decode())
    assert [s.duration for s in playlist.segments] == [s.duration for s in media.segments]  # aligned windows
    cues, t = file_cues(name), 0.0
    for segment in playlist.segments:
        data = get(f"{base}/hls/{SET}/{segment.uri}")
        assert f"X-TIMESTAMP-MAP=MPEGTS:{TS_PTS_OFFSET},LOCAL:00:00:00.000".encode() in data.split(b"\n\n")[0]
        expected = [c for c in cues if c[0] < t + segment.duration and c[1] > t]
        assert segment_cues(data) == expected, segment.uri
        t += segment.duration
    spanning = [c for c in cues if c[0] < 4 < c[1]]
    assert spanning  # the fixture has a cue across the first boundary (segments of 4 s): it is in two segments


def test_a_clip_moves_the_cues_and_a_broken_file_fails_alone(caption_base):
    base = caption_base[0]
    clipped = f"{base}/hls/{SET}/clipFrom/3000"
    playlist = m3u8.loads(get(f"{clipped}/index-f2.m3u8").decode())
    got = [c for s in playlist.segments for c in segment_cues(get(f"{clipped}/{s.uri}"))]
    assert sorted(set(got)) == file_cues("sample_eng.vtt", shift=3.0, end=MEDIA_SECONDS - 3.0)
    # fMP4: the clip's media times move later by EXT-X-START's offset (MSE players drop frames before 0), so do the cues
    fmp4 = f"{caption_base[2]}/hls/{SET}/clipFrom/3000"
    start = m3u8.loads(get(f"{fmp4}/index-f1-v1.m3u8").decode()).start.time_offset
    assert start > 0 and f"MPEGTS:{round(start * 90000)},".encode() in get(f"{fmp4}/seg-1-f2.vtt").split(b"\n\n")[0]
    broken = f"{base}/hls/title_,360p.mp4,eng.vtt,deu.vtt,.urlset"
    assert get(f"{broken}/master.m3u8").count(b"TYPE=SUBTITLES") == 2
    assert get(f"{broken}/seg-1-f1-v1-a1.ts")[:1] == b"G"  # the media plays
    with pytest.raises(urllib.error.HTTPError) as raised:
        get(f"{broken}/seg-1-f3.vtt")
    assert raised.value.code == 500 and b"bad timestamp" in raised.value.read()


def test_dash_lists_a_text_adaptation_set_of_the_whole_file(caption_base):
    base = caption_base[0]
    mpd = get(f"{base}/dash/{SET}/manifest.mpd").decode()
    assert mpd.count('contentType="text"') == 2 and '<BaseURL>sub-f2.vtt</BaseURL>' in mpd
    assert segment_cues(get(f"{base}/dash/{SET}/sub-f2.vtt")) == file_cues("sample_eng.vtt", cut=True)


def ttml_cues(ttml: bytes) -> list[tuple[float, float, str]]:
    """(begin, end, text) of every <p> of a TTML document, read with ElementTree (tags dropped, <br/> a newline)."""
    ns = {"tt": "http://www.w3.org/ns/ttml"}

    def seconds(clock: str) -> float:
        h, m, s = clock.split(":")
        return round(int(h) * 3600 + int(m) * 60 + float(s), 3)

    def words(element: ET.Element) -> str:
        parts = [element.text or ""]
        for child in element:
            parts += ["\n" if child.tag.endswith("br") else words(child), child.tail or ""]
        return "".join(parts)

    return [(seconds(p.get("begin")), seconds(p.get("end")), words(p).strip())
            for p in ET.fromstring(ttml).iterfind(".//tt:p", ns)]


def test_dash_smpte_tt_is_ttml_in_fmp4_segments_on_the_media_timeline(caption_base):
    base = caption_base[3]
    mpd = ET.fromstring(get(f"{base}/dash/{SET}/manifest.mpd"))
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    (text,) = [a for a in mpd.iterfind(".//d:AdaptationSet", ns) if a.get("contentType") == "text"][:1]
    assert text.get("codecs") == "stpp" and text.get("mimeType") == "application/mp4"
    template = text.find(".//d:SegmentTemplate", ns)
    video = [a for a in mpd.iterfind(".//d:AdaptationSet", ns) if a.get("contentType") == "video"][0]
    video_timeline = video.find(".//d:SegmentTimeline", ns)
    video_scale = int(video.find(".//d:SegmentTemplate", ns).get("timescale"))
    windows = [int(s.get("d")) * (int(s.get("r", 0)) + 1) for s in video_timeline]
    assert sum(windows) / video_scale == pytest.approx(sum(
        int(s.get("d")) * (int(s.get("r", 0)) + 1) for s in template.find("d:SegmentTimeline", ns)) / 1000, abs=0.01)
    init = get(f"{base}/dash/{SET}/{template.get('initialization')}")
    assert root(init).find(b"moov", b"trak", b"mdia", b"hdlr").parsed.handler_type == b"subt"
    cues, t = file_cues("sample_eng.vtt"), 0.0
    playlist = m3u8.loads(get(f"{caption_base[0]}/hls/{SET}/index-f2.m3u8").decode())  # the same windows
    for n, segment in enumerate(playlist.segments, start=1):
        (traf,) = read_fragment(get(f"{base}/dash/{SET}/{template.get('media').replace('$Number$', str(n))}"))
        assert traf.decode[0] == round(t * 1000) and traf.durations[0] == round(segment.duration * 1000)
        expected = [(a, b, html.unescape(re.sub(r"<[^>]+>", "", c))) for a, b, c in cues
                    if a < t + segment.duration and b > t]
        assert ttml_cues(traf.payload) == expected, n
        t += segment.duration


def test_smooth_text_streams_carry_ttml_relative_to_each_fragment(caption_base):
    base = caption_base[0]
    manifest = ET.fromstring(get(f"{base}/mss/{SET}/manifest"))
    streams = [s for s in manifest.iterfind("StreamIndex") if s.get("Type") == "text"]
    assert [(s.get("Name"), s.get("Language"), s.find("QualityLevel").get("FourCC")) for s in streams] == [
        ("text_f2", "en", "TTML"), ("text_f3", "fr", "TTML")]
    stream, t = streams[0], 0
    cues = file_cues("sample_eng.vtt")
    for chunk in stream.iterfind("c"):
        d = int(chunk.get("d"))
        url = stream.get("Url").replace("{bitrate}", "1000").replace("{start time}", str(t))
        (traf,) = read_fragment(get(f"{base}/mss/{SET}/{url}"))
        assert traf.decode[0] == t and traf.durations[0] == d
        start = t / 10_000_000
        expected = [(round(max(a - start, 0), 3), round(b - start, 3), html.unescape(re.sub(r"<[^>]+>", "", c)))
                    for a, b, c in cues if a < start + d / 10_000_000 and b > start]
        assert ttml_cues(traf.payload) == expected, url
        t += d


def test_catalog_captions_come_with_the_entry_urls(caption_base):
    base, store = caption_base[:2]
    subprocess.run([sys.executable, "-m", "gateway", "partners", "add", "101", "--name", "P", "--store", str(store)],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "gateway", "entries", "add", "0_capt0001", "--partner", "101", "--name", "m",
                    "--flavor", "movie.mp4", "--caption", "spa=subs/movie_subs.vtt", "--store", str(store)],
                   check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "gateway", "urls", "101", "0_capt0001", "--base-url", base,
                          "--store", str(store)], check=True, capture_output=True, text=True).stdout
    urls = dict(line.split(None, 1) for line in out.splitlines()[1:])
    master = m3u8.loads(get(urls["applehttp"].strip()).decode())
    (subs,) = [m for m in master.media if m.type == "SUBTITLES"]
    assert subs.language == "es" and subs.name == "Español"  # the catalog's language: the name says none
    assert ",movie.mp4,subs%2Fmovie_subs.vtt,.urlset" in urls["applehttp"]  # a url set reaching into subs/
    first = urljoin(urls["applehttp"].strip(), subs.uri).replace("index-", "seg-1-").replace(".m3u8", ".vtt")
    assert segment_cues(get(first))[0][2] == "<i>Hello</i> there"
    subprocess.run([sys.executable, "-m", "gateway", "partners", "set-feature", "101", "captions", "off", "--store",
                    str(store)], check=True, capture_output=True)
    assert b"SUBTITLES" not in get(urls["applehttp"].strip())  # listed no more; the media plays on
    with pytest.raises(urllib.error.HTTPError) as raised:
        get(first)
    assert raised.value.code == 403 and b"captions are disabled" in raised.value.read()


PLAYS = [
    ("hls", f"hls/{SET}/master.m3u8", False), ("shaka", f"hls/{SET}/master.m3u8", False),
    ("hls", f"hls/{SET}/master.m3u8", True), ("shaka", f"dash/{SET}/manifest.mpd", False),
    ("dash", f"dash/{SET}/manifest.mpd", False), ("shaka", f"dash/{SET}/manifest.mpd", "stpp"),
    ("dash", f"dash/{SET}/manifest.mpd", "stpp"), ("mss", f"mss/{SET}/manifest", False),
]  # fmt: skip


@pytest.fixture(scope="module")
def caption_plays(caption_base):
    """Every play of PLAYS (9 s of media each, in real time), two at a time."""
    require_browser()
    bases = {False: caption_base[0], True: caption_base[2], "stpp": caption_base[3]}
    return plays_at_once({(kind, path, fmp4): dict(manifest_url=f"{bases[fmp4]}/{path}", seconds=9, timeout=60,
                                                   kind=kind, text=True) for kind, path, fmp4 in PLAYS})


@pytest.mark.browser
@pytest.mark.parametrize("kind, path, fmp4", PLAYS)
def test_players_show_each_cue_once(caption_plays, kind, path, fmp4):
    report = caption_plays[(kind, path, fmp4)].result()
    assert report["ok"] and not fatal_errors(report), report
    assert [t["language"][:2] for t in report["subtitleTracks"]] == ["en", "fr"], report["subtitleTracks"]
    shown = [c for t in report["textTracks"] for c in t["cues"]]
    # a player places the media on its own timeline (hls.js maps the earliest timestamp, a B-frame delay before
    # presentation 0, to 0): the cues must sit exactly where the media puts presentation time 0
    offset = report["bufferedStart"]
    assert offset is not None and 0 <= offset < 0.1, report["bufferedStart"]
    loaded = joined(sorted((round(c["start"] - offset, 3), round(min(c["end"] - offset, MEDIA_SECONDS), 3),
                            c["text"]) for c in shown))
    expected = [(s, round(min(e, MEDIA_SECONDS), 3), t) for s, e, t in file_cues("sample_eng.vtt")]
    assert len(loaded) == len(set(loaded)), f"a cue shown twice: {shown}"  # the boundary cue is in two segments
    assert len(loaded) >= 3, shown
    for (start, end, _), (want_start, want_end, _) in zip(loaded, expected):  # buffered ranges are ms-rounded
        assert abs(start - want_start) <= 0.002 and abs(end - want_end) <= 0.002, (shown, offset)
    # shaka renders TTML styles as WebVTT classes (<c.white.bg_black>): compare the words
    assert [strip_markup(c[2]) for c in loaded] == [strip_markup(c[2]) for c in expected[:len(loaded)]]


def joined(cues: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Pieces of one cue back to back (shaka cuts TTML-in-MP4 cues at segment boundaries) are what a viewer sees
    as one cue; identical cues stay two."""
    out: list[tuple[float, float, str]] = []
    for start, end, text in cues:
        if out and out[-1][2] == text and abs(out[-1][1] - start) < 0.002 and out[-1][0] != start:
            out[-1] = (out[-1][0], end, text)
        else:
            out.append((start, end, text))
    return out


def strip_markup(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))
