"""What the sandbox Grafana draws, read back from a picture: its series colour, and how many
pixels of a picture have a colour (tests, benchmarks and the image prover check pictures by it)."""

from __future__ import annotations

import io

from PIL import Image, ImageChops

__all__ = ["SERIES_GREEN", "colour_pixels"]

SERIES_GREEN = (0x73, 0xBF, 0x69)  # the sandbox's series colour (grafana_page_chart.js)


def colour_pixels(image: bytes, colour: tuple[int, int, int], tolerance: int = 24) -> int:
    """How many pixels are within ``tolerance`` of ``colour`` on every channel."""
    with Image.open(io.BytesIO(image)) as im:
        channels = im.convert("RGB").split()
    masks = [
        ch.point(lambda v, c=c: 255 if abs(v - c) <= tolerance else 0) for ch, c in zip(channels, colour, strict=True)
    ]
    both = ImageChops.multiply(ImageChops.multiply(masks[0], masks[1]), masks[2])
    return both.histogram()[255]
