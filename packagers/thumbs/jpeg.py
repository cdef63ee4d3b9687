"""A decoded frame to a JPEG thumbnail, resized as nginx-vod-module does (``thumb_grabber.c``).

Size: ``-w`` alone scales the height by the picture's aspect ratio, ``-h`` alone the width (floored, as nginx-vod);
both are taken as given; neither keeps the size. The aspect ratio is the displayed one: a non-square sample aspect
ratio (anamorphic SD) widens the picture, because a JPEG viewer shows square pixels. Bicubic scaling like nginx-vod.
"""
from __future__ import annotations

from fractions import Fraction

from ..errors import bad_data, bad_request

# a fixed mjpeg quantiser (qmin = qmax: the size follows the picture, not rate control): q 4 measured 43 dB luma PSNR
# at 26 KB for 640x360 and 49 dB at 70 KB for 1280x720 on the noisy fixtures; q 3 costs +18 % bytes for +1.6 dB
JPEG_QUANTISER = 4


def output_size(width: int, height: int, sar: Fraction | None, want_w: int | None, want_h: int | None
                ) -> tuple[int, int]:
    """The thumbnail's pixel size for a ``width`` x ``height`` picture with sample aspect ratio ``sar``."""
    display_w = width if not sar or sar == 1 else width * sar
    if want_w is not None and want_h is not None:
        w, h = want_w, want_h
    elif want_w is not None:
        w, h = want_w, int(height * want_w / display_w)
    elif want_h is not None:
        w, h = int(display_w * want_h / height), want_h
    else:
        w, h = round(display_w), height
    if w <= 0 or h <= 0:
        raise bad_request(f"encode_jpeg: a {w}x{h} thumbnail of a {width}x{height} picture is empty")
    return w, h


def encode_jpeg(frame, width: int | None = None, height: int | None = None, sar: Fraction | None = None) -> bytes:
    """JPEG bytes of ``frame`` (an ``av.VideoFrame``), resized to ``width``/``height`` (None: by aspect ratio).

    ``sar`` defaults to the one ``decode_frame`` leaves in ``frame.opaque`` (PyAV frames do not expose it)."""
    import av

    if sar is None and isinstance(frame.opaque, Fraction):
        sar = frame.opaque
    w, h = output_size(frame.width, frame.height, sar, width, height)
    try:
        picture = frame.reformat(w, h, "yuvj420p", interpolation="BICUBIC")
        ctx = av.CodecContext.create("mjpeg", "w")
        ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuvj420p"
        ctx.time_base = Fraction(1, 1)
        ctx.thread_count = 1
        ctx.options = {"qmin": str(JPEG_QUANTISER), "qmax": str(JPEG_QUANTISER)}
        picture.pts = 0
        return b"".join(bytes(p) for p in [*ctx.encode(picture), *ctx.encode(None)])
    except av.FFmpegError as e:  # a decoded picture swscale or mjpeg cannot take (an exotic pixel format)
        raise bad_data(f"encode_jpeg: cannot encode a {frame.width}x{frame.height} {frame.format.name} picture as "
                       f"{w}x{h} JPEG: {e}") from None
