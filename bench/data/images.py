"""Image decoding with Pillow: one RGB picture per file, or a clear BenchError naming the file.

Every kind of file is turned into the RGB picture a person would see: EXIF rotation applied,
16-bit grey scaled (not clipped) to 8 bits, CMYK through its ICC profile when it has one,
transparent pixels laid onto white. A file that is not a whole picture (empty, truncated, not
an image, a canvas above the pixel limit) is an error, never a grey stand-in: which items may
train on a placeholder is decided once, when the catalogue loads (the dataset's
``missing_images``), and those items reach the encoders with no image at all.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import IO, Iterable

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from bench.errors import BenchError
from bench.data.file_reads import NotRegularFile, env_limit, open_regular, read_at_most

BLANK_SIZE = (32, 32)
BLANK_COLOUR = (128, 128, 128)
MAX_PIXELS_ENV = "MIC_BENCH_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000: above any catalogue photo, far below a decompression bomb
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# Modes Pillow's convert("RGB") turns into the picture a viewer shows (LAB and HSV included, 8 bits a
# channel). 32-bit integer ("I") and float ("F") pixels have no range of their own: to_rgb maps
# the ranges that have a known meaning and refuses the rest, as it refuses any mode not listed.
CONVERTIBLE_MODES = ("1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "LA", "La", "PA")
MAX_BYTES_ENV = "MIC_BENCH_MAX_IMAGE_BYTES"
DEFAULT_MAX_BYTES = 64 << 20  # 64 MiB: above any catalogue photo; a file beyond it is not read into memory
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
                 Image.DecompressionBombWarning, TypeError, IndexError, KeyError, ZeroDivisionError)
PLACEHOLDER_FIX = ("replace the file; or set missing_images: skip (drop such items) or missing_images: blank "
                   "(train them on a counted grey placeholder) in the dataset options")


def max_image_pixels() -> int:
    """The largest canvas (width x height) a file may declare: $MIC_BENCH_MAX_IMAGE_PIXELS or 64 M."""
    return env_limit(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS, "pixel count", "a number such as 100000000")


def max_image_bytes() -> int:
    """The largest image file read: $MIC_BENCH_MAX_IMAGE_BYTES or 64 MiB."""
    return env_limit(MAX_BYTES_ENV, DEFAULT_MAX_BYTES, "number of bytes", "a number such as 200000000")


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """A picture file's bytes: a regular file (a FIFO or device would block or never end) of at most
    ``max_image_bytes()``; otherwise ImageDecodeError with the reason."""
    limit = max_image_bytes()
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            data = read_at_most(handle, limit) if size <= limit else None
    except NotRegularFile as exc:
        raise ImageDecodeError(str(exc)) from None
    except FileNotFoundError:
        raise ImageDecodeError("is missing") from None
    except IsADirectoryError:
        raise ImageDecodeError("is a folder, not a file") from None
    except OSError as exc:
        raise ImageDecodeError(f"cannot be read ({exc.strerror or exc})") from None
    if data is None:
        raise ImageDecodeError(f"is {size} bytes, above the limit of {limit} bytes per image file (raise "
                               f"{MAX_BYTES_ENV} if the picture is real)")
    return data


class ImageDecodeError(ValueError):
    """Why one file is not a usable picture (a short reason, without the path)."""


def decode_image(source: str | os.PathLike | IO[bytes], draft_size: int | None = None) -> Image.Image:
    """Decode a file (or bytes stream) into an RGB image, or raise ImageDecodeError with the reason.

    The declared canvas is checked against ``max_image_pixels()`` right after the header is read,
    before any pixel is allocated. ``draft_size`` lets JPEG decoding shrink big photos by DCT
    scaling while both sides stay at least ``draft_size``.
    """
    if isinstance(source, (str, os.PathLike)):
        source = io.BytesIO(read_image_bytes(source))
    limit = max_image_pixels()
    # the header is read without Pillow's bomb guard (it would name twice our limit): our own check
    # below names the canvas; Pillow's guard is back at our limit for whatever load() does.
    # Truncated files are errors even if a library allowed them.
    pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    load_truncated, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
                if width * height > limit:
                    raise ImageDecodeError(_bomb_reason(width, height, limit))
                Image.MAX_IMAGE_PIXELS = limit
                if draft_size and img.format == "JPEG":
                    img.draft("RGB", (draft_size, draft_size))
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"declares a canvas above the limit of {limit} pixels ({exc}); raise "
                               f"{MAX_PIXELS_ENV} if the picture is real") from None
    except FileNotFoundError:
        raise ImageDecodeError("is missing") from None
    except UnidentifiedImageError:
        empty = isinstance(source, io.BytesIO) and not source.getbuffer().nbytes
        raise ImageDecodeError("is empty (0 bytes)" if empty else "is not an image Pillow can read") from None
    except DECODE_ERRORS as exc:
        raise ImageDecodeError(f"cannot be decoded ({type(exc).__name__}: {exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = pillow_limit, load_truncated


def _bomb_reason(width: int, height: int, limit: int) -> str:
    return (f"declares a {width} x {height} canvas ({width * height} pixels), above the limit of {limit} pixels "
            f"(raise {MAX_PIXELS_ENV} if the picture is real)")


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB as displayed: 16-bit scaled to 8-bit, CMYK via its ICC profile, transparency onto white.

    32-bit pixels are scaled from the range their values mean: integers within 0..65535 as 16-bit
    grey (how 16-bit data often arrives in mode I), floats within 0..1 as intensities. Any other
    range, a NaN or infinite pixel, or a mode not known to convert raises ImageDecodeError: a
    clipped picture would train as black and white without a word.
    """
    if img.mode in SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        return _grey_from_wide(img)
    if img.mode not in CONVERTIBLE_MODES:
        raise ImageDecodeError(f"has pixel mode {img.mode}, which has no known conversion to RGB; save it as "
                               "8-bit RGB or grey")
    if img.mode == "CMYK":
        return _cmyk_to_rgb(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _grey_from_wide(img: Image.Image) -> Image.Image:
    """16- and 32-bit grey (modes I;16*, I, F) as 8-bit RGB, scaled from the range the values mean."""
    values = np.asarray(img, dtype=np.float64)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise ImageDecodeError(f"has {bad} pixels that are NaN or infinite (32-bit float pixels, mode F)")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode == "F":
        if low < 0 or high > 1:
            raise ImageDecodeError(f"has 32-bit float pixels from {low:g} to {high:g}; only 0..1 has a known "
                                   "meaning (save the picture as 8 or 16 bits, or scale it to 0..1)")
        scale = 255.0
    else:
        if low < 0 or high > 65535:
            raise ImageDecodeError(f"has 32-bit integer pixels from {low:g} to {high:g}, beyond the 16-bit range "
                                   "0..65535 (save the picture as 8 or 16 bits)")
        scale = 255.0 / 65535.0
    grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    profile = img.info.get("icc_profile")
    if profile:
        from PIL import ImageCms

        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (OSError, ValueError, ImageCms.PyCMSError):
            pass  # a broken profile: fall back to Pillow's plain formula below
    return img.convert("RGB")


def placeholder() -> Image.Image:
    """The grey picture an item without an image is given (counted in the row as a placeholder)."""
    return Image.new("RGB", BLANK_SIZE, BLANK_COLOUR)


def load_image(path: str | None, *, policy: str = "error", item_id: str = "?", draft_size: int | None = None,
               field: str = "image") -> Image.Image:
    """Open one product image as RGB.

    An item with no image (null path) gets the grey placeholder unless ``policy`` is "error". A
    path that does not decode is always a BenchError naming the item, the file and the fix: the
    dataset's ``missing_images`` already decided at load time which items keep no picture.
    """
    if path is None or path == "":
        if policy == "error":
            raise BenchError(f"item {item_id} has no image", field=field,
                             fix="set missing_images: blank or skip in the dataset options")
        return placeholder()
    try:
        return decode_image(path, draft_size)
    except ImageDecodeError as exc:
        raise BenchError(f"image of item {item_id} {exc}", file=str(path), field=field, fix=PLACEHOLDER_FIX) from None


def placeholder_counts(splits: dict[str, Iterable[dict]], reads_images: bool) -> dict[str, int]:
    """Items fed as the grey placeholder, in all and per split: ``n_image_placeholders[_split]``.

    Zero when the trial reads no images: then no placeholder is used either.
    """
    per_split = {name: (sum(1 for r in records if not r.get("image")) if reads_images else 0)
                 for name, records in splits.items()}
    return {"n_image_placeholders": sum(per_split.values()),
            **{f"n_image_placeholders_{name}": n for name, n in per_split.items()}}
