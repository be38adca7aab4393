"""A synthetic stand-in for Kaggle's Dogs vs. Cats folder: ``cat.0.jpg`` ... ``dog.12499.jpg``.

    python benchmarks/kaggle_photos.py FOLDER [--count 25000] [--seed 0]

What makes the real set expensive is its files, not its content: JPEGs of 300-500 pixels a
side, 20-60 KB each, 25,000 of them, half cats. These photos match that: each is the
project's own animal face (:func:`lifecycle.synthetic.draw_animal`, so the classes stay
learnable) scaled to a random size between 300 and 500 pixels a side, with coarse colour
blotches, fur-like mid-frequency texture and sensor grain on top, so that a JPEG encoder
(quality 75-92) has photo-like entropy to spend bytes on. Photo ``i`` depends only on
``(seed, i)``, so the folder is identical on every machine and a larger folder extends a
smaller one. The drawing runs in a process pool sized to the cores.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lifecycle.synthetic import draw_animal  # noqa: E402

MIN_SIDE, MAX_SIDE = 300, 500
QUALITY = (75, 92)


def photo_name(index: int) -> str:
    """Even indices are cats, odd ones dogs, numbered per class as Kaggle does."""
    return f"{'cat' if index % 2 == 0 else 'dog'}.{index // 2}.jpg"


def draw_photo(index: int, seed: int = 0) -> bytes:
    """The JPEG bytes of photo ``index``."""
    rng = np.random.default_rng((seed, index))
    label = "cat" if index % 2 == 0 else "dog"
    width, height = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
    face = draw_animal(label, rng).resize((width, height), Image.Resampling.BICUBIC)
    blotches = _upsampled(rng.integers(0, 256, (height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8), width, height,
                          Image.Resampling.BICUBIC)
    fur = _upsampled(rng.integers(0, 256, (height // 4, width // 4), dtype=np.uint8), width, height,
                     Image.Resampling.BILINEAR)[..., None]
    grain = rng.normal(0.0, rng.uniform(2.5, 7.0), (height, width, 1)).astype(np.float32)
    pixels = np.asarray(face, dtype=np.float32) + 0.25 * blotches + 0.15 * fur + grain
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=int(rng.integers(QUALITY[0], QUALITY[1] + 1)))
    return buffer.getvalue()


def _upsampled(noise: np.ndarray, width: int, height: int, resample: Image.Resampling) -> np.ndarray:
    """Zero-mean float noise: ``noise`` resized to the photo, so its detail has the scale of its cells."""
    return np.asarray(Image.fromarray(noise).resize((width, height), resample), dtype=np.float32) - 128.0


def _write_one(job: tuple[Path, int, int]) -> int:
    folder, index, seed = job
    target = folder / photo_name(index)
    if not target.is_file():
        data = draw_photo(index, seed)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, target)
    return target.stat().st_size


def write_photos(folder: Path, count: int, seed: int = 0, workers: int | None = None) -> list[int]:
    """Make sure ``folder`` holds photos 0 .. count-1 (existing ones are kept); return their sizes in bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    workers = workers or len(os.sched_getaffinity(0))
    jobs = [(folder, index, seed) for index in range(count)]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_write_one, jobs, chunksize=64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=25_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = np.array(write_photos(args.folder, args.count, args.seed))
    print(f"{len(sizes)} photos in {args.folder}: {sizes.sum() / 2**20:.0f} MiB, "
          f"{np.percentile(sizes, 5) / 1e3:.0f}-{np.percentile(sizes, 95) / 1e3:.0f} KB (5th-95th percentile), "
          f"median {np.median(sizes) / 1e3:.0f} KB")


if __name__ == "__main__":
    main()
