"""Readers for the public product datasets, each on a tiny copy in exactly the released layout."""
from __future__ import annotations

import gzip
import os
import shutil

import polars as pl
import pytest
from fixtures import product_files as pf

from bench.errors import BenchError

PUBLIC = ["amazon_metadata", "fashion_product_images", "shopee_price_match", "rakuten_sigir20", "farfetch_ffoc"]

def load(registry, name, **options):
    spec = registry.get("dataset", name)
    return spec.build(options, None)

def error_of(registry, name, **options) -> BenchError:
    with pytest.raises(BenchError) as info:
        load(registry, name, **options)
    return info.value

def test_every_reader_is_registered_with_strict_options(registry):
    for name in PUBLIC:
        spec = registry.get("dataset", name)
        assert spec.options.model_config.get("extra") == "forbid"
        with pytest.raises(BenchError):
            spec.parse_options({"path": "x", "not_an_option": 1})

# amazon_metadata -------------------------------------------------------------------------

def test_amazon_reads_python_literal_and_json_lines(registry, tmp_path):
    path = pf.amazon_metadata(tmp_path)
    cat = load(registry, "amazon_metadata", path=str(path), missing_images="skip", append_description=True)
    rows = {r["item_id"]: r for r in cat.items.iter_rows(named=True)}
    assert set(rows) == {"B001", "B002", "B003"}  # B004 has no title, B005 no image
    assert cat.notes == {"skipped_no_title": 1, "skipped_missing_images": 1}
    assert rows["B001"]["title"] == "Red Lipstick 'Matte'"
    assert rows["B001"]["label"] == "Beauty > Makeup > Lips"  # the first category path only
    assert rows["B002"]["title"] == "Eye Liner Long lasting & soft"  # HTML stripped from the description
    assert rows["B003"]["label"] == "Beauty > Skin Care > Face"  # 2018 flat `category`
    assert rows["B003"]["image"] == str(tmp_path / "images" / "B003.jpg")

def test_amazon_label_level_and_one_class_hint(registry, tmp_path):
    path = pf.amazon_metadata(tmp_path)
    cat = load(registry, "amazon_metadata", path=str(path), missing_images="blank", label_level=2)
    assert sorted(cat.label_names) == ["Beauty > Makeup", "Beauty > Skin Care"]
    assert cat.items.filter(cat.items["item_id"] == "B005")["image"][0] is None
    err = error_of(registry, "amazon_metadata", path=str(path), missing_images="blank", label_level=1)
    assert "one class only ('Beauty')" in err.message and "deeper label_level" in err.fix
    assert err.file.endswith("meta_Beauty.json")

def test_amazon_missing_image_error_names_the_asin(registry, tmp_path):
    err = error_of(registry, "amazon_metadata", path=str(pf.amazon_metadata(tmp_path)))
    assert "1 of 4 images are missing" in err.message and "item B005" in err.message
    assert err.file.endswith("meta_Beauty.json") and "missing_images" in err.fix

def test_amazon_gzip_image_by_url_and_bad_lines(registry, tmp_path):
    plain = pf.amazon_metadata(tmp_path).read_text(encoding="utf-8")
    gz = tmp_path / "meta_Beauty.json.gz"
    gz.write_bytes(gzip.compress(plain.encode("utf-8")))
    pf.tiny_image(tmp_path / "byurl" / "51a.jpg")
    pf.tiny_image(tmp_path / "byurl" / "51c.jpg")
    cat = load(registry, "amazon_metadata", path=str(gz), images=str(tmp_path / "byurl"), image_key="url",
               missing_images="skip")
    assert cat.items["item_id"].to_list() == ["B001", "B003"]
    assert cat.items["image"][0] == str(tmp_path / "byurl" / "51a.jpg")
    (tmp_path / "broken.json").write_text(plain + "{'asin': 'B009', 'title': oops}\n", encoding="utf-8")
    err = error_of(registry, "amazon_metadata", path=str(tmp_path / "broken.json"), missing_images="skip")
    assert err.field == "line 6" and "neither JSON nor a Python dict literal" in err.message
    assert "bad_rows: skip" in err.fix
    cat = load(registry, "amazon_metadata", path=str(tmp_path / "broken.json"), missing_images="skip", bad_rows="skip")
    assert cat.notes["skipped_bad_rows"] == 1

