"""A product catalogue generated from a seed, so the default suites need no download.

Classification: labels come in three kinds, so that fusion methods can differ:
- title labels: a unique product word in the title; the image is drawn from a pool shared by all
  title labels (the image cannot tell them apart);
- image labels: a unique shape and colour; the title words are shared by all image labels;
- joint labels: blocks of four labels = 2 title words x 2 image patterns; each modality alone
  narrows a joint label to two candidates, only both together name it.
Labels are long-tailed (Zipf weights); a few listings lose their product word or picture cue.

Matching: products come in families (one brand's product line: brand, line word, model code,
photo layout) whose members are a grid of title variants (size, model number) x image variants
(accent colour). Two members of a family can share the title and differ only in the photo, or
share the photo and differ only in the title, so neither modality alone tells them apart;
families of a label draw brand and line word from a few each, so near-duplicates cross families.
Every listing of a product rewrites its title (abbreviations, typos, reordered words, marketing
words, a dropped model number) and retakes its photo (crop, zoom, small rotation, colour shift,
another background, a hidden accent).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field

from bench.data.catalog import Catalog
from bench.storage.paths import cache_dir
from bench.api.registry import PluginSpec

GENERATOR_VERSION = 2  # part of the cache key: bump whenever the same options give other data

BRANDS = ["acme", "nova", "zento", "lumina", "orbit", "vertex", "kora", "pixel", "sunny", "alpine",
          "maple", "coral", "ember", "falcon", "harbor", "ivory", "jade", "lotus", "metro", "nimbus"]
ADJECTIVES = ["premium", "classic", "compact", "deluxe", "portable", "modern", "vintage", "soft", "light",
              "durable", "slim", "large", "mini", "smart", "eco", "pro", "basic", "elegant"]
FILLERS = ["new", "sale", "original", "official", "genuine", "2024", "free shipping", "hot", "best", "gift",
           "top rated", "limited edition", "fast delivery", "bestseller", "authentic", "brand new", "hot deal",
           "discount", "high quality", "trending"]
SIZES = ["small", "medium", "large", "xl", "1 pc", "2 pcs", "set of 4", "pack of 3", "pack of 6", "250ml",
         "500ml", "1l", "10 cm", "20 cm", "one size"]
ABBREVIATIONS = {"premium": "prem", "classic": "clsc", "compact": "cmpct", "deluxe": "dlx", "portable": "port",
                 "modern": "mdrn", "vintage": "vtg", "durable": "dur", "elegant": "elgnt", "small": "sm",
                 "medium": "med", "large": "lg", "pack of 3": "3pk", "pack of 6": "6pk", "2 pcs": "2pc",
                 "1 pc": "1pc", "set of 4": "4 set", "one size": "os", "10 cm": "10cm", "20 cm": "20cm",
                 "500ml": "0.5l", "1l": "1000ml", "free shipping": "free ship", "limited edition": "ltd ed",
                 "professional": "pro"}
MODEL_LETTERS = ["k", "x", "m", "s", "t", "v"]
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
ACCENTS = [(255, 255, 255), (250, 220, 40), (60, 220, 230), (20, 20, 90), (150, 230, 60), (230, 40, 230),
           (190, 190, 190), (200, 170, 60)]
ACCENT_KINDS = ["dot", "band", "tag"]
STUDIO_BACKGROUNDS = [(250, 250, 250), (236, 236, 236), (246, 240, 226), (230, 238, 246)]


class SyntheticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_products: int = Field(500, ge=8, description="number of products (groups)")
    n_labels: int = Field(16, ge=4, le=48, description="number of leaf labels")
    max_listings: int = Field(4, ge=1, le=10, description="listings per product: 1..max, long-tailed")
    image_size: int = Field(48, ge=16, le=512, description="width and height of every picture, in pixels")
    zipf: float = Field(0.8, ge=0.0, le=3.0, description="label long-tail exponent (0 = uniform)")
    cue_dropout: float = Field(0.08, ge=0.0, le=1.0, description="chance a listing loses its title or picture cue")
    max_family: int = Field(6, ge=1, le=9, description=(
        "products per family (one brand's product line: title variants x image variants) are 1..max; "
        "1 gives no near-duplicate variants"))
    variant_dropout: float = Field(0.15, ge=0.0, le=1.0, description=(
        "chance a listing's title omits its size and model number, and, independently, that its photo "
        "hides the accent that tells image variants apart"))
    title_noise: float = Field(1.0, ge=0.0, le=2.0, description=(
        "scale of title rewording between listings (abbreviations, typos, reordering, marketing words); 0 = none"))
    image_noise: float = Field(1.0, ge=0.0, le=3.0, description=(
        "scale of photo variation between listings (crop, zoom, rotation, colour shift, background); 0 = none"))
    seed: int = Field(0, description="the same seed and options always give the same catalogue")
    pairs: bool = Field(False, description="also emit labelled pairs for task pairs: matches within a product, hard "
                                           "and random non-matches, split by product (synthetic_pairs.py)")
    pair_negatives: int = Field(2, ge=1, le=10, description="non-matching pairs per listing: one hard, the rest random")
    pair_max_matches: int = Field(6, ge=1, le=45, description="at most this many matching pairs per product")


PAIR_OPTIONS = {"pairs", "pair_negatives", "pair_max_matches"}  # derived after generation: not in the cache key


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
                plan.append({"kind": "joint", "words": [w], "patterns": [p], "block": block})
    for i, entry in enumerate(plan):
        cue = entry["words"][0] if entry["words"] else "-".join(entry["patterns"][0])
        entry["name"] = f"{entry['kind']}/{cue}" + (f"+{'-'.join(entry['patterns'][0])}" if entry["kind"] == "joint" else "")
    order = rng.permutation(len(plan))  # which labels are head and which are tail
    return [plan[i] for i in order]


def _outline(shape: str) -> list[tuple[float, float]]:
    """The shape's outline in unit coordinates (radius 1, centred on 0)."""
    if shape in ("circle", "ring", "blob"):
        ang = np.linspace(0, 2 * np.pi, 33)[:-1]
        return list(zip(np.cos(ang), np.sin(ang)))
    if shape == "square":
        return [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    if shape == "triangle":
        return [(0, -1), (1, 1), (-1, 1)]
    if shape == "diamond":
        return [(0, -1), (1, 0), (0, 1), (-1, 0)]
    if shape == "cross":
        a = 1 / 3
        return [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a),
                (-1, -a), (-a, -a)]
    if shape == "bar":
        return [(-1, -0.25), (1, -0.25), (1, 0.25), (-1, 0.25)]
    if shape == "star":
        pts = []
        for k in range(10):
            ang = np.pi / 2 + k * np.pi / 5
            rad = 1 if k % 2 == 0 else 1 / 2.5
            pts.append((rad * np.cos(ang), -rad * np.sin(ang)))
        return pts
    raise ValueError(shape)


