"""Pictures as a person sees them: every file kind converts to the expected pixels, files that are
not pictures (empty, truncated, not an image, a decompression bomb) are errors or counted
placeholders, image paths stay inside the image folder, and the encoders' pixels are timm's."""
from __future__ import annotations

import io
import tracemalloc

import numpy as np
import polars as pl
import pytest
import torch
from fixtures import product_files as pf
from PIL import Image, ImageFile

from bench.errors import BenchError
from bench.data.images import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, decode_image, load_image, placeholder_counts


def _pixel(path, xy=(0, 0)):
    return load_image(str(path)).getpixel(xy)


# -- kinds of file -----------------------------------------------------------------------------
def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 128 * 257, 65535, 1000]], dtype=np.uint16)  # 1000 / 257 = 3.9 -> 4
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    img = load_image(str(tmp_path / "g16.png"))
    assert [img.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255), (4, 4, 4)]


def _tiff(path, values, mode=None):
    """A real TIFF written by Pillow from a numpy array (float32 -> mode F, int32 -> mode I)."""
    Image.fromarray(values, mode=mode).save(path, format="TIFF")
    assert Image.open(path).mode == {np.dtype(np.float32): "F", np.dtype(np.int32): "I",
                                     np.dtype(np.uint16): "I;16"}[values.dtype]
    return path


def test_32_bit_tiffs_are_scaled_from_their_range_not_clipped(tmp_path):
    floats = _tiff(tmp_path / "f.tif", np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32))
    assert [_pixel(floats, (x, 0)) for x in range(4)] == [(0, 0, 0), (64, 64, 64), (128, 128, 128), (255, 255, 255)]
    ints = _tiff(tmp_path / "i.tif", np.array([[0, 1000, 128 * 257, 65535]], dtype=np.int32))
    assert [_pixel(ints, (x, 0)) for x in range(4)] == [(0, 0, 0), (4, 4, 4), (128, 128, 128), (255, 255, 255)]
    sixteen = _tiff(tmp_path / "s.tif", np.array([[0, 1000, 128 * 257, 65535]], dtype=np.uint16))
    assert [_pixel(sixteen, (x, 0)) for x in range(4)] == [(0, 0, 0), (4, 4, 4), (128, 128, 128), (255, 255, 255)]


@pytest.mark.parametrize("values, reason", [
    (np.array([[0.0, np.nan]], dtype=np.float32), "1 pixels that are nan or infinite"),
    (np.array([[0.0, np.inf]], dtype=np.float32), "1 pixels that are nan or infinite"),
    (np.array([[0.0, 200.0]], dtype=np.float32), "32-bit float pixels from 0 to 200"),
    (np.array([[-1.0, 0.5]], dtype=np.float32), "32-bit float pixels from -1 to 0.5"),
    (np.array([[0, 70_000]], dtype=np.int32), "32-bit integer pixels from 0 to 70000"),
    (np.array([[-5, 10]], dtype=np.int32), "32-bit integer pixels from -5 to 10"),
])
def test_32_bit_tiffs_without_a_known_range_are_refused_naming_the_file(tmp_path, values, reason):
    path = _tiff(tmp_path / "odd.tif", values)
    with pytest.raises(BenchError) as info:
        load_image(str(path), item_id="sku9")
    assert reason in info.value.message.lower() and info.value.file == str(path) and "sku9" in info.value.message


def test_a_fifo_or_device_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # no writer: opening it for a plain read would block forever
    for path, kind in ((fifo, "is a fifo"), ("/dev/zero", "is a character device")):
        with pytest.raises(BenchError) as info:
            load_image(str(path), item_id="sku1")
        assert kind in info.value.message.lower() and info.value.file == str(path)


