"""Two job kinds in Python, hosted by the Rust worker (docs/python-kinds.md):

    WARREN__PYTHON__MODULES=media_kinds WARREN__PYTHON__PATH=examples/python,clients/python \\
        target/release/warren-consumer

- ``py.thumbnail``: a JPEG or PNG made a thumbnail with Pillow (``draft()`` decodes a JPEG at a
  reduced scale), written as JPEG;
- ``py.normalize``: a vector scaled to unit length with numpy.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

import warren_worker
from warren_worker import Context, Permanent


@warren_worker.kind("py.thumbnail", time_limit=30, bytes_fields=("image",))
def thumbnail(job: dict[str, Any], cx: Context) -> dict[str, Any]:
    size = int(job.get("size", 256))
    if not 1 <= size <= 4096:
        raise Permanent("invalid_params", f"size must be 1 to 4096, got {size}")
    try:
        image = Image.open(io.BytesIO(job["image"]))
        image.draft("RGB", (size, size))
        image = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise Permanent("corrupt_image", str(e)) from e
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=int(job.get("quality", 85)))
    cx.logger.info("thumbnail %dx%d", *image.size)
    return {"image": out.getvalue(), "width": image.width, "height": image.height}


@warren_worker.kind("py.normalize", time_limit=10)
def normalize(job: dict[str, Any], cx: Context) -> dict[str, Any]:
    vector = np.asarray(job.get("vector", []), dtype=np.float64)
    if vector.ndim != 1 or vector.size == 0:
        raise Permanent("invalid_params", "vector must be a non-empty list of numbers")
    norm = float(np.linalg.norm(vector))
    if norm == 0.0 or not np.isfinite(norm):
        raise Permanent("invalid_params", f"a vector of norm {norm} cannot be normalised")
    return {"vector": (vector / norm).tolist(), "norm": norm}