def _accent_outline(kind: str, offset: tuple[float, float]) -> list[tuple[float, float]]:
    ox, oy = offset
    if kind == "dot":
        ang = np.linspace(0, 2 * np.pi, 13)[:-1]
        return [(ox + 0.4 * np.cos(a), oy + 0.4 * np.sin(a)) for a in ang]
    if kind == "band":
        return [(-0.9, oy - 0.2), (0.9, oy - 0.2), (0.9, oy + 0.2), (-0.9, oy + 0.2)]
    return [(ox - 0.35, oy - 0.35), (ox + 0.35, oy - 0.35), (ox + 0.35, oy + 0.35), (ox - 0.35, oy + 0.35)]


def _photo(size: int, shape: str, colour: tuple, accent: tuple | None, pose: dict,
           rng: np.random.Generator) -> Image.Image:
    """Draw one photo: the product (and its accent) placed by ``pose``, then colour shift and noise."""
    img = Image.new("RGB", (size, size), pose["bg"])
    d = ImageDraw.Draw(img)
    if pose["backdrop"] is not None:  # a lifestyle photo: a second surface behind the product
        d.rectangle([0, pose["horizon"] * size, size, size], fill=pose["backdrop"])
    cos, sin = np.cos(pose["angle"]), np.sin(pose["angle"])
    scale = pose["r"] * size

    def place(points):
        return [(pose["cx"] * size + scale * (cos * x - sin * y), pose["cy"] * size + scale * (sin * x + cos * y))
                for x, y in points]

    if shape == "ring":
        pts = place(_outline(shape))
        d.line(pts + pts[:1], fill=colour, width=max(2, int(scale / 3)), joint="curve")
    elif shape == "blob":  # no usable cue
        d.polygon(place([(x / 2, y / 2) for x, y in _outline(shape)]), fill=colour)
    else:
        d.polygon(place(_outline(shape)), fill=colour)
    if accent is not None:
        d.polygon(place(_accent_outline(pose["accent_kind"], pose["accent_offset"])), fill=accent)
    arr = np.asarray(img).astype(np.float32) * pose["gain"] + pose["shift"]
    arr = arr + rng.integers(-18, 19, size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _typo(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0:  # swap two letters
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:  # drop a letter
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]  # double a letter


def _listing_title(parts: list[str], noise: float, rng: np.random.Generator) -> str:
    """Reword a product's title parts the way another seller would."""
    keep = [rng.random() >= min(1.0, 0.3 * noise) for _ in parts]  # each seller leaves some parts out
    keep[2] = True  # the product word (the label cue, or its absence) is decided by cue_dropout
    parts = [p for p, k in zip(parts, keep) if p and k]
    for _ in range(int(rng.binomial(3, min(1.0, 0.25 * noise)))):
        parts.insert(int(rng.integers(len(parts) + 1)), str(rng.choice(FILLERS)))
    if rng.random() < 0.5 * noise:
        parts = list(rng.permutation(parts))
    words = []
    for part in parts:
        if part in ABBREVIATIONS and rng.random() < 0.35 * noise:
            part = ABBREVIATIONS[part]
        words.extend(_typo(w, rng) if rng.random() < 0.08 * noise else w for w in part.split())
    title = " ".join(words)
    roll = rng.random()
    return title.upper() if roll < 0.1 * noise else title.title() if roll < 0.25 * noise else title


def _pools(plan: list[dict]) -> dict[str, list[int]]:
    """Labels a family may mix: all title labels, all image labels, or one joint block."""
    pools: dict[str, list[int]] = {}
    for idx, entry in enumerate(plan):
        key = f"joint{entry['block']}" if entry["kind"] == "joint" else entry["kind"]
        pools.setdefault(key, []).append(idx)
    return pools


def _families(plan: list[dict], counts: np.ndarray, max_family: int,
              rng: np.random.Generator) -> list[list[tuple[int, int, int]]]:
    """Group the products into families; a family is a list of (title variant, image variant, label).

    The modality that names the label also varies the label within a family (title labels: each
    title variant has its own label; image labels: each image variant; joint: word x pattern), so
    the parts a family shares (brand, line word, photo layout) never reveal a label, and a family
    of two or more products always mixes labels.
    """
    remaining = counts.copy()
    pools = _pools(plan)
    keys = sorted(pools)
    families = []
    while remaining.sum():
        sizes = np.array([remaining[pools[k]].sum() for k in keys], dtype=float)
        key = keys[int(rng.choice(len(keys), p=sizes / sizes.sum()))]
        labels = [lab for lab in pools[key] if remaining[lab] > 0]
        share = remaining[labels] / remaining[labels].sum()
        n = int(rng.integers(1, max_family + 1))
        if n == 1 or len(labels) < 2:
            cells = [(0, 0, labels[int(rng.choice(len(labels), p=share))])]
        elif key.startswith("joint"):
            words = sorted({plan[lab]["words"][0] for lab in labels})
            patterns = sorted({plan[lab]["patterns"][0] for lab in labels})
            cells = [(words.index(plan[lab]["words"][0]), patterns.index(plan[lab]["patterns"][0]), lab)
                     for lab in labels]
            cells = [cells[k] for k in sorted(rng.permutation(len(cells))[:n])]
        else:
            n_named = min(len(labels), int(rng.integers(2, min(n, 3) + 1)))
            named = [int(v) for v in rng.choice(labels, size=n_named, replace=False, p=share)]
            n_other = int(np.ceil(n / n_named))
            grid = [(r, c) for r in range(n_named) for c in range(n_other)]
            grid = [grid[k] for k in sorted(rng.permutation(len(grid))[:n])]
            cells = [(r, c, named[r]) if key == "title" else (c, r, named[r]) for r, c in grid]
        family = []
        for t, i, lab in cells:
            if remaining[lab] > 0:
                remaining[lab] -= 1
                family.append((t, i, lab))
        families.append(family)
    return families


def generate(opts: SyntheticOptions, folder: Path) -> pl.DataFrame:
    """Write the images into ``folder`` and return the item table."""
    rng = np.random.default_rng(opts.seed)
    plan = _label_plan(opts.n_labels, rng)
    weights = 1.0 / np.arange(1, len(plan) + 1) ** opts.zipf
    weights /= weights.sum()
    # every label gets at least two products so each can reach train and test
    product_labels = list(range(len(plan))) * 2
    product_labels += list(rng.choice(len(plan), size=max(0, opts.n_products - len(product_labels)), p=weights))
    counts = np.bincount(product_labels, minlength=len(plan))
    listing_weights = 1.0 / np.arange(1, opts.max_listings + 1) ** 1.2
    listing_weights /= listing_weights.sum()
    tn, im = opts.title_noise, opts.image_noise
    rows = []
    pid = 0
    for family in _families(plan, counts, opts.max_family, rng):
        # what the family shares: brand, line word, model letter, shared title word, grey shape, layout
        brand, line = str(rng.choice(BRANDS)), str(rng.choice(ADJECTIVES))
        letter, number = str(rng.choice(MODEL_LETTERS)), int(rng.integers(1, 10)) * 10
        shared_word = str(rng.choice(SHARED_TITLE_WORDS))
        shared_shape = SHARED_POOL[int(rng.integers(len(SHARED_POOL)))]
        n_title = max(t for t, _, _ in family) + 1
        n_image = max(i for _, i, _ in family) + 1
        sizes = [str(v) for v in rng.choice(SIZES, size=n_title, replace=False)]
        models = [f"{letter}{number + int(k)}" for k in rng.choice(10, size=n_title, replace=False)]
        accents = [ACCENTS[int(k)] for k in rng.choice(len(ACCENTS), size=n_image, replace=False)]
        layout = {"bg": STUDIO_BACKGROUNDS[int(rng.integers(len(STUDIO_BACKGROUNDS)))],
                  "cx": rng.uniform(0.42, 0.58), "cy": rng.uniform(0.42, 0.58), "r": rng.uniform(0.22, 0.3),
                  "accent_kind": str(rng.choice(ACCENT_KINDS)),
                  "accent_offset": (rng.uniform(-0.45, 0.45), rng.uniform(-0.45, 0.45))}
        for t, i, label_idx in family:
            entry = plan[label_idx]
            word = entry["words"][0] if entry["words"] else shared_word
            shape, colour_name = entry["patterns"][0] if entry["patterns"] else shared_shape
            colour = GREY if colour_name == "grey" else COLOURS[colour_name]
            n_listings = int(rng.choice(opts.max_listings, p=listing_weights)) + 1
            for lid in range(n_listings):
                item_id = f"p{pid:05d}-{lid}"
                cue = word if rng.random() >= opts.cue_dropout else str(rng.choice(SHARED_TITLE_WORDS))
                variant = [] if rng.random() < opts.variant_dropout else [models[t], sizes[t]]
                title = _listing_title([brand, line, cue, *variant], tn, rng)
                lifestyle = rng.random() < 0.15 * im
                pose = {**layout,
                        "cx": layout["cx"] + rng.normal(0, 0.03 * im), "cy": layout["cy"] + rng.normal(0, 0.03 * im),
                        "r": layout["r"] * float(np.exp(rng.normal(0, 0.07 * im))),
                        "angle": float(np.deg2rad(rng.normal(0, 5 * im))),
                        "gain": float(np.exp(rng.normal(0, 0.035 * im))),
                        "shift": rng.normal(0, 5 * im, size=3).astype(np.float32),
                        "backdrop": tuple(int(v) for v in rng.integers(90, 230, size=3)) if lifestyle else None,
                        "horizon": rng.uniform(0.45, 0.8)}
                if lifestyle:
                    pose["bg"] = tuple(int(v) for v in rng.integers(150, 256, size=3))
                pic_shape = shape if rng.random() >= opts.cue_dropout else "blob"
                accent = None if rng.random() < opts.variant_dropout else accents[i]
                _photo(opts.image_size, pic_shape, colour, accent, pose, rng).save(folder / f"{item_id}.png",
                                                                                   format="PNG")
                rows.append({"item_id": item_id, "title": title, "image": str(folder / f"{item_id}.png"),
                             "label": entry["name"], "group": f"p{pid:05d}"})
            pid += 1
    return pl.DataFrame(rows).sort("item_id")


def load(opts: SyntheticOptions, ctx=None) -> Catalog:
    """Generate once per option set into the cache; later calls read the cached table."""
    key = hashlib.sha256(json.dumps({"generator": GENERATOR_VERSION, **opts.model_dump(exclude=PAIR_OPTIONS)},
                                    sort_keys=True)
                         .encode()).hexdigest()[:12]
    base = cache_dir(getattr(ctx, "cache_dir", None)) / "synthetic_catalog" / key
    table = base / "items.parquet"
    if not table.exists():
        tmp = base.with_name(base.name + f".tmp{uuid.uuid4().hex}")  # never the global RNG: trials seed it
        (tmp / "images").mkdir(parents=True)
        items = generate(opts, tmp / "images")
        items = items.with_columns(pl.col("image").str.replace(str(tmp), str(base), literal=True))
        items.write_parquet(tmp / "items.parquet")
        try:
            tmp.rename(base)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    items = pl.read_parquet(table)
    pairs = None
    if opts.pairs:
        from .synthetic_pairs import derive_pairs

        pairs = derive_pairs(items, negatives=opts.pair_negatives, max_matches=opts.pair_max_matches, seed=opts.seed)
    return Catalog(name="synthetic_catalog", items=items, source=f"synthetic_catalog(seed={opts.seed})", pairs=pairs)


SPECS = [PluginSpec("dataset", "synthetic_catalog",
                    "generated product catalogue: long-tailed labels, title-only, image-only and joint cues, product groups",
                    load, SyntheticOptions)]
