"""The `table` dataset plugin: a user's own file, image folder and column mapping, and the
clear errors for every kind of bad input."""
from __future__ import annotations

import json
import os

import polars as pl
import pytest
from fixtures import product_files as pf
from PIL import Image

from bench.errors import BenchError
from bench.data.images import load_image

MAPPED = {"id": "sku", "title": "name", "image": "photo", "label": "category", "group": "product", "split": "split"}


def load(registry, **options):
    spec = registry.get("dataset", "table")
    return spec.build(options, None)


def error_of(registry, **options) -> BenchError:
    with pytest.raises(BenchError) as info:
        load(registry, **options)
    return info.value


def test_maps_columns_text_labels_images_and_splits(registry, tmp_path):
    path = pf.user_table(tmp_path)
    cat = load(registry, path=str(path), images="images", columns=MAPPED, text_columns=["description"], label_level=2)
    items = cat.items
    assert items["item_id"].to_list() == [f"sku{i}" for i in range(6)]
    assert items["title"][0] == "Product 0 Nice, soft\nitem 0"  # quoted field with a comma and a line break
    assert items["label"].to_list()[:4] == ["Beauty > Makeup", "Beauty > Makeup", "Beauty > Skin", "Home > Kitchen"]
    assert all(os.path.isabs(p) and os.path.exists(p) for p in items["image"].to_list())
    assert items["split"].to_list() == ["train", "train", "test", "test", "dev", "dev"]
    assert items["group"].n_unique() == 3 and cat.tasks == {"classification", "matching"}
    assert cat.source == str(path.resolve()) and cat.notes == {}


def test_full_label_path_without_level_and_custom_separator(registry, tmp_path):
    pf.write_csv(tmp_path / "t.csv", ["title", "cat"], [["a", "x/y/z"], ["b", " x / q "], ["c", "w"]])
    cat = load(registry, path=str(tmp_path / "t.csv"), columns={"label": "cat"}, label_separator="/", label_level=2)
    assert cat.items["label"].to_list() == ["x > y", "x > q", "w"]
    plain = load(registry, path=str(tmp_path / "t.csv"), columns={"label": "cat"})
    assert plain.items["label"].to_list() == ["x/y/z", "x / q", "w"]  # no level: the label as written
    assert plain.items["item_id"].to_list() == ["0", "1", "2"]  # no id column: row numbers


def test_image_by_id_pattern_and_absolute_or_relative_paths(registry, tmp_path):
    for i in range(3):
        pf.tiny_image(tmp_path / "pics" / f"p{i}.png", i, fmt="PNG")
    pf.write_csv(tmp_path / "t.csv", ["id", "title"], [["p0", "a"], ["p1", "b"], ["p2", "c"]])
    by_id = load(registry, path=str(tmp_path / "t.csv"), images="pics", image_pattern="{}.png", columns={"id": "id"})
    assert by_id.items["image"].to_list() == [str(tmp_path / "pics" / f"p{i}.png") for i in range(3)]
    absolute = str(tmp_path / "pics" / "p2.png")
    pf.write_csv(tmp_path / "u.csv", ["title", "img"], [["a", "pics/p0.png"], ["b", absolute]])
    mixed = load(registry, path=str(tmp_path / "u.csv"), columns={"image": "img"})  # relative to the table's folder
    assert mixed.items["image"].to_list() == [str(tmp_path / "pics" / "p0.png"), absolute]
    assert error_of(registry, path=str(tmp_path / "t.csv"), images="pics", image_pattern="p.png").field == "image_pattern"


def test_image_cells_listing_several_pictures_take_the_first_that_exists(registry, tmp_path):
    """Scraped dumps store a list of pictures per item; the first existing file is the picture,
    and a cell that is not a list of names is an error naming the item (never evaluated)."""
    for name in ("p0_front.png", "p0_back.png", "p1.png", "p2.png"):
        pf.tiny_image(tmp_path / "pics" / name, len(name), fmt="PNG")
    rows = [["p0", "a", '["gone.jpg", "p0_front.png", "p0_back.png"]'], ["p1", "b", "['p1.png']"],
            ["p2", "c", "p2.png"]]
    pf.write_csv(tmp_path / "t.csv", ["id", "title", "pictures"], rows)
    cat = load(registry, path=str(tmp_path / "t.csv"), images="pics", columns={"id": "id", "image": "pictures"})
    assert cat.items["image"].to_list() == [str(tmp_path / "pics" / n) for n in ("p0_front.png", "p1.png", "p2.png")]
    rows[1][2] = "[__import__('os').getcwd()]"
    pf.write_csv(tmp_path / "t.csv", ["id", "title", "pictures"], rows)
    err = error_of(registry, path=str(tmp_path / "t.csv"), images="pics", columns={"id": "id", "image": "pictures"})
    assert "item p1" in err.render() and "not a list of file names" in err.render() and "t.csv" in err.render()
    rows[1][2] = '["gone.jpg", "also_gone.jpg"]'  # none exists: the first is kept, so missing_images reports it
    pf.write_csv(tmp_path / "t.csv", ["id", "title", "pictures"], rows)
    err = error_of(registry, path=str(tmp_path / "t.csv"), images="pics", columns={"id": "id", "image": "pictures"})
    assert "gone.jpg" in err.render() and "missing" in err.render()


