"""The embedded default dataset: deterministic synthetic cats and dogs, messy on purpose.

There is no internet at run time, so ``ingest`` draws its own data. Each animal is a face
with ears and a snout; the class shows in two cues whose distributions overlap (cats:
pointy upright ears and a short snout; dogs: drooping ears and a long snout), so a small
CNN learns it well but not perfectly. Everything else (fur and background colour, pose,
scale, position, noise, file size and mode) is drawn independently of the class.

The raw manifest then gets every defect the preprocessing steps exist to fix: duplicate
rows, one image under two paths, an irrelevant column, stray whitespace in paths, missing
labels, label spelling variants, missing, truncated and corrupt files, mixed modes and
sizes, and a 70/30 class imbalance. Each image is drawn from its own seed
``(seed, index)``, so the dataset is identical on every machine and cheap to extend.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from lifecycle.core.progress import progress
from lifecycle.core.schema import SyntheticParams

CANVAS = 128
LABEL_SPELLINGS = {
    "cat": ["cat", "Cat", "CAT", " cat", "cat "],
    "dog": ["dog", "Dog", "DOG", " dog", "dog "],
}


def draw_animal(label: str, rng: np.random.Generator, separation: float = 1.0) -> Image.Image:
    """One 128x128 RGB face; ``label`` shifts the ear and snout cues, nothing else."""
    sign = 1.0 if label == "cat" else -1.0
    ear_point = float(np.clip(0.5 + sign * 0.3 * separation + rng.normal(0, 0.15), 0, 1))
    snout = float(np.clip(0.5 - sign * 0.15 * separation + rng.normal(0, 0.2), 0, 1))
    whiskers = rng.random() < (0.5 + sign * 0.3 * min(separation, 1.6))

    background = tuple(int(c) for c in rng.integers(40, 230, size=3))
    image = Image.new("RGB", (CANVAS, CANVAS), background)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):  # clutter, independent of the class
        x, y = rng.integers(0, CANVAS, size=2)
        r = int(rng.integers(6, 22))
        shade = tuple(int(c) for c in rng.integers(20, 240, size=3))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=shade)

    fur = tuple(int(c) for c in rng.integers(60, 250, size=3))
    dark = tuple(max(0, c - 90) for c in fur)
    cx = CANVAS / 2 + rng.normal(0, 7)
    cy = CANVAS / 2 + 8 + rng.normal(0, 6)
    r = rng.uniform(24, 33)

    for side in (-1, 1):
        base_angle = math.radians(-90 + side * rng.uniform(30, 45))
        bx, by = cx + r * math.cos(base_angle), cy + r * math.sin(base_angle)
        droop = math.radians((1 - ear_point) * 150)  # 0: upright, 150 degrees: hanging down
        length = r * (0.95 - 0.35 * ear_point)
        half_base = r * (0.15 + 0.25 * (1 - ear_point))
        direction = math.radians(-90) + side * (math.radians(15) + droop)
        tx, ty = bx + length * math.cos(direction), by + length * math.sin(direction)
        nx, ny = -math.sin(direction), math.cos(direction)
        bulge = (1 - ear_point) * half_base * 1.2
        mx, my = (bx + tx) / 2, (by + ty) / 2
        polygon = [
            (bx + nx * half_base, by + ny * half_base),
            (mx + nx * (half_base * 0.6 + bulge), my + ny * (half_base * 0.6 + bulge)),
            (tx, ty),
            (mx - nx * (half_base * 0.6 + bulge), my - ny * (half_base * 0.6 + bulge)),
            (bx - nx * half_base, by - ny * half_base),
        ]
        draw.polygon(polygon, fill=dark if rng.random() < 0.5 else fur)

    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur)
    snout_w = r * 0.45
    snout_h = r * (0.2 + 0.45 * snout)
    sy = cy + r * 0.25
    draw.ellipse([cx - snout_w, sy - snout_h * 0.4, cx + snout_w, sy + snout_h], fill=tuple(min(255, c + 40) for c in fur))
    draw.ellipse([cx - 4, sy - 3, cx + 4, sy + 3], fill=(25, 20, 20))
    if whiskers:
        for side in (-1, 1):
            for dy in (-3, 1, 5):
                draw.line([cx + side * 6, sy + dy * 0.5, cx + side * r * 1.05, sy + dy * 1.6], fill=(20, 20, 20), width=1)
    for side in (-1, 1):
        ex, ey = cx + side * r * 0.4, cy - r * 0.2
        draw.ellipse([ex - 3.5, ey - 3.5, ex + 3.5, ey + 3.5], fill=(15, 15, 15))

    image = image.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR, fillcolor=background)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.2))))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(3, 12), size=(CANVAS, CANVAS, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _encode(image: Image.Image, mode_roll: float, params: SyntheticParams) -> tuple[bytes, str]:
    """Save in one of the modes real collections mix; returns the bytes and the extension."""
    buffer = io.BytesIO()
    cuts = np.cumsum([params.grayscale, params.rgba, params.palette])
    if mode_roll < cuts[0]:
        image.convert("L").save(buffer, format="JPEG", quality=90)
        return buffer.getvalue(), "jpg"
    if mode_roll < cuts[1]:
        image.convert("RGBA").save(buffer, format="PNG")
        return buffer.getvalue(), "png"
    if mode_roll < cuts[2]:
        image.convert("P", palette=Image.Palette.ADAPTIVE, colors=128).save(buffer, format="PNG")
        return buffer.getvalue(), "png"
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "jpg"


def generate(params: SyntheticParams, seed: int, out_dir: Path) -> pd.DataFrame:
    """Write images under ``out_dir/images`` and return the messy raw manifest.

    Paths in the manifest are relative to ``out_dir``; the caller writes the CSV.
    """
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    order_rng = np.random.default_rng([seed, 0])
    n_cats = round(params.count * params.cat_fraction)
    labels = np.array(["cat"] * n_cats + ["dog"] * (params.count - n_cats))
    order_rng.shuffle(labels)

    rows = []
    for index in progress(range(params.count), desc="ingest: drawing images", total=params.count):
        rng = np.random.default_rng([seed, 1, index])
        label = str(labels[index])
        image = draw_animal(label, rng, params.separation)
        width = int(rng.integers(params.min_size, params.max_size + 1))
        aspect = rng.uniform(0.8, 1.25)
        height = int(np.clip(round(width * aspect), params.min_size, params.max_size))
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        data, ext = _encode(image, float(rng.random()), params)
        name = f"images/img_{index:05d}.{ext}"
        (out_dir / name).write_bytes(data)
        rows.append({"image_path": name, "label": label})

    defects = np.random.default_rng([seed, 2])
    manifest = pd.DataFrame(rows)
    n = len(manifest)

    def pick(fraction: float) -> np.ndarray:
        return defects.choice(n, size=int(round(n * fraction)), replace=False)

    for i in pick(params.truncated_files):
        path = out_dir / manifest.at[i, "image_path"]
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    for i in pick(params.corrupt_files):
        path = out_dir / manifest.at[i, "image_path"]
        path.write_bytes(defects.bytes(int(defects.integers(200, 2000))))

    copies = []
    for copy_number, i in enumerate(pick(params.duplicate_images)):
        source = out_dir / manifest.at[i, "image_path"]
        name = f"images/copy_{copy_number:04d}{source.suffix}"
        (out_dir / name).write_bytes(source.read_bytes())
        copies.append({"image_path": name, "label": manifest.at[i, "label"]})
    missing = [
        {"image_path": f"images/lost_{k:04d}.jpg", "label": str(defects.choice(["cat", "dog"]))}
        for k in range(int(round(n * params.missing_files)))
    ]
    manifest = pd.concat([manifest, pd.DataFrame(copies), pd.DataFrame(missing)], ignore_index=True)

    spellings = [
        LABEL_SPELLINGS[label][int(defects.integers(0, len(LABEL_SPELLINGS[label])))]
        for label in manifest["label"]
    ]
    manifest["label"] = spellings
    n = len(manifest)
    manifest.loc[pick(params.missing_labels), "label"] = np.nan
    for i in pick(params.stray_whitespace):
        manifest.at[i, "image_path"] = " " * int(defects.integers(1, 3)) + manifest.at[i, "image_path"] + " "
    manifest["Unnecessary_Column"] = defects.integers(1000, 9999, size=n).astype(str)
    manifest = pd.concat([manifest, manifest.iloc[pick(params.duplicate_rows)]], ignore_index=True)
    shuffled = np.random.default_rng([seed, 3]).permutation(len(manifest))
    return manifest.iloc[shuffled].reset_index(drop=True)