def test_image_files_above_the_byte_limit_are_not_read(tmp_path, monkeypatch):
    from bench.data.image_files import ImageManifest
    from bench.data.images import MAX_BYTES_ENV

    path = pf.tiny_image(tmp_path / "big.jpg")
    with open(path, "ab") as handle:  # a sparse tail: the file claims 3 GB, nothing is read
        handle.truncate(3 << 30)
    with pytest.raises(BenchError) as info:
        load_image(str(path), item_id="sku2")
    assert f"is {3 << 30} bytes, above the limit of {64 << 20} bytes" in info.value.message
    assert MAX_BYTES_ENV in info.value.message
    facts = ImageManifest(tmp_path / "cache").scan([str(path)], check=True)[str(path)]
    assert facts.digest is None and "above the limit" in facts.problem
    monkeypatch.setenv(MAX_BYTES_ENV, "100")
    with pytest.raises(BenchError, match="above the limit of 100 bytes"):
        load_image(str(pf.tiny_image(tmp_path / "small.jpg")))


def test_cmyk_converts_to_rgb(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "red.tif")  # lossless: exact
    assert _pixel(tmp_path / "red.tif") == (255, 0, 0)
    Image.new("CMYK", (16, 16), (255, 0, 255, 0)).save(tmp_path / "green.jpg", quality=100)  # Adobe-inverted JPEG
    assert np.allclose(_pixel(tmp_path / "green.jpg", (8, 8)), (0, 255, 0), atol=3)


def test_transparent_pixels_are_laid_onto_white(tmp_path):
    palette = Image.new("P", (4, 1))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black (transparent), 1 red
    palette.putdata([0, 1, 0, 1])
    palette.save(tmp_path / "pal.png", transparency=0)
    img = load_image(str(tmp_path / "pal.png"))
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((1, 0)) == (255, 0, 0)
    Image.new("RGBA", (2, 2), (255, 0, 0, 128)).save(tmp_path / "half.png")
    assert _pixel(tmp_path / "half.png") == (255, 127, 127)  # 255 * a + 255 * (1 - a), a = 128/255
    Image.new("LA", (2, 2), (0, 0)).save(tmp_path / "la.png")
    assert _pixel(tmp_path / "la.png") == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turns it 90 degrees clockwise
    img.save(tmp_path / "rot.jpg", quality=95, exif=exif)
    shown = load_image(str(tmp_path / "rot.jpg"))
    assert shown.size == (20, 40)
    assert np.allclose(shown.getpixel((10, 5)), (255, 0, 0), atol=8)   # the left half is now on top
    assert np.allclose(shown.getpixel((10, 35)), (0, 0, 255), atol=8)


# -- files that are not pictures ------------------------------------------------------------------
@pytest.mark.parametrize("kind, reason", [("empty", "is empty (0 bytes)"), ("text", "is not an image"),
                                          ("truncated", "truncated")])
def test_broken_files_are_errors_naming_item_and_file(tmp_path, kind, reason):
    path = tmp_path / "x.jpg"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("sku,title\n1,kettle\n")
    else:
        pf.truncated_image(path)
    for policy in ("error", "blank", "skip"):  # the dataset decided at load time; a broken file is never grey
        with pytest.raises(BenchError) as info:
            load_image(str(path), policy=policy, item_id="sku7")
        err = info.value
        assert "sku7" in err.message and reason in err.message.lower() and err.file == str(path)
        assert "missing_images: skip" in err.fix


def test_truncated_jpeg_stays_an_error_even_if_pillow_was_told_to_load_it(tmp_path, monkeypatch):
    import timm  # noqa: F401  (libraries imported by a trial must not have switched it on)

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    path = pf.truncated_image(tmp_path / "cut.jpg")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(BenchError, match="(?i)truncated"):
        load_image(str(path), item_id="a")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left as it was


_png_declaring = pf.png_declaring


