#!/usr/bin/env python3
"""Make the camera-sized sample photos, photo_1920x1080.jpg and photo_4000x3000.jpg, from
../images/china.jpg.

china.jpg (640x427) is tiled at its native resolution, every other tile mirrored so that edges
meet edges (no seams for the resamplers to ring on), then saved as a camera or phone would:
baseline JPEG, quality 90, 4:2:0 chroma subsampling. Native resolution keeps the photo's own
detail and noise per pixel, which is what decoding and resampling cost depends on; an
upscaled photo would be smoother than a real one.
Run: python3 samples/photos/make_photos.py   (needs Pillow)
"""

import pathlib

from PIL import Image, ImageOps

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE.parent / "images" / "china.jpg"


def tiled(src: Image.Image, width: int, height: int) -> Image.Image:
    out = Image.new("RGB", (width, height))
    for row, y in enumerate(range(0, height, src.height)):
        for col, x in enumerate(range(0, width, src.width)):
            tile = ImageOps.mirror(src) if col % 2 else src
            tile = ImageOps.flip(tile) if row % 2 else tile
            out.paste(tile, (x, y))
    return out


china = Image.open(SOURCE).convert("RGB")
for w, h in [(1920, 1080), (4000, 3000)]:
    path = HERE / f"photo_{w}x{h}.jpg"
    tiled(china, w, h).save(path, quality=90, subsampling=2)
    print(f"{path.name}: {w}x{h} {path.stat().st_size} bytes")