@pytest.mark.parametrize("fmt", ["tsv", "parquet", "jsonl"])
def test_tsv_parquet_and_jsonl_read_like_csv(registry, tmp_path, fmt):
    frame = pl.DataFrame({"sku": ["a1", "b2", "c3"], "name": ["Red mug", "Blue mug", "Tea pot"],
                          "category": ["Mugs", "Mugs", "Pots"], "tags": [["x", "y"], ["z"], []]})
    target = tmp_path / f"items.{fmt}"
    if fmt == "tsv":
        frame.drop("tags").write_csv(target, separator="\t")
    elif fmt == "parquet":
        frame.write_parquet(target)
    else:
        target.write_text("\n".join(json.dumps(r) for r in frame.iter_rows(named=True)) + "\n\n", encoding="utf-8")
    text_columns = ["tags"] if fmt != "tsv" else []
    cat = load(registry, path=str(target), columns={"id": "sku", "title": "name", "label": "category"},
               text_columns=text_columns)
    assert cat.items["item_id"].to_list() == ["a1", "b2", "c3"]
    assert cat.items["label"].to_list() == ["Mugs", "Mugs", "Pots"]
    assert cat.items["title"][0] == ("Red mug x y" if text_columns else "Red mug")


def test_format_option_overrides_the_extension_and_unknown_extension_is_named(registry, tmp_path):
    (tmp_path / "export.dat").write_text("title;cat\na;x\nb;y\n", encoding="utf-8")
    cat = load(registry, path=str(tmp_path / "export.dat"), format="csv", separator=";", columns={"label": "cat"})
    assert cat.items["title"].to_list() == ["a", "b"]
    err = error_of(registry, path=str(tmp_path / "export.dat"))
    assert err.field == "format" and "export.dat" in err.file and "format: csv" in err.fix


def test_bom_is_dropped_from_the_first_column_name(registry, tmp_path):
    (tmp_path / "t.csv").write_bytes("\ufeffid,title\n1,Crème\n\n2,Tea\n".encode("utf-8"))  # and a blank line
    cat = load(registry, path=str(tmp_path / "t.csv"), columns={"id": "id"})
    assert cat.items["item_id"].to_list() == ["1", "2"] and cat.items["title"][0] == "Crème"


def test_ragged_rows_error_names_the_line_or_are_skipped_or_joined(registry, tmp_path):
    (tmp_path / "t.csv").write_text('id,title,label\n1,"multi\nline",a\n2,ok,b\n3,extra,b,oops\n4,short\n5,fine,a\n',
                                    encoding="utf-8")
    err = error_of(registry, path=str(tmp_path / "t.csv"), columns={"id": "id", "label": "label"})
    assert "t.csv" in err.file and err.field == "line 5" and "4 fields but the header has 3" in err.message
    assert "bad_rows: skip" in err.fix
    cat = load(registry, path=str(tmp_path / "t.csv"), columns={"id": "id", "label": "label"}, bad_rows="skip")
    assert cat.items["item_id"].to_list() == ["1", "2", "5"] and cat.notes == {"skipped_bad_rows": 2}
    # join_last cannot fix a short row, so it still names it
    err = error_of(registry, path=str(tmp_path / "t.csv"), columns={"id": "id"}, bad_rows="join_last")
    assert err.field == "line 6" and "2 fields" in err.message


def test_non_utf8_file_is_named_with_the_line_and_encoding_option_reads_it(registry, tmp_path):
    (tmp_path / "t.csv").write_bytes("id,title\n1,Tea\n2,Caf\xe9 cr\xe8me\n".encode("latin-1"))
    err = error_of(registry, path=str(tmp_path / "t.csv"), columns={"id": "id"})
    assert err.file.endswith("t.csv") and "line 3" in err.message and "encoding: latin-1" in err.fix
    cat = load(registry, path=str(tmp_path / "t.csv"), columns={"id": "id"}, encoding="latin-1")
    assert cat.items["title"][1] == "Café crème"


def test_missing_file_and_missing_image_folder(registry, tmp_path):
    err = error_of(registry, path=str(tmp_path / "nope.csv"))
    assert err.field == "path" and "nope.csv" in err.message and "not found" in err.message
    pf.write_csv(tmp_path / "t.csv", ["title"], [["a"]])
    err = error_of(registry, path=str(tmp_path / "t.csv"), images="pictures", image_pattern="{}.jpg")
    assert err.field == "images" and "pictures" in err.message and err.file.endswith("t.csv")
    err = error_of(registry, path=str(tmp_path))
    assert err.field == "path" and "is a folder" in err.message