@pytest.mark.parametrize("side", [9_000, 100_000])  # 81 M (Pillow would only warn) and 10 G pixels
def test_decompression_bomb_is_refused_before_any_pixel_is_allocated(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(side, side))
    assert path.stat().st_size < 2000
    tracemalloc.start()
    try:
        with pytest.raises(BenchError) as info:
            load_image(str(path), item_id="b1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20  # the canvas (3 bytes x side^2) would be >= 240 MB
    err = info.value
    assert err.file == str(path) and "b1" in err.message and str(DEFAULT_MAX_PIXELS) in err.message
    assert MAX_PIXELS_ENV in err.message


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    Image.new("RGB", (50, 40), (1, 2, 3)).save(tmp_path / "p.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "1999")
    with pytest.raises(BenchError, match="above the limit of 1999 pixels"):
        load_image(str(tmp_path / "p.png"))
    monkeypatch.setenv(MAX_PIXELS_ENV, "2000")
    assert _pixel(tmp_path / "p.png") == (1, 2, 3)
    assert Image.MAX_IMAGE_PIXELS != 2000  # Pillow's own setting is left as it was
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(BenchError) as info:
        load_image(str(tmp_path / "p.png"))
    assert info.value.field == MAX_PIXELS_ENV


def test_bomb_in_a_catalogue_follows_missing_images(registry, tmp_path):
    rows = []
    for i in range(6):
        pf.tiny_image(tmp_path / "images" / f"{i}.jpg", i)
        rows.append([str(i), f"item {i}", f"{i}.jpg"])
    (tmp_path / "images" / "2.jpg").write_bytes(_png_declaring(100_000, 100_000))
    pf.write_csv(tmp_path / "t.csv", ["id", "title", "img"], rows)
    spec = registry.get("dataset", "table")
    opts = {"path": str(tmp_path / "t.csv"), "images": "images", "columns": {"id": "id", "image": "img"}}
    with pytest.raises(BenchError) as info:
        spec.build(opts, None)
    assert "item 2" in info.value.message and "canvas" in info.value.message
    blank = spec.build({**opts, "missing_images": "blank"}, None)
    assert blank.notes == {"blank_unreadable_images": 1}


def test_placeholder_counts_per_split():
    splits = {"train": [{"image": None}, {"image": "a.jpg"}, {"image": ""}], "test": [{"image": None}], "dev": []}
    assert placeholder_counts(splits, reads_images=True) == {
        "n_image_placeholders": 3, "n_image_placeholders_train": 2, "n_image_placeholders_test": 1,
        "n_image_placeholders_dev": 0}
    assert placeholder_counts(splits, reads_images=False)["n_image_placeholders"] == 0


def test_inspect_and_trial_agree_on_placeholders_and_the_leaderboard_marks_them(registry, tmp_path):
    from click.testing import CliRunner
    from conftest import TINY_IMAGE, tiny_trial

    from bench.reporting.data_inspect import data
    from bench.reporting.leaderboard import LeaderboardSpec, render_markdown
    from bench.config.matrix import trial_key
    from bench.config.schema import TrialConfig, TrialSpec
    from bench.trial.context import TrialContext
    from bench.trial.run import run_trial

    rows = []
    for i in range(40):
        rows.append([f"i{i}", f"{['red', 'blue'][i % 2]} thing {i}", f"{i}.png", ["r", "b"][i % 2]])
        pf.tiny_image(tmp_path / "imgs" / f"{i}.png", i % 2, fmt="PNG")
    for i in (3, 17, 28):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "imgs" / "9.png").unlink()
    pf.write_csv(tmp_path / "t.csv", ["id", "title", "img", "label"], rows)
    options = {"path": str(tmp_path / "t.csv"), "images": "imgs", "missing_images": "blank",
               "columns": {"id": "id", "image": "img", "label": "label"}}
    import json

    result = CliRunner().invoke(data, ["inspect", "table", "--options-json", json.dumps(options), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"]["placeholders"] == 4
    config = TrialConfig.model_validate(tiny_trial(dataset={"name": "table", "options": options},
                                                   encoders={"image": TINY_IMAGE}, fusion="image_only")
                                         ).model_dump(mode="json")
    row = run_trial(TrialSpec(trial_key(config), {"fusion": "image_only"}, {}, config),
                    TrialContext(registry=registry)).row
    assert row["status"] == "ok", row["error"]
    assert row["n_image_placeholders"] == report["images"]["placeholders"]
    assert sum(row[f"n_image_placeholders_{s}"] for s in ("train", "dev", "test", "ssl")) == 4
    assert row["data_blank_images"] == 1 and row["data_blank_unreadable_images"] == 3
    board = render_markdown(pl.DataFrame([row]), LeaderboardSpec(group_by=["fusion"]))
    assert "| 1†" in board and "grey placeholder" in board


def test_clean_rows_carry_no_mark():
    from bench.reporting.leaderboard import LeaderboardSpec, render_markdown

    rows = pl.DataFrame({"fusion": ["a", "b"], "status": ["ok", "ok"], "accuracy": [0.5, 0.6],
                         "n_image_placeholders": [0, 0]})
    board = render_markdown(rows, LeaderboardSpec(group_by=["fusion"]))
    assert "†" not in board


# -- paths that escape the image folder ----------------------------------------------------------
def _table_with(tmp_path, value: str):
    for i in range(3):
        pf.tiny_image(tmp_path / "data" / "images" / f"{i}.jpg", i)
    pf.write_csv(tmp_path / "data" / "t.csv", ["sku", "title", "photo"],
                 [["a", "x", "0.jpg"], ["b", "y", value], ["c", "z", "2.jpg"]])
    return {"path": str(tmp_path / "data" / "t.csv"), "images": "images",
            "columns": {"id": "sku", "image": "photo"}}


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink_file", "symlink_folder"])
def test_image_paths_leaving_the_folder_are_refused_unless_allowed(registry, tmp_path, how):
    secret = pf.tiny_image(tmp_path / "private" / "secret.jpg")
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    value = {"dotdot": "../../private/secret.jpg", "absolute": str(secret),
             "symlink_file": "link.jpg", "symlink_folder": "sub/secret.jpg"}[how]
    if how == "symlink_file":
        (images / "link.jpg").symlink_to(secret)
    if how == "symlink_folder":
        (images / "sub").symlink_to(secret.parent, target_is_directory=True)
    opts = _table_with(tmp_path, value)
    spec = registry.get("dataset", "table")
    with pytest.raises(BenchError) as info:
        spec.build(opts, None)
    err = info.value
    assert err.file.endswith("t.csv") and err.field == "columns.image (photo)"
    assert "item b" in err.message and "data row 2" in err.message and value in err.message
    assert "allow_outside_images: true" in err.fix
    allowed = spec.build({**opts, "allow_outside_images": True}, None)
    assert allowed.items.height == 3


def test_paths_inside_the_folder_are_fine_however_written(registry, tmp_path):
    images = tmp_path / "data" / "images"
    pf.tiny_image(images / "deep" / "1.jpg")
    (images / "alias.jpg").symlink_to(images / "deep" / "1.jpg")
    opts = _table_with(tmp_path, "deep/../deep/1.jpg")
    spec = registry.get("dataset", "table")
    assert spec.build(opts, None).items.height == 3
    for value in (str(images / "deep" / "1.jpg"), "alias.jpg"):
        assert spec.build(_table_with(tmp_path, value), None).items.height == 3


def test_public_readers_share_the_check(registry, tmp_path):
    root = pf.farfetch_ffoc(tmp_path)
    products = pl.read_parquet(root / "products.parquet")
    products = products.with_columns(pl.Series("product_image_path", ["../../outside.jpg",
                                                                      *products["product_image_path"][1:]]))
    products.write_parquet(root / "products.parquet")
    spec = registry.get("dataset", "farfetch_ffoc")
    with pytest.raises(BenchError) as info:
        spec.build({"path": str(root)}, None)
    assert info.value.field == "product_image_path" and "allow_outside_images" in info.value.fix


# -- the encoders' pixels are timm's eval transform -----------------------------------------------
def _non_square(path, size=(300, 180)):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    arr = np.stack([x * 255 / size[0], y * 255 / size[1], (x + y) % 256], -1) + rng.normal(0, 6, (*size[::-1], 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return path


def _timm_encoder(**options):
    from bench.api.plugins import get_registry

    spec = get_registry().get("encoder", "timm_image")
    return spec.build(options, None)


def test_timm_encoder_pixels_equal_timms_eval_transform(tmp_path):
    import timm

    path = _non_square(tmp_path / "wide.png")
    encoder = _timm_encoder(model="vit_tiny_patch16_224")
    reference = timm.data.create_transform(**timm.data.resolve_data_config({}, model=encoder.model))
    expected = reference(Image.open(path).convert("RGB"))
    got = encoder.preprocess([{"item_id": "w", "image": str(path)}])["pixels"][0]
    assert got.shape == expected.shape == (3, 224, 224)
    assert torch.allclose(got, expected, atol=1e-6)
    squashed = torch.from_numpy((np.asarray(Image.open(path).convert("RGB").resize((224, 224), 3),
                                            dtype=np.float32) / 255 - 0.5) / 0.5).permute(2, 0, 1)
    assert (got - squashed).abs().mean() > 0.05  # the old squash to a square is not what timm does


def test_img_size_override_and_big_jpeg_draft_match_timm(tmp_path):
    import timm

    encoder = _timm_encoder(model="vit_tiny_patch16_224", img_size=32,
                            model_kwargs={"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2})
    cfg = timm.data.resolve_data_config({"input_size": (3, 32, 32)}, model=encoder.model)
    small = _non_square(tmp_path / "s.png", (90, 50))
    got = encoder.preprocess([{"item_id": "s", "image": str(small)}])["pixels"][0]
    assert torch.allclose(got, timm.data.create_transform(**cfg)(Image.open(small).convert("RGB")), atol=1e-6)
    big = tmp_path / "big.jpg"
    Image.open(_non_square(tmp_path / "big.png", (1600, 1100))).save(big, quality=92)
    default = _timm_encoder(model="vit_tiny_patch16_224")
    full = timm.data.create_transform(**timm.data.resolve_data_config({}, model=default.model))(
        Image.open(big).convert("RGB"))  # no draft: the full decode
    drafted = default.preprocess([{"item_id": "b", "image": str(big)}])["pixels"][0]
    levels = (drafted - full).abs() * 0.5 * 255  # std 0.5: back to 0..255 levels
    assert levels.max() <= 10 and levels.mean() <= 0.5  # measured: max 8, mean 0.35 on this noisy photo


def test_single_stream_uses_the_same_preprocessing(tmp_path):
    from bench.api.plugins import get_registry
    from mic_bench_plugins.encoders.image_preprocess import ImagePreprocess

    spec = get_registry().get("encoder", "single_stream")
    encoder = spec.build({"img_size": 32, "patch_size": 8}, None)
    path = _non_square(tmp_path / "w.png", (120, 40))
    got = encoder.preprocess([{"item_id": "w", "title": "x", "image": str(path)}])["pixels"]
    expected = ImagePreprocess(size=32, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0).pixels([{"image": str(path)}])
    assert torch.equal(got, expected)
    left_third = np.asarray(Image.open(path).convert("RGB"))[:, :40].mean()
    assert abs(((got[0] * 0.5 + 0.5) * 255).mean().item() - left_third) > 5  # the centre, not the whole width


def test_decode_image_reads_streams():
    buffer = io.BytesIO()
    Image.new("RGB", (5, 3), (9, 8, 7)).save(buffer, format="PNG")
    assert decode_image(io.BytesIO(buffer.getvalue())).getpixel((4, 2)) == (9, 8, 7)
