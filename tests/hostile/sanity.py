"""What a hostile file may get back, and whether a 200 manifest or segment is sane (issue 10, "Sanity of what is
served").

An answer is one of the documented statuses (README "URLs": 200/206, 400/404/415/416, ``500 BAD_DATA: …``), never
``500 INTERNAL_ERROR``, a hang or a dropped connection. A 200 manifest must describe something playable: every
duration positive and finite, HLS TARGETDURATION ≥ ceil of each EXTINF and ≤ MAX_SEGMENT_SECONDS, segment names
that resolve. The checkers also return the segment URLs (relative to the manifest) the harness should request next.
"""
from __future__ import annotations

import base64
import io
import math
import re
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import m3u8

DOCUMENTED = {200, 206, 400, 404, 415, 416}
MAX_SEGMENT_SECONDS = 3600
MIN_SECONDS = 0.001  # what a manifest printing milliseconds shows as 0 (EXTINF:0.000, PT0S)
PICK_PER_RENDITION = 2  # renditions (variants, representations, stream indexes) whose segments get requested


def status_problem(status: int | None, body: bytes, error: str = "") -> str | None:
    """None when the answer is documented, else a short cause ("500 INTERNAL_ERROR", "timeout"...)."""
    if status is None:
        return error or "no answer"
    if status in DOCUMENTED:
        return None
    if status == 500 and body.startswith(b"BAD_DATA:"):
        return None
    return f"{status} {body[:40].decode('latin-1').split(':')[0].strip()}"


@dataclass
class Manifest:
    problems: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)  # more manifests (HLS media playlists)
    segments: list[tuple[str, str | None]] = field(default_factory=list)  # (segment URL, init URL or None)