def test_amazon_literal_lines_are_never_evaluated(registry, tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "evil.json").write_text(
        f"__import__('pathlib').Path({str(marker)!r}).touch()\n", encoding="utf-8")
    err = error_of(registry, "amazon_metadata", path=str(tmp_path / "evil.json"), images=None)
    assert err.field == "line 1" and not marker.exists()

# fashion_product_images ------------------------------------------------------------------

def test_fashion_joins_commas_in_display_name(registry, tmp_path):
    root = pf.fashion_product_images(tmp_path)
    cat = load(registry, "fashion_product_images", path=str(root))
    rows = {r["item_id"]: r for r in cat.items.iter_rows(named=True)}
    assert rows["11911"]["title"] == "Catwalk Women Black, Gold Heels" and rows["11911"]["label"] == "Heels"
    assert cat.notes == {"joined_bad_rows": 1} and cat.items.height == 6
    assert rows["15970"]["image"] == str(tmp_path / "images" / "15970.jpg")

def test_fashion_label_column_text_columns_and_styles_path(registry, tmp_path):
    root = pf.fashion_product_images(tmp_path)
    cat = load(registry, "fashion_product_images", path=str(root / "styles.csv"), label_column="masterCategory",
               text_columns=["baseColour"])
    assert sorted(cat.label_names) == ["Accessories", "Apparel", "Footwear"]
    assert cat.items["title"][0] == "Turtle Check Men Navy Blue Shirt Navy Blue"
    err = error_of(registry, "fashion_product_images", path=str(root), label_column="category")
    assert err.field == "label_column" and "articleType" in err.message and err.file.endswith("styles.csv")

def test_fashion_missing_image_and_missing_folder(registry, tmp_path):
    root = pf.fashion_product_images(tmp_path)
    os.remove(root / "images" / "59263.jpg")
    err = error_of(registry, "fashion_product_images", path=str(root))
    assert "item 59263" in err.message and err.file.endswith("styles.csv")
    assert load(registry, "fashion_product_images", path=str(root), missing_images="skip").notes[
        "skipped_missing_images"] == 1
    err = error_of(registry, "fashion_product_images", path=str(tmp_path / "elsewhere"))
    assert err.field == "path" and "not found" in err.message

# shopee_price_match ----------------------------------------------------------------------

def test_shopee_groups_for_matching_without_labels(registry, tmp_path):
    root = pf.shopee_price_match(tmp_path)
    cat = load(registry, "shopee_price_match", path=str(root))
    assert cat.tasks == {"matching"} and cat.items["label"].null_count() == 6
    assert cat.items["group"].value_counts()["count"].to_list() == [2, 2, 2]
    assert cat.items["title"][1] == "Double Tape 3M VHB 12 mm x 4,5 m"
    assert cat.items["image"][0] == str(tmp_path / "train_images" / "0000a68812bc7e98c42888dfb1c07da0.jpg")
    labelled = load(registry, "shopee_price_match", path=str(root / "train.csv"), label_from_group=True)
    assert labelled.tasks == {"classification", "matching"}

def test_shopee_missing_image_names_the_posting(registry, tmp_path):
    root = pf.shopee_price_match(tmp_path)
    os.remove(root / "train_images" / "00136d1cf4edede0203f32f05f660588.jpg")
    err = error_of(registry, "shopee_price_match", path=str(root))
    assert "item train_3369186413" in err.message and err.field == "image" and err.file.endswith("train.csv")

# rakuten_sigir20 -------------------------------------------------------------------------

def test_rakuten_joins_labels_and_strips_html(registry, tmp_path):
    root = pf.rakuten_sigir20(tmp_path)
    cat = load(registry, "rakuten_sigir20", path=str(root), append_description=True)
    rows = {r["item_id"]: r for r in cat.items.iter_rows(named=True)}
    assert rows["1"]["title"] == "Journal Des Arts (Le) N° 133 Le journal des arts & de la culture"
    assert rows["3"]["title"] == "Peluche Donald - Europe - Disneyland 2000 Peluche Donald"
    assert [rows[k]["label"] for k in "0123"] == ["10", "2280", "50", "1280"]
    assert rows["0"]["image"] == str(tmp_path / "images" / "image_train" / "image_1263597046_product_3804725264.jpg")
    short = load(registry, "rakuten_sigir20", path=str(root))
    assert short.items["title"][1] == "Journal Des Arts (Le) N° 133"

