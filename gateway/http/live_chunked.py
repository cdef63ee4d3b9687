"""Low-latency DASH: a DASH segment still being written, sent chunk by chunk as the packager writes them.

The live packager (``rtmp.live.writer``) writes each CMAF chunk of a DASH segment in progress as its own file
(``<seg>.<k>.m4s``), then the segment itself (``<seg>.m4s``, its chunks back to back) when it closes, and announces the
segment in the MPD as soon as its first chunk exists. A request for it before it closes is answered at once, 200 with
chunked transfer coding: every chunk written so far, then each next one as it appears, and when the segment file
exists, the rest of it. A player (dash.js, with ``@availabilityTimeComplete="false"``) appends each chunk as it
arrives, a part's duration after it was captured instead of a segment's.

Waiting costs no poll of its own: the packager rewrites the LL-HLS playlist after every part, so the request waits
on that playlist's next version through the process's shared watch (``gateway.http.live_wait``), exactly as a held
LL-HLS reload does, then looks for its next chunk. The segment file must begin with the bytes already sent (a
segment whose parts failed is written whole, differently): if it does not, or nothing comes within the blocking
timeout, the connection is closed without the final chunk, so the player sees a failed request, never a corrupt
segment. ``X-Accel-Buffering: no`` makes nginx pass the chunks on as they come (and not cache the response).
"""
from __future__ import annotations

import hashlib
import os
import re

from aiohttp import web

from packagers.hls.ll_directives import reload_ready
from rtmp.live import MEDIA_PLAYLIST

from .live_wait import BLOCK_TARGETS, GONE, LIVE_WAITS, Overloaded, read_whole
from .responses import cache_control
from ..ops.app_keys import SETTINGS

__all__ = ["DASH_SEGMENT", "serve_growing_segment"]

DASH_SEGMENT = re.compile(r"[0-9a-z]{1,13}-[0-9]{1,9}-(?P<kind>[va])-[0-9]{1,18}\.m4s")


async def _read(waits, path: str) -> bytes | None:
    try:
        return (await waits.run(read_whole, path))[0]
    except (FileNotFoundError, NotADirectoryError):
        return None


async def serve_growing_segment(request: web.Request, directory: str, name: str) -> web.StreamResponse | None:
    """The DASH segment ``name`` of ``directory`` while it is being written; None (the caller's 404) when it is not
    a DASH segment name or its first chunk does not exist."""
    m = DASH_SEGMENT.fullmatch(name)
    if m is None:
        return None
    waits = request.app[LIVE_WAITS]
    index = os.path.join(directory, MEDIA_PLAYLIST)
    try:    # (read before the first chunk: any newer playlist version then follows a chunk looked for)
        snapshot = await waits.current(index)
    except (FileNotFoundError, NotADirectoryError):
        return None
    base = os.path.join(directory, name[: -len(".m4s")])
    data = await _read(waits, f"{base}.0.m4s")
    if data is None:
        return None
    response = web.StreamResponse(headers={
        "Content-Type": "audio/mp4" if m["kind"] == "a" else "video/mp4", "X-Accel-Buffering": "no",
        "Cache-Control": cache_control(request.app[SETTINGS].segment_max_age)})
    response.enable_chunked_encoding()
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    try:
        return await _stream(request, response, waits, index, snapshot, base, name, data)
    except ConnectionResetError:    # the player went away (aiohttp's ClientConnectionResetError is one)
        return response


async def _stream(request: web.Request, response: web.StreamResponse, waits, index: str, snapshot, base: str,
                  name: str, data: bytes | None) -> web.StreamResponse:
    directory = os.path.dirname(index)
    timeout = BLOCK_TARGETS * max(1, snapshot.tail.target_duration)
    sent, digest, k = 0, hashlib.blake2b(digest_size=16), 0     # k: the chunk in ``data``
    while True:
        if data is not None:
            await response.write(data)
            sent += len(data)
            digest.update(data)
            k += 1
            data = await _read(waits, f"{base}.{k}.m4s")
            continue
        whole = await _read(waits, os.path.join(directory, name))
        if whole is not None:
            if len(whole) < sent or hashlib.blake2b(whole[:sent], digest_size=16).digest() != digest.digest():
                return _abort(request, response)    # written otherwise than streamed: never splice the two
            await response.write(whole[sent:])
            await response.write_eof()
            return response
        tail = snapshot.tail
        if tail.ended or not tail.can_block:    # nothing more will come (an ended stream answers waits at once)
            return _abort(request, response)
        msn, part = tail.last_msn + 1, tail.trailing_parts   # the next part of the LL-HLS playlist
        try:
            snapshot = await waits.wait(index, ("reload", msn, part), lambda t: reload_ready(t, msn, part),
                                        timeout, snapshot)
        except Overloaded:
            return _abort(request, response)
        if snapshot is None or snapshot is GONE:
            return _abort(request, response)
        data = await _read(waits, f"{base}.{k}.m4s")


def _abort(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """End the connection without the last chunk: the client sees an incomplete response, not an end of file."""
    if request.transport is not None:
        request.transport.abort()
    return response
