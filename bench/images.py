"""Lazy image decoding with Pillow: RGB, EXIF orientation, clear errors for bad files."""
from __future__ import annotations

import os

from PIL import Image, ImageOps, UnidentifiedImageError

from bench.errors import BenchError

BLANK_SIZE = (32, 32)
Image.MAX_IMAGE_PIXELS = 300_000_000  # big catalogue photos are fine; decompression bombs are not


def load_image(path: str | None, *, policy: str = "error", item_id: str = "?", draft_size: int | None = None) -> Image.Image:
    """Open one product image as RGB.

    ``policy`` decides what a missing or unreadable file becomes: "error" raises a BenchError
    naming the item and file, "blank"/"skip" give a grey image (rows are skipped up front by
    the dataset check, so a file that vanished later still does not crash a long run).
    ``draft_size`` lets JPEG decoding shrink very large photos cheaply before resizing.
    """
    if path is None or path == "":
        if policy == "error":
            raise BenchError(f"item {item_id} has no image", field="image",
                             fix="set missing_images: blank or skip in the dataset options")
        return Image.new("RGB", BLANK_SIZE, (128, 128, 128))
    try:
        with Image.open(path) as img:
            if draft_size and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img = ImageOps.exif_transpose(img)
            return img.convert("RGB")
    except (FileNotFoundError, UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if policy == "error":
            reason = "is missing" if not os.path.exists(path) else f"cannot be decoded ({exc})"
            raise BenchError(f"image of item {item_id} {reason}", file=path, field="image",
                             fix="replace the file, or set missing_images: blank or skip in the dataset options") from None
        return Image.new("RGB", BLANK_SIZE, (128, 128, 128))