def test_rakuten_finds_challenge_file_names_and_an_image_folder_option(registry, tmp_path):
    root = pf.rakuten_sigir20(tmp_path)
    (root / "X_train.csv").rename(root / "X_train_update.csv")
    (root / "Y_train.csv").rename(root / "Y_train_CVw08PX.csv")
    (root / "images" / "image_train").rename(root / "imgs")
    cat = load(registry, "rakuten_sigir20", path=str(root), images="imgs")
    assert cat.items.height == 4 and cat.source.endswith("X_train_update.csv")
    cat = load(registry, "rakuten_sigir20", path=str(root), images="imgs", labels_file=None)
    assert cat.items["label"].null_count() == 4

def test_rakuten_label_file_mismatch_and_missing_image(registry, tmp_path):
    root = pf.rakuten_sigir20(tmp_path)
    pf.write_csv(root / "Y_train.csv", ["", "prdtypecode"], [[0, 10], [1, 2280], [2, 50]])
    err = error_of(registry, "rakuten_sigir20", path=str(root))
    assert err.file.endswith("Y_train.csv") and "index 3" in err.message
    pf.rakuten_sigir20(tmp_path)
    os.remove(root / "images" / "image_train" / "image_938777978_product_201115110.jpg")
    err = error_of(registry, "rakuten_sigir20", path=str(root))
    assert "item 2" in err.message and "image_938777978_product_201115110.jpg" in err.message

# farfetch_ffoc ---------------------------------------------------------------------------

def test_farfetch_reads_products_parquet(registry, tmp_path):
    root = pf.farfetch_ffoc(tmp_path)
    cat = load(registry, "farfetch_ffoc", path=str(root))
    assert cat.items["item_id"].to_list() == ["101", "102", "103", "104"]
    assert cat.items["title"][0] == "GANNI floral-print midi dress"
    assert cat.items["image"][2] == str(tmp_path / "images" / "10" / "3" / "103.jpg")
    family = load(registry, "farfetch_ffoc", path=str(root / "products.parquet"), label_column="product_family",
                  title_columns=["product_short_description", "product_materials"])
    assert sorted(family.label_names) == ["Bags", "Clothing", "Shoes"]
    assert family.items["title"][2] == "Air Max 90 leather rubber"
    err = error_of(registry, "farfetch_ffoc", path=str(root), label_column="category")
    assert err.field == "label_column" and "product_category" in err.message

# shared options: given splits, titles only, rare labels ------------------------------------

@pytest.mark.parametrize("name", PUBLIC)
def test_every_reader_takes_a_split_file(registry, tmp_path, name):
    path = {"amazon_metadata": pf.amazon_metadata, "fashion_product_images": pf.fashion_product_images,
            "shopee_price_match": pf.shopee_price_match, "rakuten_sigir20": pf.rakuten_sigir20,
            "farfetch_ffoc": pf.farfetch_ffoc}[name](tmp_path)
    extra = {"missing_images": "skip"} if name == "amazon_metadata" else {}
    ids = load(registry, name, path=str(path), **extra).items["item_id"].to_list()
    groups = dict(zip(ids, load(registry, name, path=str(path), **extra).items["group"].to_list()))
    order = sorted({groups[i] or i for i in ids})  # whole product groups go to one split
    split_of_unit = {u: ["train", "test", "dev"][k % 3] for k, u in enumerate(order)}
    wanted = {i: split_of_unit[groups[i] or i] for i in ids}
    # amazon: B004 has no title (skipped by the reader), B005 no picture (skipped after the split file)
    listed = list(wanted.items()) + ([("B004", "train"), ("B005", "train")] if name == "amazon_metadata" else [])
    pf.split_file(tmp_path / "split.csv", listed)
    cat = load(registry, name, path=str(path), split_file=str(tmp_path / "split.csv"), **extra)
    assert dict(zip(cat.items["item_id"].to_list(), cat.items["split"].to_list())) == wanted
    pf.split_file(tmp_path / "split.csv", listed + [("nope", "test")])
    err = error_of(registry, name, path=str(path), split_file=str(tmp_path / "split.csv"), **extra)
    assert "1 item ids in the split file are not in the catalogue" in err.message and "'nope'" in err.message
    pf.split_file(tmp_path / "split.csv", listed[1:])
    err = error_of(registry, name, path=str(path), split_file=str(tmp_path / "split.csv"), **extra)
    loaded = len(ids) + (1 if name == "amazon_metadata" else 0)  # B005 is still there when the file is applied
    assert f"1 of {loaded} catalogue items are not in the split file, e.g. {ids[0]}" in err.message