def test_unknown_column_lists_the_columns_that_exist(registry, tmp_path):
    pf.write_csv(tmp_path / "t.csv", ["sku", "name", "category"], [["1", "a", "x"]])
    err = error_of(registry, path=str(tmp_path / "t.csv"), columns={"id": "sku", "title": "title"})
    assert err.field == "columns.title" and "sku, name, category" in err.message and err.file.endswith("t.csv")
    err = error_of(registry, path=str(tmp_path / "t.csv"), columns={"title": "name", "label": "categroy"})
    assert err.field == "columns.label" and "did you mean 'category'" in err.fix
    err = error_of(registry, path=str(tmp_path / "t.csv"), columns={"title": "name"}, text_columns=["desc"])
    assert err.field == "text_columns[0]"


def test_empty_table_and_empty_file(registry, tmp_path):
    pf.write_csv(tmp_path / "t.csv", ["id", "title"], [])
    err = error_of(registry, path=str(tmp_path / "t.csv"))
    assert "no rows" in err.message and err.file.endswith("t.csv") and err.fix
    (tmp_path / "e.csv").write_text("", encoding="utf-8")
    err = error_of(registry, path=str(tmp_path / "e.csv"))
    assert "empty" in err.message and err.file.endswith("e.csv")


def test_one_class_label_column_is_an_error_when_labels_were_asked_for(registry, tmp_path):
    path = pf.user_table(tmp_path, n=3)  # all three are "Beauty > ..."
    err = error_of(registry, path=str(path), images="images", columns=MAPPED, label_level=1)
    assert err.field == "category" and "one class only ('Beauty')" in err.message and "deeper label_level" in err.fix
    assert err.file.endswith("items.csv")
    without_labels = load(registry, path=str(path), images="images", columns={**MAPPED, "label": None})
    assert "classification" not in without_labels.tasks


def test_missing_images_error_skip_and_blank(registry, tmp_path):
    path = pf.user_table(tmp_path)
    (tmp_path / "images" / "sku1.jpg").unlink()
    (tmp_path / "images" / "sku4.jpg").unlink()
    err = error_of(registry, path=str(path), images="images", columns=MAPPED)
    assert "2 of 6 images are missing" in err.message and "item sku1" in err.message and "item sku4" in err.message
    assert err.field == "columns.image (photo)" and "missing_images: skip" in err.fix and err.file.endswith("items.csv")
    skipped = load(registry, path=str(path), images="images", columns=MAPPED, missing_images="skip")
    assert skipped.items.height == 4 and skipped.notes == {"skipped_missing_images": 2}
    assert "sku1" not in skipped.items["item_id"].to_list()
    blank = load(registry, path=str(path), images="images", columns=MAPPED, missing_images="blank")
    assert blank.items.height == 6 and blank.items["image"].null_count() == 2 and blank.notes == {"blank_images": 2}


