#!/usr/bin/env python3
"""Make Warren's sample photos from the two photos scikit-learn ships (CC BY 2.0, see README.md).

Writes one image per input format Warren reads: china.jpg (the original JPEG), flower.png and
china_small.webp (downscaled copies, so the repository stays small).
Run: python3 samples/images/make_samples.py   (needs scikit-learn and pillow)
"""

import pathlib
import shutil

import sklearn
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
SRC = pathlib.Path(sklearn.__file__).resolve().parent / "datasets" / "images"

shutil.copyfile(SRC / "china.jpg", HERE / "china.jpg")
flower = Image.open(SRC / "flower.jpg")
flower.resize((flower.width // 2, flower.height // 2), Image.LANCZOS).save(HERE / "flower.png", optimize=True)
china = Image.open(SRC / "china.jpg")
china.resize((china.width // 2, china.height // 2), Image.LANCZOS).save(HERE / "china_small.webp", lossless=True)
for p in sorted(HERE.glob("*.*")):
    if p.suffix != ".py" and p.suffix != ".md":
        with Image.open(p) as im:
            print(f"{p.name}: {im.format} {im.width}x{im.height} {p.stat().st_size} bytes")
