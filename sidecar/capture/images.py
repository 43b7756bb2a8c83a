"""Picture formats: encoding a PNG screenshot as PNG, JPEG or WebP under a byte cap (default
Flashduty's 5 MB, ``flashduty.api.MAX_IMAGE_BYTES``), and the table of their content types.

Flashduty (and most chat clients) reject big pictures, so the cap is a hard limit: for JPEG and
WebP the quality steps down first, then the picture is downscaled (PNG is only downscaled, and
re-encoded with ``optimize``) until it fits. A PNG that already fits is returned as is. The work is
CPU-bound and synchronous; callers run it in a thread.

``encode`` returns the content type with the bytes; it travels with the picture (``CaptureResult``,
the uploader, Flashduty's multipart upload, whose file name ``flashduty.api.upload_filename``
derives from it), so nothing sniffs it from the bytes again.
"""

from __future__ import annotations

import io
import math

from PIL import Image

from sidecar.flashduty.api import MAX_IMAGE_BYTES

__all__ = ["CONTENT_TYPES", "encode", "usable_as_is"]

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MIN_QUALITY = 40  # below this, text in a panel gets unreadable: downscale instead
_QUALITY_STEP = 15
_MIN_SIDE = 16
_HOPELESS = 4  # over 4× the cap, stepping quality down cannot fit: skip to downscaling
_BIG = 4_000_000  # pixels; above this use the faster encoder settings (PNG optimize, WebP method)


def usable_as_is(png: bytes, fmt: str = "png", max_bytes: int = MAX_IMAGE_BYTES) -> bool:
    """True when ``encode`` would return ``png`` unchanged (a PNG is wanted and it fits)."""
    return fmt == "png" and len(png) <= max_bytes and png.startswith(_PNG_SIGNATURE)


def encode(png: bytes, fmt: str = "png", quality: int = 85, max_bytes: int = MAX_IMAGE_BYTES) -> tuple[bytes, str]:
    """Return ``(data, content_type)`` for ``png`` re-encoded as ``fmt``, at most ``max_bytes``.

    Raises ``ValueError`` for an unknown format or when even a tiny picture does not fit.
    """
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"unknown image format {fmt!r} (use png, jpeg or webp)")
    if max_bytes <= 0:
        raise ValueError("max_bytes must be > 0")
    if usable_as_is(png, fmt, max_bytes):
        # Chromium's PNG is already deflated: re-optimizing saves ~2 % for ~100 ms per picture
        return png, CONTENT_TYPES["png"]
    with Image.open(io.BytesIO(png)) as opened:
        opened.load()
        image = _normalise(opened, fmt)
    qualities = _qualities(fmt, quality)
    while True:
        data = b""
        for q in qualities:
            data = _save(image, fmt, q)
            if len(data) <= max_bytes:
                return data, CONTENT_TYPES[fmt]
            if len(data) > _HOPELESS * max_bytes:
                break  # lower quality alone will not get there: downscale first
        if min(image.size) <= _MIN_SIDE:
            raise ValueError(f"cannot fit a {fmt} picture in {max_bytes} bytes")
        # bytes grow roughly with the pixel count: aim just under the cap, shrink ≥ 10 % per round
        ratio = min(0.9, math.sqrt(max_bytes / len(data)) * 0.95)
        size = (max(_MIN_SIDE, int(image.width * ratio)), max(_MIN_SIDE, int(image.height * ratio)))
        image = image.resize(size, Image.Resampling.LANCZOS)


def _normalise(image: Image.Image, fmt: str) -> Image.Image:
    """JPEG has no alpha: flatten to RGB. WebP/PNG keep RGBA when there is alpha."""
    if fmt == "jpeg":
        if image.mode in ("RGBA", "LA", "P"):
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            return flat
        return image.convert("RGB")
    if image.mode not in ("RGB", "RGBA"):
        return image.convert("RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB")
    return image.copy()


def _qualities(fmt: str, quality: int) -> list[int]:
    if fmt == "png":
        return [0]
    start = max(1, min(100, quality))
    steps = list(range(start, _MIN_QUALITY - 1, -_QUALITY_STEP)) or [start]
    if steps[-1] > _MIN_QUALITY and start > _MIN_QUALITY:
        steps.append(_MIN_QUALITY)
    return steps


def _save(image: Image.Image, fmt: str, quality: int) -> bytes:
    out = io.BytesIO()
    if fmt == "png":
        small = image.width * image.height <= _BIG
        image.save(out, format="PNG", optimize=small, compress_level=9 if small else 6)
    elif fmt == "jpeg":
        image.save(out, format="JPEG", quality=quality, optimize=True, progressive=True)
    else:
        method = 4 if image.width * image.height <= _BIG else 2
        image.save(out, format="WEBP", quality=quality, method=method)
    return out.getvalue()
