"""`bench data inspect`: a dataset loaded through its plugin, summarised as text or JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fixtures import product_files as pf

from bench.reporting.data_inspect import data, parse_option_pairs
from bench.errors import BenchError

MAPPED = '{"columns": {"id": "sku", "title": "name", "image": "photo", "label": "category", "group": "product", "split": "split"}}'


def run(*args):
    return CliRunner().invoke(data, ["inspect", *args])


def test_option_pairs_nest_and_read_yaml_values():
    opts = parse_option_pairs(["path=items.csv", "columns.id=sku", "label_level=2", "text_columns=[a, b]",
                               "strip_html=true"], '{"columns": {"title": "name"}, "images": "imgs"}')
    assert opts == {"path": "items.csv", "images": "imgs", "columns": {"title": "name", "id": "sku"},
                    "label_level": 2, "text_columns": ["a", "b"], "strip_html": True}
    with pytest.raises(BenchError) as info:
        parse_option_pairs(["path"])
    assert info.value.field == "--option" and "key=value" in info.value.message
    with pytest.raises(BenchError) as info:
        parse_option_pairs([], "{not json")
    assert info.value.field == "--options-json"


def test_json_report_counts_labels_groups_titles_images_and_splits(tmp_path):
    path = pf.user_table(tmp_path)
    pf.truncated_image(tmp_path / "images" / "sku3.jpg")
    refused = run("table", "--option", f"path={path}", "--option", "images=images", "--options-json", MAPPED)
    assert isinstance(refused.exception, BenchError) and "item sku3" in refused.exception.message
    result = run("table", "--option", f"path={path}", "--option", "images=images", "--options-json", MAPPED,
                 "--option", "label_level=2", "--option", "missing_images=blank", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["items"] == 6 and report["tasks"] == ["classification", "matching"]
    labels = report["labels"]
    assert labels["count"] == 3 and labels["top"][0] == ["Beauty > Makeup", 4]
    assert labels["head_labels"] + labels["tail_labels"] == 3 and labels["head_items"] >= 0.8 * 6
    assert report["groups"]["count"] == 3 and report["groups"]["sizes"]["2"] == 3
    assert report["titles"]["tokens"]["max"] == 2 and report["titles"]["chars"]["min"] == 9
    assert report["images"] == {"with_image": 5, "without_image": 1, "placeholders": 1, "titles_only": False,
                                "checked": 5, "unreadable": 0, "unreadable_examples": []}
    assert report["notes"] == {"blank_unreadable_images": 1}
    assert report["splits"] == {"dev": 2, "test": 2, "train": 2} and report["duplicate_ids"] == 0


def test_a_titles_only_catalogue_has_no_placeholders():
    """With no image at all, trials refuse parts that read images: nothing trains on a placeholder."""
    fixture = Path(__file__).resolve().parent / "fixtures" / "deepmatcher_abt_buy"
    result = run("deepmatcher", "--option", f"path={fixture}", "--json")
    assert result.exit_code == 0, result.output
    images = json.loads(result.output)["images"]
    assert images["titles_only"] and images["placeholders"] == 0 and images["without_image"] == 25
    text = run("deepmatcher", "--option", f"path={fixture}").output
    assert "titles-only catalogue" in text and "grey placeholder" not in text


def test_text_report_and_sampled_image_check(tmp_path):
    path = pf.user_table(tmp_path)
    pf.truncated_image(tmp_path / "images" / "sku3.jpg")
    (tmp_path / "images" / "sku5.jpg").unlink()
    result = run("table", "--option", f"path={path}", "--option", "images=images", "--options-json", MAPPED,
                 "--option", "missing_images=blank", "--check-images", "0")
    assert result.exit_code == 0, result.output
    assert "items: 6" in result.output and "labels: 4 over 6 items" in result.output
    assert "images: 4 found, 2 without an image; 0 of 0 checked do not decode" in result.output
    assert "placeholders: 2 items" in result.output
    assert "splits: train 2" not in result.output and "dev 2, test 2, train 2" in result.output
    assert "load notes: blank_images 1, blank_unreadable_images 1" in result.output
    full = run("table", "--option", f"path={path}", "--option", "images=images", "--options-json", MAPPED,
               "--option", "missing_images=blank")
    assert "0 of 4 checked do not decode" in full.output


def test_public_reader_and_dropped_duplicates_are_reported(tmp_path):
    root = pf.shopee_price_match(tmp_path)
    report = json.loads(run("shopee_price_match", "--option", f"path={root}", "--json").output)
    assert report["labels"] is None and report["groups"]["matchable"] == 3 and report["splits"] is None
    pf.write_csv(tmp_path / "d.csv", ["id", "title"], [["a", "x"], ["a", "y"], ["b", "z"]])
    report = json.loads(run("table", "--option", f"path={tmp_path / 'd.csv'}", "--option", "columns.id=id",
                            "--option", "duplicate_ids=keep_first", "--json").output)
    assert report["duplicate_ids"] == 1 and report["items"] == 2


def test_errors_are_bench_errors_naming_the_problem(tmp_path):
    result = run("tabel", "--option", "path=x.csv")
    assert isinstance(result.exception, BenchError) and "did you mean 'table'" in result.exception.fix
    result = run("table", "--option", "path=x.csv", "--option", "colums.id=sku")
    assert isinstance(result.exception, BenchError) and "colums" in result.exception.message
    result = run("table", "--option", f"path={tmp_path / 'missing.csv'}")
    assert isinstance(result.exception, BenchError) and result.exception.field == "path"


def test_category_path_levels_and_min_items_table(tmp_path):
    path = pf.flipkart_products(tmp_path)
    args = ["table", "--option", f"path={path}", "--option", "columns.id=uniq_id", "--option", "columns.title=product_name",
            "--option", "columns.label=product_category_tree", "--option", "label_separator='>>'",
            "--option", "label_level=2"]
    result = run(*args, "--check-images", "0", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # brute force from the fixture's own trees: distinct prefixes and items per depth
    trees = [(t.strip('[]"').split(" >> "), n) for t, n in pf.FLIPKART_TREES]
    for entry in report["label_levels"]:
        k = entry["level"]
        prefixes: dict[str, int] = {}
        for parts, n in trees:
            key = " > ".join(parts[:k])
            prefixes[key] = prefixes.get(key, 0) + n
        assert entry["labels"] == len(prefixes)
        assert entry["items_this_deep"] == sum(n for parts, n in trees if len(parts) >= k)
        assert entry["examples"][0] == [max(prefixes, key=lambda p: (prefixes[p], [-ord(c) for c in p])),
                                        max(prefixes.values())]
    assert [e["level"] for e in report["label_levels"]] == [1, 2, 3, 4, 5]
    assert report["labels"]["count"] == 5  # the catalogue itself is cut at label_level 2
    per_label: dict[str, int] = {}
    for parts, n in trees:
        per_label[" > ".join(parts[:2])] = per_label.get(" > ".join(parts[:2]), 0) + n
    for row in report["min_items_per_label"]:
        kept = [c for c in per_label.values() if c >= row["min_items"]]
        assert row == {"min_items": row["min_items"], "labels": len(kept), "items": sum(kept)}
    assert [r["min_items"] for r in report["min_items_per_label"]] == [1, 2, 5, 10, 20]
    text = run(*args, "--check-images", "0").output
    assert "category path levels" in text and "Clothing > Women's Clothing (5)" in text
    assert "min_items_per_label: N keeps" in text
    filtered = json.loads(run(*args, "--option", "min_items_per_label=2", "--check-images", "0", "--json").output)
    assert filtered["notes"] == {"dropped_rare_labels": 2, "dropped_rare_label_items": 2}
    assert "load notes: dropped_rare_labels 2, dropped_rare_label_items 2" in run(
        *args, "--option", "min_items_per_label=2", "--check-images", "0").output


def test_path_levels_stop_at_ten_for_absurdly_deep_paths(tmp_path):
    deep = " > ".join(f"p{i}" for i in range(500))
    pf.write_csv(tmp_path / "t.csv", ["title", "cat"], [["a", deep], ["b", "x > y"]])
    report = json.loads(run("table", "--option", f"path={tmp_path / 't.csv'}", "--option", "columns.label=cat",
                            "--check-images", "0", "--json").output)
    assert [e["level"] for e in report["label_levels"]] == list(range(1, 11))
    assert report["label_levels"][2] == {"level": 3, "labels": 2, "items_this_deep": 1,
                                         "examples": [["p0 > p1 > p2", 1], ["x > y", 1]]}
