"""What keying the cache by image content costs: hashing (and decode-checking) N generated JPEGs,
with an empty manifest and again with a manifest of unchanged files. Prints JSON.

    python benchmarks/image_hashing.py                # 10,000 JPEGs of 224 x 224 (~1 minute)
    python benchmarks/image_hashing.py --n 2000 --output hashing.json

Figures (seconds and items/s each):
- hash_cold: blake2b of every file's bytes, empty manifest (what a first load of a new catalogue
  pays for the content part of its fingerprint);
- hash_warm: the same files again with the manifest written by hash_cold: a stat and a manifest
  look-up per file, no reads;
- check_cold / check_warm: hash plus the decode check a dataset load runs (missing_images), empty
  manifest and then warm;
- fingerprint_warm: the whole catalogue fingerprint (table text + image digests) with a warm manifest.
"Cold" means an empty manifest; the files themselves were just written and sit in the OS page
cache (the benchmark does not drop the machine's caches), so disk reads are not part of it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(folder: Path, n: int, size: int, seed: int = 0) -> list[str]:
    """n distinct photo-like JPEGs (smooth gradients plus noise, quality 90)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(0.2, 1.5, 3)
        base = np.stack([x * a, y * b, (x + y) * c / 2], -1) % 256
        noise = rng.normal(0, 12, base.shape)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def figure(seconds: float, n: int, **extra) -> dict:
    return {"seconds": round(seconds, 3), "items_per_s": round(n / seconds, 1) if seconds else None, **extra}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of images")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mic-bench-hashing-"))
    os.environ["MIC_BENCH_CACHE"] = str(work / "default-cache")
    import polars as pl

    from bench import image_files
    from bench.data.catalog import content_fingerprint

    try:
        gen_s, paths = timed(lambda: generate(work / "images", args.n, args.size))
        total_mb = sum(os.path.getsize(p) for p in paths) / 2**20
        # files younger than the racy margin are always re-read; real catalogues are older than that
        time.sleep(image_files.RACY_NS / 1e9 + 0.2)
        load_before = os.getloadavg()[0]

        hashing = image_files.ImageManifest(work / "cache-hash")
        cold_s, cold = timed(lambda: hashing.scan(paths))
        cold_hashed = hashing.hashed
        warm_s, warm = timed(lambda: hashing.scan(paths))
        assert warm == cold, "a warm scan must give the same digests"
        warm_hashed = hashing.hashed

        checking = image_files.ImageManifest(work / "cache-check")
        check_cold_s, checked = timed(lambda: checking.scan(paths, check=True))
        check_cold_hashed = checking.hashed
        check_warm_s, _ = timed(lambda: checking.scan(paths, check=True))
        problems = sum(1 for f in checked.values() if f.problem)

        items = pl.DataFrame({"item_id": [f"i{i}" for i in range(len(paths))],
                              "title": [f"item {i}" for i in range(len(paths))], "image": paths})
        fp_s, _ = timed(lambda: content_fingerprint(items, cache_root=str(work / "cache-hash")))

        plain_s, _ = timed(lambda: [image_files.file_digest(p) for p in paths])
        report = {
            "images": args.n, "size_px": args.size, "total_mb": round(total_mb, 1),
            "generate_s": round(gen_s, 1),
            "hash_cold": figure(cold_s, args.n, files_read=cold_hashed, mb_per_s=round(total_mb / cold_s, 1)),
            "hash_warm": figure(warm_s, args.n, files_read=warm_hashed),
            "hash_plain_no_manifest": figure(plain_s, args.n),
            "check_cold": figure(check_cold_s, args.n, files_read=check_cold_hashed, not_pictures=problems),
            "check_warm": figure(check_warm_s, args.n, files_read=checking.hashed),
            "fingerprint_warm": figure(fp_s, args.n),
            "warm_over_cold": round(warm_s / cold_s, 3),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "cpu_count": os.cpu_count(),
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
