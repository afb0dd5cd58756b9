#!/usr/bin/env python3
"""Pillow baseline of warren-bench's `image` scenario: the same job as Warren's image.resize
(open a JPEG from bytes, fit it into width x height keeping the aspect ratio, bilinear, JPEG at
the given quality into bytes), as fast as Pillow goes on one or several processes.

    pillow_baseline.py IMAGE WIDTH HEIGHT QUALITY full|draft PROCESSES MIN_SECONDS [--output OUT]

`draft` lets libjpeg-turbo decode at 1/2, 1/4 or 1/8 scale (Image.draft) for the requested
box: the largest scale whose image still covers it, the same scale Warren's bilinear job
decodes at. (thumbnail() would ask draft() for twice the box by default, reducing_gap=2.0: a
slower, sharper baseline.) Each process warms up, waits for the others, then runs jobs for at
least MIN_SECONDS. Prints one JSON line: summed jobs/s, CPU seconds per job (each process's
own user + system time), and the output's size; --output writes one output JPEG (for PSNR).
"""

import argparse
import io
import json
import math
import multiprocessing
import queue
import sys
import time

from PIL import Image

WARM_UP_JOBS = 3
MIN_JOBS = 3


def fit_size(w, h, box_w, box_h):
    """The output size of a fit, as Warren computes it: aspect kept, each side rounded half
    away from zero (Rust's f64::round), at least 1."""
    ratio = min(box_w / w, box_h / h)
    return tuple(max(1, math.floor(n * ratio + 0.5)) for n in (w, h))


def job(data, box, quality, draft):
    """One job: bytes in, JPEG bytes out; also the size the JPEG was decoded at."""
    im = Image.open(io.BytesIO(data))
    size = fit_size(im.width, im.height, *box)
    source_box = None
    if draft:
        # As thumbnail() does: draft() returns the region of the reduced image that maps onto
        # the whole source (the reduced sides are rounded up), and resize() samples only that.
        drafted = im.draft("RGB", box)
        if drafted is not None:
            source_box = drafted[1]
    decoded = im.size
    if im.mode != "RGB":  # a photo is RGB already; convert() would copy it
        im = im.convert("RGB")
    out = im.resize(size, Image.Resampling.BILINEAR, box=source_box)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=quality)
    return buf.getvalue(), decoded


def measure(data, box, quality, draft, min_seconds, barrier=None):
    for _ in range(WARM_UP_JOBS):
        job(data, box, quality, draft)
    if barrier is not None:
        barrier.wait()
    cpu, start, n = time.process_time(), time.perf_counter(), 0
    while True:
        job(data, box, quality, draft)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and n >= MIN_JOBS:
            break
    return {"jobs": n, "seconds": elapsed, "cpu_s": time.process_time() - cpu}


def worker(data, box, quality, draft, min_seconds, barrier, results):
    results.put(measure(data, box, quality, draft, min_seconds, barrier))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image")
    p.add_argument("width", type=int)
    p.add_argument("height", type=int)
    p.add_argument("quality", type=int)
    p.add_argument("mode", choices=["full", "draft"])
    p.add_argument("processes", type=int)
    p.add_argument("min_seconds", type=float)
    p.add_argument("--output", help="write one output JPEG here")
    args = p.parse_args()
    if args.processes < 1:
        p.error("processes must be at least 1")

    with open(args.image, "rb") as f:
        data = f.read()
    box, draft = (args.width, args.height), args.mode == "draft"
    output, decoded = job(data, box, args.quality, draft)
    if args.output:
        with open(args.output, "wb") as f:
            f.write(output)

    if args.processes == 1:
        runs = [measure(data, box, args.quality, draft, args.min_seconds)]
    else:
        # fork: the children share the parent's imported Pillow and the image bytes.
        ctx = multiprocessing.get_context("fork")
        # A process that dies before the barrier breaks it for the others after the timeout.
        barrier, results = ctx.Barrier(args.processes, timeout=120), ctx.Queue()
        procs = [
            ctx.Process(target=worker, args=(data, box, args.quality, draft, args.min_seconds, barrier, results))
            for _ in range(args.processes)
        ]
        for proc in procs:
            proc.start()
        # Read before joining: a child does not exit until its queued result is taken.
        runs = []
        while len(runs) < len(procs):
            try:
                runs.append(results.get(timeout=1.0))
            except queue.Empty:
                failed = [proc.exitcode for proc in procs if proc.exitcode not in (None, 0)]
                if failed:
                    for proc in procs:
                        proc.terminate()
                    sys.exit(f"pillow_baseline: worker processes exited with {failed}")
        for proc in procs:
            proc.join()

    jobs = sum(r["jobs"] for r in runs)
    with Image.open(io.BytesIO(output)) as out:
        out_size = out.size
    print(
        json.dumps(
            {
                "pillow": Image.__version__,
                "mode": args.mode,
                "processes": args.processes,
                "jobs": jobs,
                "seconds": max(r["seconds"] for r in runs),
                "jobs_per_s": sum(r["jobs"] / r["seconds"] for r in runs),
                "cpu_s_per_job": sum(r["cpu_s"] for r in runs) / jobs,
                "decoded_size": list(decoded),
                "output_size": list(out_size),
                "output_bytes": len(output),
            }
        )
    )


if __name__ == "__main__":
    main()
