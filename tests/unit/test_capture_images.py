"""images.encode: the right format and content type, and never more than the byte cap."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from sidecar.capture.images import encode
from sidecar.flashduty.api import MAX_IMAGE_BYTES


def png_bytes(image: Image.Image, **kw: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **kw)
    return out.getvalue()


@pytest.fixture(scope="module")
def noise_png() -> bytes:
    """3000×3000 random pixels: incompressible, ~27 MB as PNG."""
    image = Image.frombytes("RGB", (3000, 3000), os.urandom(3000 * 3000 * 3))
    return png_bytes(image, compress_level=0)


@pytest.fixture(scope="module")
def panel_png() -> bytes:
    """A small, flat picture like a dark panel with a line."""
    image = Image.new("RGB", (400, 200), (24, 27, 31))
    for x in range(400):
        image.putpixel((x, 100 + (x % 20)), (115, 191, 105))
    return png_bytes(image)


@pytest.mark.parametrize(
    ("fmt", "content_type", "pil_format"),
    [("png", "image/png", "PNG"), ("jpeg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP")],
)
def test_noise_shrinks_under_a_small_cap(noise_png: bytes, fmt: str, content_type: str, pil_format: str) -> None:
    cap = 400_000
    assert len(noise_png) > 20 * cap
    data, ctype = encode(noise_png, fmt, 85, max_bytes=cap)
    assert ctype == content_type
    assert len(data) <= cap
    with Image.open(io.BytesIO(data)) as out:
        assert out.format == pil_format
        # downscaled, aspect ratio kept, but not absurdly small
        assert 200 < out.width < 3000
        assert abs(out.width - out.height) <= 1


def test_default_cap_is_5_mb(noise_png: bytes) -> None:
    assert MAX_IMAGE_BYTES == 5 * 1024 * 1024
    data, _ = encode(noise_png, "jpeg", 85)
    assert len(data) <= MAX_IMAGE_BYTES


def test_small_png_is_passed_through(panel_png: bytes) -> None:
    data, ctype = encode(panel_png, "png")
    assert (data, ctype) == (panel_png, "image/png")


def test_small_png_over_the_cap_is_downscaled(panel_png: bytes) -> None:
    data, _ = encode(panel_png, "png", max_bytes=len(panel_png) // 2)
    assert len(data) <= len(panel_png) // 2
    with Image.open(io.BytesIO(data)) as out:
        assert out.width < 400


def test_jpeg_flattens_alpha_and_keeps_the_size(panel_png: bytes) -> None:
    rgba = Image.new("RGBA", (300, 150), (255, 0, 0, 128))
    data, ctype = encode(png_bytes(rgba), "jpeg", 90)
    assert ctype == "image/jpeg"
    with Image.open(io.BytesIO(data)) as out:
        assert out.mode == "RGB"
        assert out.size == (300, 150)
        r, g, b = out.getpixel((10, 10))  # type: ignore[misc]
        assert r > 200 and 100 < g < 160 and 100 < b < 160  # half-transparent red on white


def test_quality_steps_down_before_downscaling(panel_png: bytes) -> None:
    big = Image.frombytes("RGB", (600, 600), os.urandom(600 * 600 * 3))
    src = png_bytes(big)
    best, _ = encode(src, "jpeg", 95, max_bytes=10**9)
    data, _ = encode(src, "jpeg", 95, max_bytes=int(len(best) * 0.6))
    with Image.open(io.BytesIO(data)) as out:
        assert out.size == (600, 600)  # a lower quality was enough


def test_unknown_format_and_impossible_cap() -> None:
    src = png_bytes(Image.new("RGB", (50, 50)))
    with pytest.raises(ValueError, match="unknown image format 'gif'"):
        encode(src, "gif")
    with pytest.raises(ValueError, match="cannot fit"):
        encode(png_bytes(Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))), "png", max_bytes=10)
