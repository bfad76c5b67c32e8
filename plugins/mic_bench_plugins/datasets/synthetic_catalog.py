"""A product catalogue generated from a seed, so the default suite needs no download.

Labels come in three kinds, so that fusion methods can differ:
- title labels: a unique product word in the title; the image is drawn from a pool shared by all
  title labels (the image cannot tell them apart);
- image labels: a unique shape and colour; the title words are shared by all image labels;
- joint labels: blocks of four labels = 2 title words x 2 image patterns; each modality alone
  narrows a joint label to two candidates, only both together name it.
Labels are long-tailed (Zipf weights). Each product (group) has 1-4 listings with reworded
titles and jittered photos, for matching. A few listings lose their product word or picture
cue (noise), as real catalogues do.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field

from bench.catalog import Catalog
from bench.paths import cache_dir
from bench.registry import PluginSpec

BRANDS = ["acme", "nova", "zento", "lumina", "orbit", "vertex", "kora", "pixel", "sunny", "alpine",
          "maple", "coral", "ember", "falcon", "harbor", "ivory", "jade", "lotus", "metro", "nimbus"]
ADJECTIVES = ["premium", "classic", "compact", "deluxe", "portable", "modern", "vintage", "soft", "light",
              "durable", "slim", "large", "mini", "smart", "eco", "pro", "basic", "elegant"]
FILLERS = ["new", "sale", "original", "official", "genuine", "2024", "free shipping", "hot", "best", "gift"]
SIZES = ["small", "medium", "xl", "1 pc", "2 pcs", "set", "pack of 3", "500ml", "10 cm", "one size"]
PRODUCT_WORDS = ["lipstick", "sneaker", "kettle", "drill", "stapler", "blanket", "headphones", "backpack",
                 "toaster", "umbrella", "wallet", "notebook", "candle", "sunglasses", "keyboard", "pillow",
                 "bracelet", "shampoo", "scarf", "lantern", "mug", "charger", "helmet", "perfume"]
FAMILY_WORDS = ["case", "cover", "holder", "stand", "bag", "box", "mat", "strap", "bottle", "organizer"]
SHARED_TITLE_WORDS = ["accessory", "item", "product", "goods", "piece"]
SHAPES = ["circle", "square", "triangle", "diamond", "cross", "ring", "bar", "star"]
COLOURS = {"red": (210, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "orange": (240, 140, 20),
           "purple": (130, 50, 170), "teal": (20, 150, 150), "black": (25, 25, 25), "pink": (235, 110, 170),
           "brown": (120, 75, 30), "olive": (120, 120, 20)}
SHARED_POOL = [("circle", "grey"), ("square", "grey"), ("triangle", "grey")]
GREY = (130, 130, 130)


class SyntheticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_products: int = Field(500, ge=8, description="number of products (groups)")
    n_labels: int = Field(16, ge=4, le=48, description="number of leaf labels")
    max_listings: int = Field(4, ge=1, le=10, description="listings per product: 1..max, long-tailed")
    image_size: int = Field(48, ge=16, le=512)
    zipf: float = Field(0.8, ge=0.0, le=3.0, description="label long-tail exponent (0 = uniform)")
    cue_dropout: float = Field(0.08, ge=0.0, le=1.0, description="chance a listing loses its title or picture cue")
    seed: int = 0


def _label_plan(n_labels: int, rng: np.random.Generator) -> list[dict]:
    """Decide for each label which title word and which picture pattern identify it."""
    n_joint = (n_labels // 3) // 4 * 4 or 4
    n_rest = n_labels - n_joint
    n_text = n_rest // 2
    n_image = n_rest - n_text
    patterns = [(s, c) for c in COLOURS for s in SHAPES]
    rng.shuffle(patterns)
    words = list(PRODUCT_WORDS)
    rng.shuffle(words)
    families = list(FAMILY_WORDS)
    plan = []
    for i in range(n_text):
        plan.append({"kind": "title", "words": [words.pop()], "patterns": None})
    for i in range(n_image):
        plan.append({"kind": "image", "words": None, "patterns": [patterns.pop()]})
    for block in range(n_joint // 4):
        fam_words = [f"{words.pop()} {families[block % len(families)]}", f"{words.pop()} {families[(block + 1) % len(families)]}"]
        fam_patterns = [patterns.pop(), patterns.pop()]
        for w in fam_words:
            for p in fam_patterns:
                plan.append({"kind": "joint", "words": [w], "patterns": [p]})
    for i, entry in enumerate(plan):
        cue = entry["words"][0] if entry["words"] else "-".join(entry["patterns"][0])
        entry["name"] = f"{entry['kind']}/{cue}" + (f"+{'-'.join(entry['patterns'][0])}" if entry["kind"] == "joint" else "")
    order = rng.permutation(len(plan))  # which labels are head and which are tail
    return [plan[i] for i in order]


def _draw(path: Path, size: int, shape: str, colour: tuple, bg: tuple, cx: float, cy: float, r: float,
          noise: np.random.Generator) -> None:
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    x, y, rr = cx * size, cy * size, r * size
    box = [x - rr, y - rr, x + rr, y + rr]
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    elif shape == "triangle":
        d.polygon([(x, y - rr), (x - rr, y + rr), (x + rr, y + rr)], fill=colour)
    elif shape == "diamond":
        d.polygon([(x, y - rr), (x + rr, y), (x, y + rr), (x - rr, y)], fill=colour)
    elif shape == "cross":
        d.rectangle([x - rr, y - rr / 3, x + rr, y + rr / 3], fill=colour)
        d.rectangle([x - rr / 3, y - rr, x + rr / 3, y + rr], fill=colour)
    elif shape == "ring":
        d.ellipse(box, outline=colour, width=max(2, int(rr / 3)))
    elif shape == "bar":
        d.rectangle([x - rr, y - rr / 4, x + rr, y + rr / 4], fill=colour)
    elif shape == "star":
        pts = []
        for k in range(10):
            ang = np.pi / 2 + k * np.pi / 5
            rad = rr if k % 2 == 0 else rr / 2.5
            pts.append((x + rad * np.cos(ang), y - rad * np.sin(ang)))
        d.polygon(pts, fill=colour)
    else:  # "blob": no usable cue
        d.ellipse([x - rr / 2, y - rr / 2, x + rr / 2, y + rr / 2], fill=colour)
    arr = np.asarray(img).astype(np.int16)
    arr = arr + noise.integers(-18, 19, size=arr.shape)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, format="PNG")


def generate(opts: SyntheticOptions, folder: Path) -> pl.DataFrame:
    """Write the images into ``folder`` and return the item table."""
    rng = np.random.default_rng(opts.seed)
    plan = _label_plan(opts.n_labels, rng)
    weights = 1.0 / np.arange(1, len(plan) + 1) ** opts.zipf
    weights /= weights.sum()
    # every label gets at least two products so each can reach train and test
    product_labels = list(range(len(plan))) * 2
    product_labels += list(rng.choice(len(plan), size=max(0, opts.n_products - len(product_labels)), p=weights))
    listing_weights = 1.0 / np.arange(1, opts.max_listings + 1) ** 1.2
    listing_weights /= listing_weights.sum()
    rows = []
    for pid, label_idx in enumerate(product_labels):
        entry = plan[label_idx]
        word = entry["words"][0] if entry["words"] else str(rng.choice(SHARED_TITLE_WORDS))
        shape, colour_name = (entry["patterns"][0] if entry["patterns"]
                              else SHARED_POOL[int(rng.integers(len(SHARED_POOL)))])
        colour = GREY if colour_name == "grey" else COLOURS[colour_name]
        brand, adj = str(rng.choice(BRANDS)), str(rng.choice(ADJECTIVES))
        size_word = str(rng.choice(SIZES))
        bg = tuple(int(v) for v in rng.integers(200, 256, size=3))
        cx, cy, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.18, 0.3)
        n_listings = int(rng.choice(opts.max_listings, p=listing_weights)) + 1
        for lid in range(n_listings):
            item_id = f"p{pid:05d}-{lid}"
            cue = word if rng.random() >= opts.cue_dropout else str(rng.choice(SHARED_TITLE_WORDS))
            parts = [brand, adj, cue, size_word]
            if rng.random() < 0.5:
                parts.insert(int(rng.integers(len(parts) + 1)), str(rng.choice(FILLERS)))
            if lid > 0 and rng.random() < 0.5:
                parts = [parts[0]] + list(rng.permutation(parts[1:]))
            title = " ".join(parts)
            if rng.random() < 0.1:
                title = title.upper()
            pic_shape = shape if rng.random() >= opts.cue_dropout else "blob"
            jitter = rng.normal(0, 0.03, size=3) if lid else np.zeros(3)
            _draw(folder / f"{item_id}.png", opts.image_size, pic_shape, colour, bg,
                  cx + jitter[0], cy + jitter[1], max(0.1, r + jitter[2]), rng)
            rows.append({"item_id": item_id, "title": title, "image": str(folder / f"{item_id}.png"),
                         "label": entry["name"], "group": f"p{pid:05d}"})
    return pl.DataFrame(rows)


def load(opts: SyntheticOptions, ctx=None) -> Catalog:
    """Generate once per option set into the cache; later calls read the cached table."""
    key = hashlib.sha256(json.dumps(opts.model_dump(), sort_keys=True).encode()).hexdigest()[:12]
    base = cache_dir(getattr(ctx, "cache_dir", None)) / "synthetic_catalog" / key
    table = base / "items.parquet"
    if not table.exists():
        tmp = base.with_name(base.name + f".tmp{np.random.randint(1 << 30)}")
        (tmp / "images").mkdir(parents=True)
        items = generate(opts, tmp / "images")
        items = items.with_columns(pl.col("image").str.replace(str(tmp), str(base), literal=True))
        items.write_parquet(tmp / "items.parquet")
        try:
            tmp.rename(base)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return Catalog(name="synthetic_catalog", items=pl.read_parquet(table), source=f"synthetic_catalog(seed={opts.seed})")


SPECS = [PluginSpec("dataset", "synthetic_catalog",
                    "generated product catalogue: long-tailed labels, title-only, image-only and joint cues, product groups",
                    load, SyntheticOptions)]