def test_files_that_are_not_pictures_follow_missing_images(registry, tmp_path):
    """Garbage, empty and truncated .jpg files are found at load time and follow the policy."""
    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(30):
        pf.tiny_image(tmp_path / "imgs" / f"{i}.jpg", i)
        rows.append([str(i), f"item {i}"])
    (tmp_path / "imgs" / "3.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "imgs" / "7.jpg").write_bytes(b"")
    pf.truncated_image(tmp_path / "imgs" / "11.jpg")
    pf.write_csv(tmp_path / "t.csv", ["id", "title"], rows)
    opts = dict(path=str(tmp_path / "t.csv"), images="imgs", image_pattern="{}.jpg", columns={"id": "id"})
    err = error_of(registry, **opts)
    assert "3 of 30 image files are not usable pictures" in err.message and err.file.endswith("t.csv")
    assert "item 3 (" in err.message and "imgs/7.jpg is empty (0 bytes)" in err.message and "truncated" in err.message.lower()
    assert err.field == "image_pattern" and "missing_images: skip" in err.fix
    skipped = load(registry, missing_images="skip", **opts)
    assert skipped.items.height == 27 and skipped.notes == {"skipped_unreadable_images": 3}
    blank = load(registry, missing_images="blank", **opts)
    assert blank.items["image"].null_count() == 3 and blank.notes == {"blank_unreadable_images": 3}


def test_truncated_image_fails_clearly_whatever_the_policy(tmp_path):
    path = pf.truncated_image(tmp_path / "cut.jpg")
    for policy in ("error", "blank", "skip"):
        with pytest.raises(BenchError) as info:
            load_image(str(path), policy=policy, item_id="sku9")
        err = info.value
        assert "sku9" in err.message and "truncated" in err.message.lower() and err.file == str(path)
        assert "missing_images: blank" in err.fix
    with pytest.raises(BenchError, match="is missing"):
        load_image(str(tmp_path / "gone.jpg"), policy="blank")
    assert load_image(None, policy="blank").getpixel((1, 1)) == (128, 128, 128)


def test_duplicate_ids_name_the_file_and_column_or_keep_the_first(registry, tmp_path):
    pf.write_csv(tmp_path / "t.csv", ["sku", "title"], [["a", "x"], ["b", "y"], ["a", "z"], ["b", "w"], ["c", "v"]])
    err = error_of(registry, path=str(tmp_path / "t.csv"), columns={"id": "sku"})
    assert err.file.endswith("t.csv") and err.field == "columns.id (sku)" and "e.g. a, b" in err.message
    assert "duplicate_ids: keep_first" in err.fix
    kept = load(registry, path=str(tmp_path / "t.csv"), columns={"id": "sku"}, duplicate_ids="keep_first")
    assert kept.items["title"].to_list() == ["x", "y", "v"] and kept.notes == {"dropped_duplicate_ids": 2}
    pf.write_csv(tmp_path / "n.csv", ["sku", "title"], [["a", "x"], ["", "y"]])
    err = error_of(registry, path=str(tmp_path / "n.csv"), columns={"id": "sku"})
    assert "no id (data rows 2)" in err.message


def test_group_shared_across_a_fixed_split_and_unknown_split_values(registry, tmp_path):
    rows = [["1", "a", "g1", "train"], ["2", "b", "g1", "test"], ["3", "c", "g2", "val"], ["4", "d", "g2", "VALID"]]
    pf.write_csv(tmp_path / "t.csv", ["id", "title", "grp", "part"], rows)
    opts = {"path": str(tmp_path / "t.csv"), "columns": {"id": "id", "group": "grp", "split": "part"}}
    err = error_of(registry, **opts)
    assert "group 'g1' appears in more than one split" in err.message and err.file.endswith("t.csv")
    rows[1][3] = "train"
    pf.write_csv(tmp_path / "t.csv", ["id", "title", "grp", "part"], rows)
    assert load(registry, **opts).items["split"].to_list() == ["train", "train", "dev", "dev"]
    rows[0][3] = "holdout"
    pf.write_csv(tmp_path / "t.csv", ["id", "title", "grp", "part"], rows)
    err = error_of(registry, **opts)
    assert "'holdout' in data row 1" in err.message and err.field == "part" and "train, dev, test, ssl" in err.fix


def test_options_catch_typos(registry, tmp_path):
    spec = registry.get("dataset", "table")
    with pytest.raises(BenchError) as info:
        spec.parse_options({"path": "x.csv", "colums": {"id": "sku"}})
    assert "colums" in info.value.message and "columns" in info.value.fix
    with pytest.raises(BenchError) as info:
        spec.parse_options({"path": "x.csv", "columns": {"titel": "name"}})
    assert "titel" in info.value.message
    with pytest.raises(BenchError):
        spec.parse_options({"path": "x.csv", "missing_images": "ignore"})


def test_trial_row_reports_skipped_images(registry, tmp_path):
    """End to end: rows dropped for missing images show up as data_skipped_missing_images."""
    from conftest import TINY_TEXT, tiny_trial

    from bench.config.matrix import trial_key

    from bench.config.schema import TrialConfig, TrialSpec
    from bench.trial.context import TrialContext
    from bench.trial.run import run_trial

    rows = []
    for i in range(30):
        rows.append([f"i{i}", f"{['red', 'blue', 'green'][i % 3]} item {i}", f"{i}.jpg", ["r", "b", "g"][i % 3]])
        if i % 10:
            pf.tiny_image(tmp_path / "imgs" / f"{i}.jpg", i)
    rows += [["x1", "odd item", "1.jpg", "x"], ["x2", "odd thing", "2.jpg", "x"]]  # a label too rare to keep
    pf.write_csv(tmp_path / "t.csv", ["id", "title", "img", "label"], rows)
    dataset = {"name": "table", "options": {"path": str(tmp_path / "t.csv"), "images": "imgs", "missing_images": "skip",
                                            "columns": {"id": "id", "image": "img", "label": "label"},
                                            "min_items_per_label": 5}}
    config = TrialConfig.model_validate(tiny_trial(dataset=dataset, encoders={"text": TINY_TEXT})).model_dump(mode="json")
    row = run_trial(TrialSpec(trial_key(config), {}, {}, config), TrialContext(registry=registry)).row
    assert row["status"] == "ok", row["error"]
    assert row["data_skipped_missing_images"] == 3
    assert row["data_dropped_rare_labels"] == 1 and row["data_dropped_rare_label_items"] == 2
    assert row["n_train"] + row["n_dev"] + row["n_test"] == 27


def test_jsonl_bad_line_is_named_or_skipped_and_mixed_types_survive(registry, tmp_path):
    lines = ['{"id": 1, "title": "a", "tags": ["x"]}', '', '{"id": "2", "title": "b", "tags": "y z"}',
             '{"id": 3, "title": "c"', '{"id": 4, "title": "d"}']
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    err = error_of(registry, path=str(tmp_path / "t.jsonl"), columns={"id": "id"})
    assert err.field == "line 4" and err.file.endswith("t.jsonl") and "bad_rows: skip" in err.fix
    cat = load(registry, path=str(tmp_path / "t.jsonl"), columns={"id": "id"}, text_columns=["tags"], bad_rows="skip")
    assert cat.items["item_id"].to_list() == ["1", "2", "4"] and cat.notes == {"skipped_bad_rows": 1}
    assert cat.items["title"].to_list() == ["a x", "b y z", "d"]


# category paths as list literals ---------------------------------------------------------

FLIPKART = {"id": "uniq_id", "title": "product_name", "label": "product_category_tree"}


@pytest.mark.parametrize("cell, separator, parts", [
    ('["Home >> Decor >> Clocks"]', ">>", ["Home", "Decor", "Clocks"]),
    ("[['Beauty', 'Makeup']]", ">", ["Beauty", "Makeup"]),
    ("[['Beauty', 'Makeup', 'Lips'], ['Beauty', 'Gifts']]", ">", ["Beauty", "Makeup", "Lips"]),  # first path
    ('["Beauty", "Skin Care", "Face"]', ">", ["Beauty", "Skin Care", "Face"]),  # Amazon 2018: parts of one path
    ('["A >> B", "C >> D"]', ">>", ["A", "B"]),  # several paths as strings: the first
    ("[\"Men's\", 'Shaving \\'Gel\\'']", ">", ["Men's", "Shaving 'Gel'"]),
    ("[u'Caf\\xe9']", ">", ["Café"]),
    ('"Home >> Decor"', ">>", ["Home", "Decor"]),
    ("Home >> Decor", ">>", ["Home", "Decor"]),
    ('"Home" > "Decor"', ">", ["Home", "Decor"]),
    ("[Refurbished] Phones > Apple", ">", ["[Refurbished] Phones", "Apple"]),  # a bracket, not a list
    ("[]", ">", []), ("[[]]", ">", []), ("  ", ">", []),
])
def test_category_cells_parse_to_clean_parts(cell, separator, parts):
    from mic_bench_plugins.datasets.category_paths import parse_path

    assert parse_path(cell, separator) == parts


@pytest.mark.parametrize("cell, words", [
    ("[__import__('os').system('touch pwned')]", "other than lists of quoted strings"),
    ('["a"] + ["b"]', "other than lists"),
    ("[f'{1}']", "other than lists"),
    ("[b'bytes']", "other than lists"),
    ("[[['a']]]", "deeper than 2"),
    ("[" * 10_000 + "]" * 10_000, "deeper than 2"),
    ("['" + "x" * 70_000 + "']", "characters long"),
    ("['unclosed", "neither a JSON list nor a Python list"),
    ('[1, 2]', "other than lists of strings"),
    ("[{'a': 'b'}]", "other than lists"),
    ("[" + "9" * 5000 + "]", "neither a JSON list"),  # past the int digit limit: refused, not a crash
])
def test_category_cells_that_are_not_lists_of_strings_are_refused(cell, words, tmp_path, monkeypatch):
    from mic_bench_plugins.datasets.category_paths import CellError, parse_path

    monkeypatch.chdir(tmp_path)
    with pytest.raises(CellError) as info:
        parse_path(cell, ">")
    assert words in str(info.value) and not (tmp_path / "pwned").exists()


def test_flipkart_category_trees_with_double_arrow_and_levels(registry, tmp_path):
    path = pf.flipkart_products(tmp_path)
    cat = load(registry, path=str(path), columns=FLIPKART, label_separator=">>", label_level=2)
    assert cat.items.height == 12 and cat.items["title"][0] == "Product 0, pack of 1"
    assert cat.label_names == ["Clothing > Women's Clothing", "Home Decor & Festive Needs > Clocks",
                               "Home Decor & Festive Needs > Showpieces", "Pet Supplies > Grooming",
                               "Watches > Wrist Watches"]
    names = load(registry, path=str(path), columns=FLIPKART, label_separator=">>", label_level=2, label_form="name")
    assert sorted(names.label_names) == ["Clocks", "Grooming", "Showpieces", "Women's Clothing", "Wrist Watches"]
    whole = load(registry, path=str(path), columns=FLIPKART, label_separator=">>")
    assert whole.items["label"][0] == "Clothing > Women's Clothing > Lingerie, Sleep & Swimwear > Shorts > Alisha Shorts"
    for labels in (cat.label_names, names.label_names, whole.label_names):
        assert not any(ch in label for label in labels for ch in "[]\"")
    assert whole.label_paths[0].split("\x1f") == ["Clothing", "Women's Clothing", "Lingerie, Sleep & Swimwear",
                                                  "Shorts", "Alisha Shorts"]


def test_amazon_csv_python_literal_categories(registry, tmp_path):
    path = pf.amazon_csv(tmp_path)
    cols = {"id": "asin", "label": "categories"}
    cat = load(registry, path=str(path), columns=cols, label_level=2)
    assert cat.items["label"].to_list() == ["Beauty > Makeup", "Beauty > Makeup", "Beauty > Skin Care",
                                            "Beauty > Makeup", "Beauty > Men's", "Beauty > Bath & Body"]
    leaf = load(registry, path=str(path), columns=cols, label_level=3, label_form="name")
    assert leaf.items["label"].to_list() == ["Lips", "Eyes", "Face", "Lips", "Shaving", "Soaps"]
    # JSON lines and Parquet list columns are paths too, not space-joined text
    frame = pl.DataFrame({"asin": ["a", "b", "c"], "title": ["x", "y", "z"],
                          "cats": [["Beauty", "Makeup"], ["Beauty", "Skin"], ["Home", "Mugs"]]})
    frame.write_parquet(tmp_path / "t.parquet")
    pq = load(registry, path=str(tmp_path / "t.parquet"), columns={"id": "asin", "label": "cats"}, label_level=1)
    assert pq.items["label"].to_list() == ["Beauty", "Beauty", "Home"]


def test_bad_category_cell_names_its_line_and_can_be_skipped(registry, tmp_path):
    path = pf.flipkart_products(tmp_path)
    text = path.read_text(encoding="utf-8").replace('"[""Watches >> Wrist Watches >> Maxima Wrist Watches""]"',
                                                    "['Watches >> Wrist Watches", 1)
    path.write_text(text, encoding="utf-8")
    lines = text.splitlines()
    bad_line = next(i for i, line in enumerate(lines, start=1) if "['Watches >> Wrist Watches" in line)
    assert bad_line == 12  # data row 10, but a description spanning two lines comes before it
    err = error_of(registry, path=str(path), columns=FLIPKART, label_separator=">>")
    assert err.field == f"line {bad_line}" and err.file.endswith("flipkart_com-ecommerce_sample.csv")
    assert "product_category_tree" in err.message and "neither a JSON list nor a Python list" in err.message
    assert "bad_rows: skip" in err.fix
    cat = load(registry, path=str(path), columns=FLIPKART, label_separator=">>", label_level=1, bad_rows="skip")
    assert cat.items.height == 11 and cat.notes == {"skipped_bad_label_cells": 1}


# min_items_per_label ----------------------------------------------------------------------

def test_min_items_per_label_drops_or_merges_and_counts_in_notes(registry, tmp_path):
    path = pf.flipkart_products(tmp_path)
    opts = {"path": str(path), "columns": FLIPKART, "label_separator": ">>", "label_level": 2}
    counts = {}
    for label in load(registry, **opts).items["label"].to_list():
        counts[label] = counts.get(label, 0) + 1
    for n in (1, 2, 3, 4, 6):
        rare = {k: v for k, v in counts.items() if v < n}
        if len(counts) - len(rare) < 2:
            continue
        cat = load(registry, **opts, min_items_per_label=n)
        assert cat.items.height == 12 - sum(rare.values())
        assert set(cat.label_names) == set(counts) - set(rare)
        assert cat.notes == {"dropped_rare_labels": len(rare), "dropped_rare_label_items": sum(rare.values())}
    merged = load(registry, **opts, min_items_per_label=3, rare_labels="other")
    assert merged.items.height == 12 and merged.items["label"].to_list().count("other") == 4
    assert merged.notes == {"merged_rare_labels": 3, "merged_rare_label_items": 4}
    err = error_of(registry, **opts, min_items_per_label=3, rare_labels="other", other_label="Clothing > Women's Clothing")
    assert err.field == "other_label"


def test_rare_label_error_names_label_count_and_line(registry, tmp_path):
    path = pf.flipkart_products(tmp_path)
    opts = {"path": str(path), "columns": FLIPKART, "label_separator": ">>", "label_level": 2}
    err = error_of(registry, **opts, min_items_per_label=2, rare_labels="error")
    assert "label 'Home Decor & Festive Needs > Clocks' has 1 item (line 11)" in err.message
    assert "min_items_per_label: 2" in err.message and "2 labels do" in err.message
    assert err.field == "product_category_tree" and "rare_labels: drop" in err.fix
    err = error_of(registry, **opts, min_items_per_label=5)
    assert "one class only" in err.message and "min_items_per_label: 5" in err.message
    assert "lower min_items_per_label" in err.fix


# given splits ------------------------------------------------------------------------------

def test_split_file_reproduces_a_given_split(registry, tmp_path):
    path = pf.user_table(tmp_path)
    wanted = {"sku0": "test", "sku1": "test", "sku2": "train", "sku3": "train", "sku4": "val", "sku5": "dev"}
    pf.split_file(tmp_path / "paper_split.csv", list(wanted.items()))
    cols = {**MAPPED, "split": None}
    cat = load(registry, path=str(path), images="images", columns=cols, split_file="paper_split.csv")
    got = dict(zip(cat.items["item_id"].to_list(), cat.items["split"].to_list()))
    assert got == {k: ("dev" if v == "val" else v) for k, v in wanted.items()}
    err = error_of(registry, path=str(path), images="images", columns=MAPPED, split_file="paper_split.csv")
    assert "both a split column" in err.message and err.field == "split_file"


def test_split_file_errors_name_the_line(registry, tmp_path):
    path = pf.user_table(tmp_path)
    cols = {**MAPPED, "split": None}
    base = [("sku0", "train"), ("sku1", "train"), ("sku2", "test"), ("sku3", "test"), ("sku4", "dev"), ("sku5", "dev")]

    def error_with(pairs, **extra):
        split = pf.split_file(tmp_path / "s.csv", pairs)
        return error_of(registry, path=str(path), images="images", columns=cols, split_file=str(split), **extra)

    err = error_with(base + [("sku9", "test"), ("sku8", "train")])
    assert "2 item ids in the split file are not in the catalogue" in err.message and "'sku9' (line 8)" in err.message
    assert err.file.endswith("s.csv") and err.field == "line 8"
    err = error_with(base[:4])
    assert "2 of 6 catalogue items are not in the split file, e.g. sku4, sku5" in err.message
    assert "unlisted_items: drop" in err.fix
    cat = load(registry, path=str(path), images="images", columns=cols, split_file=str(tmp_path / "s.csv"),
               unlisted_items="drop")
    assert cat.items.height == 4 and cat.notes == {"dropped_unlisted_items": 2}
    err = error_with(base[:5] + [("sku5", "holdout")])
    assert "unknown split value 'holdout' on line 7" in err.message and "train, dev, test, ssl" in err.fix
    err = error_with(base + [("sku0", "test")])
    assert "listed twice (lines 2 and 8)" in err.message
    err = error_with([("sku0", "train"), ("sku1", "test")] + base[2:])  # sku0 and sku1 are one product (g0)
    assert "group 'g0' appears in more than one split" in err.message and err.file.endswith("s.csv")
    (tmp_path / "h.csv").write_text("id;part\nsku0;train\n", encoding="utf-8")
    err = error_of(registry, path=str(path), images="images", columns=cols, split_file=str(tmp_path / "h.csv"))
    assert "needs a header with columns item_id and split" in err.message and "item_id,split" in err.fix


def test_given_split_with_min_items_refuses_labels_never_in_train(registry, tmp_path):
    path = pf.user_table(tmp_path)  # labels 2 and 3 (sku2, sku3) are only in test
    err = error_of(registry, path=str(path), images="images", columns=MAPPED, min_items_per_label=1)
    assert "label 'Beauty > Skin > Face' keeps 1 item" in err.message and "none in train" in err.message
    assert "2 labels are like this" in err.message and "raise min_items_per_label" in err.fix
    assert err.file.endswith("items.csv") and err.field == "category"
    cat = load(registry, path=str(path), images="images", columns=MAPPED, min_items_per_label=2)
    assert cat.label_names == ["Beauty > Makeup > Eyes", "Beauty > Makeup > Lips"]


# one modality ------------------------------------------------------------------------------

def test_titles_only_and_images_only_tables(registry, tmp_path):
    path = pf.user_table(tmp_path)
    titles = load(registry, path=str(path), columns={**MAPPED, "image": None})
    assert titles.items["image"].null_count() == 6 and not titles.has_images and titles.has_titles
    images = load(registry, path=str(path), images="images", columns={**MAPPED, "title": None})
    assert set(images.items["title"].to_list()) == {""} and images.has_images and not images.has_titles
    assert images.tasks == {"classification", "matching"}


def test_titles_only_matching_suite_runs_and_fusions_needing_images_fail_clearly(registry, tmp_path, write_suite):
    """End to end: Shopee's train.csv without its image folder (images: null), through suite
    validation and a real tiny trial; a fusion or objective that reads pictures fails at trial start."""
    from conftest import TINY_TEXT, tiny_trial

    from bench.config.suite import load_suite
    from bench.trial.context import TrialContext
    from bench.trial.run import run_trial

    rows = []
    for g in range(12):
        for k in range(3):
            rows.append([f"train_{g}_{k}", f"{g}_{k}.jpg", "94974f937d4c2433",
                         f"{['paper bag', 'double tape', 'lunch meat', 'phone case'][g % 4]} {g} variant {k}", f"{g}"])
    pf.write_csv(tmp_path / "shopee" / "train.csv", ["posting_id", "image", "image_phash", "title", "label_group"], rows)
    dataset = {"name": "shopee_price_match", "options": {"path": str(tmp_path / "shopee"), "images": None}}
    stage = {"objectives": ["triplet"], "epochs": 1, "batch_size": 12, "optimizer": {"lr": 1e-3}}
    suite = write_suite({"name": "titles_only", "trial": tiny_trial(dataset=dataset, task="matching", stages=[stage]),
                         "matrix": {"fusion": ["text_only", "late"]}})
    trials = {t.axes["fusion"]: t for t in load_suite(suite, registry=registry).trials}
    ctx = TrialContext(registry=registry)
    row = run_trial(trials["text_only"], ctx).row
    assert row["status"] == "ok", row["error"]
    assert row["n_train"] + row["n_dev"] + row["n_test"] == 36 and 0 <= row["ndcg@10"] <= 1
    row = run_trial(trials["late"], ctx).row
    assert row["status"] == "failed"
    assert "fusion 'late' needs images, but the catalogue shopee_price_match has none" in row["error"]
    assert "trial.fusion.name" in row["error"] and "fusion text_only" in row["error"]
    ssl = {**stage, "objectives": ["convirt"]}
    from bench.config.matrix import trial_key
    from bench.config.schema import TrialConfig, TrialSpec
    config = TrialConfig.model_validate(tiny_trial(dataset=dataset, task="matching", stages=[ssl])).model_dump(mode="json")
    row = run_trial(TrialSpec(trial_key(config), {}, {}, config), ctx).row
    assert row["status"] == "failed" and "objective 'convirt' needs images" in row["error"]
    assert "trial.stages[0].objectives[0].name" in row["error"]
    images_only = {"name": "table", "options": {"path": str(tmp_path / "shopee" / "train.csv"),
                                                "columns": {"id": "posting_id", "title": None, "image": "image",
                                                            "group": "label_group"},
                                                "images": str(tmp_path / "pics")}}
    for name in {r[1] for r in rows}:
        pf.tiny_image(tmp_path / "pics" / name)
    config = TrialConfig.model_validate(tiny_trial(dataset=images_only, task="matching", stages=[stage],
                                                   encoders={"text": TINY_TEXT})).model_dump(mode="json")
    row = run_trial(TrialSpec(trial_key(config), {}, {}, config), ctx).row
    assert row["status"] == "failed" and "fusion 'text_only' needs titles" in row["error"]
    assert "fusion image_only" in row["error"]


def test_vectorised_category_cut_agrees_with_the_cell_parser():
    """Plain paths and ["A >> B"] cells are cut by polars; every other shape by parse_path: both agree."""
    from mic_bench_plugins.datasets.category_paths import category_columns, label_of, parse_path

    sample = ['["A >> B >> C"]', "[['Beauty', 'Makeup']]", "x >> y", "[Refurbished] Phones >> z", '" Q >> R "', None,
              '["  >> A"]', "[u'Caf\\xe9 >> b']", '["A >> B", "C >> D"]', "A>>B>>C>>D", '["a \\"quoted\\" >> b"]']
    cells = pl.Series(sample, dtype=pl.Utf8)
    for level in (None, 1, 2, 3):
        for form in ("path", "name"):
            labels, paths, bad = category_columns(cells, ">>", level, form)
            assert not bad
            for cell, label, path in zip(sample, labels.to_list(), paths.to_list()):
                parts = parse_path(cell, ">>")
                assert label == label_of(parts, level, form) and path == ("\x1f".join(parts) or None)


# -- missing-value spellings, repeated columns and keys, wide encodings, bombs ----------------------
def test_missing_value_spellings_are_missing_not_classes_unless_told(registry, tmp_path):
    cells = ["a", "b", "NaN", "null", "NA", "N/A", "None", "", "a", "b"]
    pf.write_csv(tmp_path / "m.csv", ["id", "name", "category", "group"],
                 [[f"i{i}", f"p {i}", c, "null" if i == 0 else f"g{i}"] for i, c in enumerate(cells)])
    columns = {"id": "id", "title": "name", "label": "category", "group": "group"}
    items = load(registry, path=str(tmp_path / "m.csv"), columns=columns).items
    assert sorted(items["label"].drop_nulls().unique().to_list()) == ["a", "b"]
    assert items["label"].null_count() == 6 and items["group"].null_count() == 1
    kept = load(registry, path=str(tmp_path / "m.csv"), columns=columns, missing_values=[]).items
    assert {"NaN", "null", "NA", "N/A", "None"} <= set(kept["label"].drop_nulls().to_list())
    assert kept["label"].null_count() == 1  # an empty cell stays missing


def test_utf16_tables_are_named_and_read_when_told(registry, tmp_path):
    body = "id,name,category\n" + "".join(f"i{i},café {i},{'ab'[i % 2]}\n" for i in range(6))
    columns = {"id": "id", "title": "name", "label": "category"}
    for codec, named in (("utf-16", "utf-16"), ("utf-16-le", "utf-16-le"), ("utf-16-be", "utf-16-be")):
        path = tmp_path / f"{codec}.csv"
        path.write_bytes(body.encode(codec))
        for told in ("utf-8", "latin-1"):
            with pytest.raises(BenchError) as info:
                load(registry, path=str(path), columns=columns, encoding=told)
            assert info.value.field == "encoding" and f"set encoding: {named}" in info.value.fix
        assert load(registry, path=str(path), columns=columns, encoding=named).items["title"][0] == "café 0"


def test_gzip_bomb_is_refused_with_bounded_memory(registry, tmp_path):
    """A .jsonl.gz of 0.25 MB inflating to 256 MiB: refused once 64 MiB are out (GZIP_FLOOR, above
    GZIP_MAX_RATIO x its size), having held no more than about that (gzip.decompress: all 256 MiB)."""
    import tracemalloc
    import zlib

    path = tmp_path / "bomb.jsonl.gz"
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1 << 20)
    with open(path, "wb") as handle:
        for _ in range(256):
            handle.write(packer.compress(block))
        handle.write(packer.flush())
    tracemalloc.start()
    try:
        with pytest.raises(BenchError) as info:
            load(registry, path=str(path), columns={"id": "id"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "inflates to more than 67108864 bytes" in info.value.message and info.value.file == str(path)
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_repeated_json_keys_are_refused_or_skipped(registry, tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(f'{{"id": "i{i}", "name": "p {i}", "category": "{"ab"[i % 2]}"}}\n' for i in range(6))
                    + '{"id": "i9", "name": "x", "category": "a", "category": "b"}\n')
    columns = {"id": "id", "title": "name", "label": "category"}
    with pytest.raises(BenchError) as info:
        load(registry, path=str(path), columns=columns)
    assert info.value.field == "line 7" and "the key 'category' appears twice" in info.value.message
    catalog = load(registry, path=str(path), columns=columns, bad_rows="skip")
    assert catalog.items.height == 6 and catalog.notes["skipped_bad_rows"] == 1
