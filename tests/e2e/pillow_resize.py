#!/usr/bin/env python3
"""Resizes images with Pillow the ways the imaging quality test compares Warren against.

Reads one JSON object on stdin: {"out": DIR, "cases": [CASE, ...]}, where a CASE gives the
geometry Warren computed (so both sides resample exactly the same region):
  {"id": ..., "image": PATH, "filter": "triangle"|..., "output": [w, h], "scaled": [w, h],
   "region": [left, top, width, height]}   (region in source pixels)
and writes, per case, PNGs into DIR:
  {id}.reference.png  full decode, Lanczos: what every side is measured against;
  {id}.draft.png      draft(mode, scaled size), then the case's filter: what a Python service
                      writes for speed (the speed benchmark's Pillow-draft);
  {id}.thumbnail.png  draft at twice the scaled size, as Image.thumbnail() does by default
                      (reducing_gap=2.0), then the case's filter.
A filter Pillow lacks (gaussian) gets only the reference.

The request may also hold "crops": [{"image": PATH, "box": [left, top, right, bottom],
"out": PATH}, ...], written first as JPEG quality 90 (Pillow's default 4:2:0 chroma), so the
test can make images of the sizes it needs from the sample photos.
"""

import json
import sys

from PIL import Image

FILTERS = {
    "nearest": Image.NEAREST,
    "triangle": Image.BILINEAR,
    "catmull_rom": Image.BICUBIC,  # Pillow's bicubic is a = -0.5: Catmull-Rom
    "lanczos3": Image.LANCZOS,
}


def resized(path, case, resample, draft_scale):
    im = Image.open(path)
    source = im.size
    # draft() returns the box of the reduced image that holds the whole source (its sides are
    # rounded up, so the last column or row can be partly padding), as thumbnail() uses it.
    whole = (0, 0, *source)
    if draft_scale and im.format == "JPEG":
        sw, sh = case["scaled"]
        drafted = im.draft("RGB", (sw * draft_scale, sh * draft_scale))
        if drafted is not None:
            whole = drafted[1]
    if im.mode not in ("RGB", "RGBA", "L"):
        im = im.convert("RGBA" if "A" in im.mode else "RGB")
    fx, fy = whole[2] / source[0], whole[3] / source[1]
    left, top, width, height = case["region"]
    box = (left * fx, top * fy, (left + width) * fx, (top + height) * fy)
    return im.resize(tuple(case["output"]), resample, box=box)


def main():
    request = json.load(sys.stdin)
    out = request["out"]
    for crop in request.get("crops", []):
        Image.open(crop["image"]).crop(tuple(crop["box"])).save(crop["out"], quality=90)
    for case in request["cases"]:
        resized(case["image"], case, Image.LANCZOS, 0).save(f"{out}/{case['id']}.reference.png")
        resample = FILTERS.get(case["filter"])
        if resample is None:
            continue
        resized(case["image"], case, resample, 1).save(f"{out}/{case['id']}.draft.png")
        resized(case["image"], case, resample, 2).save(f"{out}/{case['id']}.thumbnail.png")
    crops = len(request.get("crops", []))
    print(json.dumps({"crops": crops, "cases": len(request["cases"]), "pillow": Image.__version__}))


if __name__ == "__main__":
    main()