def spread(items: list, k: int = 3) -> list:
    """First, middle and last (fewer when there are fewer)."""
    if len(items) <= k:
        return list(items)
    return [items[0], items[len(items) // 2], items[-1]]


def ends(items: list) -> list:
    return spread(items, PICK_PER_RENDITION) if len(items) > PICK_PER_RENDITION else list(items)


def _finite_positive(x: float) -> bool:
    return math.isfinite(x) and x >= MIN_SECONDS


def check_hls(text: str) -> Manifest:
    out = Manifest()
    try:
        pl = m3u8.loads(text)
    except Exception as e:  # the m3u8 library raises several types for bad input
        return Manifest([f"hls: unparsable ({type(e).__name__})"])
    if pl.is_variant:
        uris = [p.uri for p in pl.playlists] + [m.uri for m in pl.media if m.uri]
        if not uris:
            out.problems.append("hls master: no variant")
        out.children = ends(uris)
        return out
    if not pl.segments:
        out.problems.append("hls media: no segment")
    target = pl.target_duration
    if target is None or not 1 <= target <= MAX_SEGMENT_SECONDS:
        out.problems.append(f"hls media: EXT-X-TARGETDURATION {target}")
    for s in pl.segments:
        d = s.duration
        if d is None or not _finite_positive(d):
            out.problems.append(f"hls media: EXTINF {d}")
            break
        if target is not None and math.ceil(d) > target:
            out.problems.append(f"hls media: EXTINF {d} > TARGETDURATION {target}")
            break
        if not s.uri or "/" in s.uri or ".." in s.uri:
            out.problems.append(f"hls media: segment URI {s.uri!r}")
            break
    if not pl.is_endlist:
        out.problems.append("hls media: no EXT-X-ENDLIST")
    init = pl.segment_map[0].uri if pl.segment_map else None
    out.segments = [(s.uri, init) for s in spread(pl.segments) if s.uri]
    return out


_ISO = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def iso_seconds(value: str | None) -> float | None:
    m = _ISO.match(value or "")
    if not value or not m:
        return None
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def _xml(text: str, protocol: str):
    """The parsed root, or a Manifest whose one problem says it does not parse."""
    try:
        return ET.fromstring(text)
    except ET.ParseError as e:
        return Manifest([f"{protocol}: unparsable ({e})"])


def check_mpd(text: str) -> Manifest:
    out = Manifest()
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    root = _xml(text, "dash")
    if isinstance(root, Manifest):
        return root
    total = iso_seconds(root.get("mediaPresentationDuration"))
    if total is None or not _finite_positive(total):
        out.problems.append(f"dash: mediaPresentationDuration={root.get('mediaPresentationDuration')}")
    longest = iso_seconds(root.get("maxSegmentDuration"))
    if longest is not None and longest > MAX_SEGMENT_SECONDS:
        out.problems.append(f"dash: maxSegmentDuration={root.get('maxSegmentDuration')}")
    for period in root.findall("d:Period", ns):
        if period.get("duration") is not None and not _finite_positive(iso_seconds(period.get("duration")) or 0):
            out.problems.append(f"dash: Period@duration={period.get('duration')}")
    reps = root.findall("d:Period/d:AdaptationSet/d:Representation", ns)
    if not reps:
        out.problems.append("dash: no Representation")
    for rep in ends(reps):
        tpl = rep.find("d:SegmentTemplate", ns)
        if tpl is None:
            out.problems.append(f"dash: {rep.get('id')}: no SegmentTemplate")
            continue
        timescale = int(tpl.get("timescale", "1"))
        count = 0
        for s in tpl.findall("d:SegmentTimeline/d:S", ns):
            d, r = int(s.get("d", "0")), int(s.get("r", "0"))
            if timescale <= 0 or not MIN_SECONDS <= d / timescale <= MAX_SEGMENT_SECONDS:
                out.problems.append(f"dash: {rep.get('id')}: S@d={d} timescale={timescale}")
                break
            count += r + 1
        if not count:
            out.problems.append(f"dash: {rep.get('id')}: empty SegmentTimeline")
            continue
        start = int(tpl.get("startNumber", "1"))
        init = tpl.get("initialization", "").replace("$RepresentationID$", rep.get("id", ""))
        media = tpl.get("media", "").replace("$RepresentationID$", rep.get("id", ""))
        numbers = spread(list(range(start, start + count)))
        out.segments += [(media.replace("$Number$", str(n)), init) for n in numbers]
    return out


def check_mss(text: str) -> Manifest:
    out = Manifest()
    root = _xml(text, "mss")
    if isinstance(root, Manifest):
        return root
    scale = int(root.get("TimeScale", "10000000"))
    if int(root.get("Duration", "0")) < MIN_SECONDS * scale:
        out.problems.append(f"mss: Duration={root.get('Duration')}")
    streams = root.findall("StreamIndex")
    if not streams:
        out.problems.append("mss: no StreamIndex")
    for si in ends(streams):
        starts, t, ticks = [], 0, int(si.get("TimeScale", scale))
        for c in si.findall("c"):
            t = int(c.get("t", t))
            d = int(c.get("d", "0"))
            if ticks <= 0 or not MIN_SECONDS <= d / ticks <= MAX_SEGMENT_SECONDS:
                out.problems.append(f"mss: {si.get('Type')}: c@d={c.get('d')}")
                break
            for _ in range(int(c.get("r", "1"))):
                starts.append(t)
                t += d
        level = si.find("QualityLevel")
        if not starts or level is None:
            out.problems.append(f"mss: {si.get('Type')}: no chunk or QualityLevel")
            continue
        bitrate = level.get("Bitrate", "")
        url = si.get("Url", "").replace("{bitrate}", bitrate).replace("{Bitrate}", bitrate)
        out.segments += [(url.replace("{start time}", str(s)).replace("{start_time}", str(s)), None)
                         for s in spread(starts)]
    return out


def _string(buf: bytes, pos: int) -> int:
    return buf.index(b"\0", pos) + 1


def parse_abst(buf: bytes) -> tuple[int, list[tuple[int, int]]]:
    """Adobe HDS bootstrap (F4V spec, abst/asrt/afrt): (fragment count, [(first fragment, duration)]). Raises on
    malformed input (struct.error, ValueError)."""
    size, typ = struct.unpack_from(">I4s", buf, 0)
    if typ != b"abst" or size > len(buf):
        raise ValueError("not an abst box")
    pos = _string(buf, 8 + 4 + 4 + 1 + 4 + 8 + 8)  # header, version, profile, timescale, times; MovieIdentifier
    for _ in range(2):  # server entries, then quality entries: a count and that many strings
        count, pos = buf[pos], pos + 1
        for _ in range(count):
            pos = _string(buf, pos)
    pos = _string(buf, _string(buf, pos))  # DrmData, MetaData
    fragments, runs = 0, []
    for table in ("asrt", "afrt"):
        count, pos = buf[pos], pos + 1
        for _ in range(count):
            size, typ = struct.unpack_from(">I4s", buf, pos)
            if typ.decode("latin-1") != table or size < 8:
                raise ValueError(f"expected {table}")
            p = pos + 12 + (4 if table == "afrt" else 0)  # header, version/flags, afrt's timescale
            quality, p = buf[p], p + 1
            for _ in range(quality):
                p = _string(buf, p)
            (entries,), p = struct.unpack_from(">I", buf, p), p + 4
            for _ in range(entries):
                if table == "asrt":
                    fragments += struct.unpack_from(">II", buf, p)[1]
                    p += 8
                else:
                    first, _ts, duration = struct.unpack_from(">IQI", buf, p)
                    p += 16 + (1 if duration == 0 else 0)  # a zero duration carries a discontinuity indicator
                    runs.append((first, duration))
            pos += size
    return fragments, runs


def check_f4m(text: str) -> Manifest:
    out = Manifest()
    ns = {"f": "http://ns.adobe.com/f4m/1.0"}
    root = _xml(text, "hds")
    if isinstance(root, Manifest):
        return root
    duration = root.findtext("f:duration", namespaces=ns)
    if duration is None or not _finite_positive(float(duration)):
        out.problems.append(f"hds: duration={duration}")
    boot = root.find("f:bootstrapInfo", ns)
    try:
        fragments, runs = parse_abst(base64.b64decode(boot.text or ""))
    except (AttributeError, ValueError, struct.error, IndexError) as e:
        return Manifest(out.problems + [f"hds: bootstrap unparsable ({type(e).__name__})"])
    if fragments <= 0 or not runs or any(d == 0 for _, d in runs[:-1]) or runs[-1][1] == 0 and len(runs) == 1:
        out.problems.append(f"hds: bootstrap fragments={fragments} runs={runs[:4]}")
    for media in ends(root.findall("f:media", ns)):
        url = media.get("url", "")
        out.segments += [(f"{url}Seg1-Frag{n}", None) for n in spread(list(range(1, fragments + 1)))]
    return out


CHECKERS = {"hls": check_hls, "dash": check_mpd, "mss": check_mss, "hds": check_f4m}


# --- segments ------------------------------------------------------------------------------------------------------

def flv_of_f4f(data: bytes) -> bytes:
    """The mdat of an HDS fragment holds FLV tags: give them an FLV header so a demuxer can read them."""
    pos = 0
    while pos + 8 <= len(data):
        size, typ = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        if typ == b"mdat":
            return b"FLV\x01\x05\0\0\0\x09\0\0\0\0" + data[pos + header:pos + size]
        if size < header:
            break
        pos += size
    raise ValueError("no mdat in the HDS fragment")


def decode_first_frames(fmt: str, data: bytes) -> str | None:
    """Open ``data`` with PyAV and decode the first frame of each stream; None when that works, else the error.
    Runs in a child process (tests.hostile.harness.Decoder) so that a crash in a decoder cannot take pytest down."""
    import av

    try:
        if fmt == "f4f":
            fmt, data = "flv", flv_of_f4f(data)
        with av.open(io.BytesIO(data), format=fmt) as container:
            if not container.streams:
                return "no stream"
            pending = {s.index for s in container.streams if s.type in ("video", "audio")}
            for packet in container.demux():
                if packet.stream.index in pending:
                    for _ in packet.decode():
                        pending.discard(packet.stream.index)
                        break
                if not pending:
                    return None
            return f"no frame decoded for streams {sorted(pending)}" if pending else None
    except Exception as e:  # PyAV raises its FFmpegError family and ValueError; all of them are a finding here
        return f"{type(e).__name__}: {str(e)[:120]}"
