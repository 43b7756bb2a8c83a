"""What the prover checks, as small functions over what it observed, and the report.

Each check records a name, whether it passed and what was seen; the prover fails when one
fails. Pixel checks use Pillow: the sandbox draws its series in #73BF69.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image, ImageChops


@dataclass
class Report:
    rows: list[tuple[str, bool, str]] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, seen: str = "") -> bool:
        self.rows.append((name, bool(ok), seen))
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({seen})" if seen else ""), flush=True)
        return bool(ok)

    def fact(self, name: str, value: str) -> None:
        self.facts.append((name, value))
        print(f"      {name}: {value}", flush=True)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(ok for _, ok, _ in self.rows)

    def summary(self) -> str:
        failed = [name for name, ok, _ in self.rows if not ok]
        head = f"{len(self.rows) - len(failed)} of {len(self.rows)} checks passed"
        facts = "".join(f"\n  {k}: {v}" for k, v in self.facts)
        return head + ("" if not failed else "; failed: " + ", ".join(failed)) + facts


def strip_difference(a: bytes, b: bytes, top: int, bottom: int, threshold: int = 48) -> int:
    """Pixels that differ by more than ``threshold`` (sum of the three channels) between rows
    ``top`` up to ``bottom`` of two pictures of the same size (negative rows count from the
    bottom, ``bottom`` 0 is the last row); -1 when the sizes differ."""
    with Image.open(io.BytesIO(a)) as ia, Image.open(io.BytesIO(b)) as ib:
        if ia.size != ib.size:
            return -1
        width, height = ia.size
        box = (0, top if top >= 0 else height + top, width, bottom if bottom > 0 else height + bottom)
        diff = ImageChops.difference(ia.convert("RGB").crop(box), ib.convert("RGB").crop(box))
    channels = diff.split()
    total = ImageChops.add(ImageChops.add(channels[0], channels[1]), channels[2])  # clipped at 255
    return sum(total.histogram()[threshold + 1 :])


def size_of(image: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(image)) as im:
        return im.size


def cap_mask(status: dict[str, str], key: str) -> int:
    """A capability set of ``/proc/<pid>/status`` as a number (-1 when missing)."""
    value = status.get(key)
    return int(value, 16) if value else -1
