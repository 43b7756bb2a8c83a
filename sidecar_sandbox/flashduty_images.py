"""Image upload side of the Flashduty sandbox (flashduty-api.md 0.1): reading the multipart
``image`` file, sniffing the format from the bytes, and the content-addressed store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from .flashduty_http import invalid_parameter

MAX_IMAGE_BYTES = 5 * 1024 * 1024
_CHUNK = 64 * 1024
# BITMAPCOREHEADER, BITMAPINFOHEADER and its successors: a "BM" prefix alone is too weak
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


@dataclass(frozen=True)
class ImageFormat:
    name: str
    content_type: str


def sniff_image(data: bytes) -> ImageFormat | None:
    """The format from the magic number; None when it is not JPEG/PNG/WebP/GIF/TIFF/BMP/ICO."""
    if data.startswith(b"\xff\xd8\xff"):
        return ImageFormat("jpeg", "image/jpeg")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageFormat("png", "image/png")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageFormat("webp", "image/webp")
    if data.startswith((b"GIF87a", b"GIF89a")):
        return ImageFormat("gif", "image/gif")
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return ImageFormat("tiff", "image/tiff")
    if data.startswith(b"BM") and len(data) >= 18 and int.from_bytes(data[14:18], "little") in _BMP_DIB_SIZES:
        return ImageFormat("bmp", "image/bmp")
    if data.startswith(b"\x00\x00\x01\x00") and len(data) >= 6 and data[4:6] != b"\x00\x00":
        return ImageFormat("ico", "image/x-icon")
    return None


def image_key(data: bytes) -> str:
    """``img_`` + sha256 of the content: byte-identical uploads share a key (68 chars ≤ 256)."""
    return "img_" + hashlib.sha256(data).hexdigest()


async def read_image_field(request: web.Request) -> bytes:
    """The bytes of the multipart *file* field ``image`` (a part with a filename, as Go's
    ``FormFile`` requires); 400 when missing or larger than 5 MB."""
    missing = invalid_parameter("image is required: a multipart/form-data file field named 'image'")
    if not request.content_type.startswith("multipart/"):
        raise missing
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "image" and part.filename:
                return await _read_capped(part)
            await part.release()
    except ValueError as exc:
        raise invalid_parameter("malformed multipart body") from exc
    raise missing


async def _read_capped(part: BodyPartReader) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > MAX_IMAGE_BYTES:
            await part.release()
            raise invalid_parameter(f"image is larger than {MAX_IMAGE_BYTES} bytes (5 MB)")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class StoredImage:
    key: str
    data: bytes
    format: ImageFormat
    uploaded_at: float
    uploads: int = 1
    referenced: bool = False

    def meta(self) -> dict[str, Any]:
        return {
            "image_key": self.key,
            "format": self.format.name,
            "content_type": self.format.content_type,
            "size": len(self.data),
            "uploaded_at": self.uploaded_at,
            "uploads": self.uploads,
            "referenced": self.referenced,
        }


class ImageStore:
    """Uploaded images by key. The sandbox has one account, so every key is valid everywhere."""

    def __init__(self) -> None:
        self._images: dict[str, StoredImage] = {}

    def put(self, data: bytes, fmt: ImageFormat, *, now: float) -> StoredImage:
        key = image_key(data)
        stored = self._images.get(key)
        if stored is None:
            stored = self._images[key] = StoredImage(key=key, data=data, format=fmt, uploaded_at=now)
        else:
            stored.uploads += 1
        return stored

    def get(self, key: str) -> StoredImage | None:
        return self._images.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._images

    def __len__(self) -> int:
        return len(self._images)

    def mark_referenced(self, key: str) -> None:
        if key in self._images:
            self._images[key].referenced = True

    def snapshot(self) -> list[dict[str, Any]]:
        return [image.meta() for image in self._images.values()]