def test_split_columns_where_the_release_has_none(registry, tmp_path):
    root = pf.fashion_product_images(tmp_path)
    text = (root / "styles.csv").read_text(encoding="utf-8").splitlines()
    parts = ["train", "train", "test", "dev", "test", "train"]
    (root / "styles.csv").write_text("\n".join([text[0].replace("id,", "id,fold,", 1)] + [
        line.replace(",", f",{p},", 1) for line, p in zip(text[1:], parts)]) + "\n", encoding="utf-8")
    cat = load(registry, "fashion_product_images", path=str(root), split_column="fold")
    assert cat.items["split"].to_list() == parts and cat.items["title"][4] == "Catwalk Women Black, Gold Heels"
    err = error_of(registry, "fashion_product_images", path=str(root), split_column="flod")
    assert err.field == "split_column" and "did you mean 'fold'" in err.fix
    shopee = pf.shopee_price_match(tmp_path / "s")
    frame = pl.read_csv(shopee / "train.csv", infer_schema=False).with_columns(
        pl.Series("fold", ["train", "train", "test", "BAD", "train", "test"]))
    frame.write_csv(shopee / "train.csv")
    err = error_of(registry, "shopee_price_match", path=str(shopee), split_column="fold")
    assert "unknown split value 'bad' in data row 4" in err.message and err.field == "fold"

@pytest.mark.parametrize("name", ["fashion_product_images", "shopee_price_match", "rakuten_sigir20", "farfetch_ffoc"])
def test_titles_only_without_the_image_folder(registry, tmp_path, name):
    root = {"fashion_product_images": pf.fashion_product_images, "shopee_price_match": pf.shopee_price_match,
            "rakuten_sigir20": pf.rakuten_sigir20, "farfetch_ffoc": pf.farfetch_ffoc}[name](tmp_path)

    for folder in ("images", "train_images"):
        shutil.rmtree(root / folder, ignore_errors=True)
    assert error_of(registry, name, path=str(root)).field == "images"  # the folder is expected by default
    cat = load(registry, name, path=str(root), images=None)
    assert not cat.has_images and cat.has_titles and cat.items["image"].null_count() == cat.items.height

def test_fashion_rare_labels_merge_into_other(registry, tmp_path):
    root = pf.fashion_product_images(tmp_path)
    cat = load(registry, "fashion_product_images", path=str(root), min_items_per_label=2, rare_labels="other")
    assert sorted(cat.items["label"].to_list()) == ["Jeans", "Jeans", "Shirts", "Shirts", "other", "other"]
    assert cat.notes == {"joined_bad_rows": 1, "merged_rare_labels": 2, "merged_rare_label_items": 2}

def test_amazon_label_form_rare_labels_and_bounded_lines(registry, tmp_path):
    path = pf.amazon_metadata(tmp_path)
    cat = load(registry, "amazon_metadata", path=str(path), missing_images="blank", label_level=3, label_form="name")
    assert sorted(cat.label_names) == ["Eyes", "Face", "Lips"]
    assert cat.label_paths.to_list()[0].split("\x1f") == ["Beauty", "Makeup", "Lips"]
    err = error_of(registry, "amazon_metadata", path=str(path), missing_images="blank", label_level=3,
                   label_form="name", min_items_per_label=2, rare_labels="error")
    assert "label 'Eyes' has 1 item (line 2)" in err.message
    from mic_bench_plugins.datasets import amazon_metadata

    with pytest.raises(ValueError, match="longer than"):
        amazon_metadata.parse_record("{'asin': '" + "x" * (amazon_metadata.MAX_RECORD_CHARS + 1) + "'}")


def test_rakuten_rare_label_error_points_at_the_product_line(registry, tmp_path):
    root = pf.rakuten_sigir20(tmp_path)
    err = error_of(registry, "rakuten_sigir20", path=str(root), min_items_per_label=2, rare_labels="error")
    assert "label '10' has 1 item (X_train.csv line 2)" in err.message and err.file.endswith("Y_train.csv")
    assert "4 labels do" in err.message and err.field == "prdtypecode"
