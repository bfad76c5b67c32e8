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
from bench.images import load_image

MAPPED = {"id": "sku", "title": "name", "image": "photo", "label": "category", "group": "product", "split": "split"}


def load(registry, **options):
    spec = registry.get("dataset", "table")
    return spec.factory(spec.parse_options(options), None)


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

    from bench.suite import TrialConfig, TrialSpec, trial_key
    from bench.trial import TrialContext, run_trial

    rows = []
    for i in range(30):
        rows.append([f"i{i}", f"{['red', 'blue', 'green'][i % 3]} item {i}", f"{i}.jpg", ["r", "b", "g"][i % 3]])
        if i % 10:
            pf.tiny_image(tmp_path / "imgs" / f"{i}.jpg", i)
    pf.write_csv(tmp_path / "t.csv", ["id", "title", "img", "label"], rows)
    dataset = {"name": "table", "options": {"path": str(tmp_path / "t.csv"), "images": "imgs", "missing_images": "skip",
                                            "columns": {"id": "id", "image": "img", "label": "label"}}}
    config = TrialConfig.model_validate(tiny_trial(dataset=dataset, encoders={"text": TINY_TEXT})).model_dump(mode="json")
    row = run_trial(TrialSpec(trial_key(config), {}, {}, config), TrialContext(registry=registry)).row
    assert row["status"] == "ok", row["error"]
    assert row["data_skipped_missing_images"] == 3
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
