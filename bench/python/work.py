"""The work both systems run in the Celery comparison (bench/python/celery_vs_warren.py): the
same two plain functions, registered as Warren Python kinds (bench_kinds.py) and as Celery tasks
(celery_tasks.py)."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image


def noop(job: dict[str, Any]) -> dict[str, Any]:
    return {}


def thumbnail(image: bytes, size: int = 256, quality: int = 85) -> bytes:
    """A JPEG fit into size x size: decoded at a reduced scale (Pillow's draft()), bilinear,
    written as JPEG."""
    im = Image.open(io.BytesIO(image))
    im.draft("RGB", (size, size))
    if im.mode != "RGB":
        im = im.convert("RGB")
    im.thumbnail((size, size), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()
