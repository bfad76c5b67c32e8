"""`bench data inspect`: look at a dataset through its plugin before spending a suite on it.

Loads the catalogue exactly as a trial would (registry, options model, checks), then reports
what decides whether a benchmark on it means anything: how many labels and how long their
tail, product groups, title lengths, images that are missing or do not decode, and splits.
"""
from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

import click
import yaml
from tabulate import tabulate

from bench.errors import BenchError

if TYPE_CHECKING:  # the catalogue pulls in torch; the CLI imports this module at start-up
    import polars as pl

    from bench.data.catalog import Catalog

TOP_LABELS = 10
GROUP_SIZE_BINS = ("1", "2", "3", "4", "5-9", "10+")
MIN_ITEMS_STEPS = (1, 2, 5, 10, 20)
LEVEL_EXAMPLES = 3
MAX_LEVELS = 10  # a hostile or odd file may hold paths thousands of parts deep
PATH_JOIN, LABEL_JOIN = "\x1f", " > "  # as the dataset readers write Catalog.label_paths


def parse_option_pairs(pairs: tuple[str, ...] | list[str], options_json: str | None = None) -> dict[str, Any]:
    """``--options-json`` first, then each ``key=value`` (dotted keys nest; values read as YAML)."""
    options: dict[str, Any] = {}
    if options_json:
        try:
            options = json.loads(options_json)
        except ValueError as exc:
            raise BenchError(f"--options-json is not valid JSON ({exc})", field="--options-json",
                             fix='write an object, e.g. \'{"path": "items.csv", "columns": {"title": "name"}}\'') from None
        if not isinstance(options, dict):
            raise BenchError("--options-json must be a JSON object", field="--options-json",
                             fix='write an object, e.g. \'{"path": "items.csv"}\'')
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"option '{pair}' is not key=value", field="--option",
                             fix="write --option path=items.csv or --option columns.title=name")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        target = options
        *parents, leaf = key.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise BenchError(f"option '{key}' nests under a value that is not a mapping", field="--option",
                                 fix="set the parent as a mapping, e.g. --option columns.title=name")
        target[leaf] = value
    return options


def load_dataset(name: str, options: dict[str, Any]) -> Catalog:
    from bench.data.catalog import Catalog
    from bench.api.interfaces import BuildContext
    from bench.api.plugins import get_registry

    catalog = get_registry().get("dataset", name, field="DATASET").build(options, BuildContext(), field="--option")
    if not isinstance(catalog, Catalog):
        raise BenchError(f"dataset plugin '{name}' returned {type(catalog).__name__}, not a Catalog", field="DATASET",
                         fix="the plugin's factory must return bench.data.catalog.Catalog")
    return catalog


def _stats(values: pl.Series) -> dict[str, float]:
    if values.len() == 0:
        return {}
    return {"min": int(values.min()), "mean": round(float(values.mean()), 1), "median": float(values.median()),
            "p95": float(values.quantile(0.95, "nearest")), "max": int(values.max())}


def label_report(items: pl.DataFrame) -> dict[str, Any] | None:
    from bench.metrics.classification import head_tail_labels  # imports scikit-learn: only when inspecting

    labels = items["label"].drop_nulls()
    if labels.len() == 0:
        return None
    counts = labels.value_counts().sort(["count", "label"], descending=[True, False])
    names = counts["label"].to_list()
    index = {name: i for i, name in enumerate(names)}
    head, tail = head_tail_labels([index[l] for l in labels.to_list()])
    by_id = dict(zip(range(len(names)), counts["count"].to_list()))
    return {"count": len(names), "labelled_items": labels.len(), "unlabelled_items": items.height - labels.len(),
            "top": [[n, c] for n, c in counts.head(TOP_LABELS).iter_rows()],
            "head_labels": len(head), "tail_labels": len(tail),
            "head_items": sum(by_id[i] for i in head), "tail_items": sum(by_id[i] for i in tail),
            "singletons": int((counts["count"] == 1).sum())}


def min_items_report(items: pl.DataFrame, steps=MIN_ITEMS_STEPS) -> list[dict[str, int]] | None:
    """For each N: the labels and labelled items that ``min_items_per_label: N`` would keep
    (``rare_labels: drop``), counted on the catalogue as loaded."""
    labels = items["label"].drop_nulls()
    if labels.len() == 0:
        return None
    counts = labels.value_counts()["count"]
    return [{"min_items": n, "labels": int((counts >= n).sum()), "items": int(counts.filter(counts >= n).sum())}
            for n in steps]


def path_level_report(paths: pl.Series | None) -> list[dict[str, Any]] | None:
    """Per depth k of the parsed category paths: how many labels ``label_level: k`` gives, how
    many items have a path at least k deep (shorter ones keep their whole path), and examples."""
    import polars as pl

    if paths is None or paths.drop_nulls().len() == 0:
        return None
    parts = paths.drop_nulls().str.split(PATH_JOIN)
    depth = parts.list.len()
    out = []
    for level in range(1, min(int(depth.max()), MAX_LEVELS) + 1):
        labels = parts.list.head(level).list.join(LABEL_JOIN)
        counts = labels.value_counts().sort(["count", labels.name], descending=[True, False])
        out.append({"level": level, "labels": counts.height, "items_this_deep": int((depth >= level).sum()),
                    "examples": [[n, c] for n, c in counts.head(LEVEL_EXAMPLES).iter_rows()]})
    return out


def group_report(items: pl.DataFrame) -> dict[str, Any] | None:
    groups = items["group"].drop_nulls()
    if groups.len() == 0:
        return None
    sizes = groups.value_counts()["count"]
    bins = {b: 0 for b in GROUP_SIZE_BINS}
    for size in sizes.to_list():
        bins[str(size) if size < 5 else ("5-9" if size < 10 else "10+")] += 1
    return {"count": sizes.len(), "grouped_items": groups.len(), "sizes": bins,
            "max": int(sizes.max()), "mean": round(float(sizes.mean()), 2), "matchable": int((sizes >= 2).sum())}


def title_report(items: pl.DataFrame) -> dict[str, Any]:
    titles = items["title"].fill_null("")
    return {"tokens": _stats(titles.str.count_matches(r"\S+")), "chars": _stats(titles.str.len_chars()),
            "empty": int((titles.str.strip_chars() == "").sum())}


def image_report(items: pl.DataFrame, check: int, seed: int = 0) -> dict[str, Any]:
    """Count items with and without an image, and decode a seeded sample of the files again.

    Files that are missing or do not decode were already handled when the catalogue loaded
    (the dataset's missing_images, reported in the notes); an item left without an image is a
    grey placeholder in every trial that reads images, and the trial row counts the same items
    as ``n_image_placeholders``. A catalogue with no image at all is titles-only: trials refuse
    parts that read images, so nothing is a placeholder.
    """
    import polars as pl

    from bench.data.images import load_image

    with_path = items.filter(pl.col("image").is_not_null())
    rows = list(with_path.select("item_id", "image").iter_rows())
    sample = random.Random(seed).sample(rows, min(check, len(rows)))
    unreadable = []
    for item_id, path in sample:
        try:
            load_image(path, policy="error", item_id=item_id, draft_size=64)
        except BenchError as exc:
            unreadable.append({"item_id": item_id, "image": path, "error": exc.message})
    titles_only = with_path.height == 0  # trials refuse parts that read images: nothing is a placeholder
    return {"with_image": with_path.height, "without_image": items.height - with_path.height,
            "placeholders": 0 if titles_only else items.height - with_path.height, "titles_only": titles_only,
            "checked": len(sample), "unreadable": len(unreadable), "unreadable_examples": unreadable[:5]}


def _split_counts(items: pl.DataFrame) -> dict[str, int] | None:
    splits = items["split"].fill_null("(none)")
    if (splits == "(none)").all():
        return None
    return dict(splits.value_counts().sort(["count", "split"], descending=[True, False]).iter_rows())


def inspect_catalog(catalog: Catalog, check_images: int = 200, seed: int = 0) -> dict[str, Any]:
    items = catalog.items
    return {
        "dataset": catalog.name, "source": catalog.source, "items": items.height,
        "tasks": sorted(catalog.tasks),
        "labels": label_report(items), "label_levels": path_level_report(getattr(catalog, "label_paths", None)),
        "min_items_per_label": min_items_report(items),
        "groups": group_report(items), "titles": title_report(items),
        "images": image_report(items, check_images, seed),
        "duplicate_ids": int(catalog.notes.get("dropped_duplicate_ids", 0)),
        "splits": _split_counts(items),
        "pairs": _pair_counts(getattr(catalog, "pairs", None)),
        "notes": dict(catalog.notes),
    }


def _pair_counts(pairs: pl.DataFrame | None) -> dict[str, dict[str, int]] | None:
    """Labelled pairs per split (task pairs): how many, and how many are matches."""
    if pairs is None:
        return None
    import polars as pl

    counts = pairs.group_by("split").agg(pl.len().alias("pairs"), pl.col("label").cast(pl.Int64).sum().alias("matches"))
    return {row["split"]: {"pairs": row["pairs"], "matches": row["matches"]} for row in counts.sort("split").iter_rows(named=True)}


def render_report(report: dict[str, Any]) -> str:
    lines = [f"{report['dataset']}  ({report['source']})",
             f"items: {report['items']}   tasks: {', '.join(report['tasks']) or 'none'}"]
    labels = report["labels"]
    if labels:
        lines.append(f"labels: {labels['count']} over {labels['labelled_items']} items "
                     f"({labels['unlabelled_items']} unlabelled, {labels['singletons']} labels with one item)")
        lines.append(f"  head: {labels['head_labels']} labels hold {labels['head_items']} items; "
                     f"tail: {labels['tail_labels']} labels hold {labels['tail_items']} items")
        lines.append("  top: " + ", ".join(f"{n} ({c})" for n, c in labels["top"]))
    else:
        lines.append("labels: none")
    if report.get("label_levels"):
        deepest = report["label_levels"][-1]
        more = f"; only the first {MAX_LEVELS} shown" if deepest["level"] == MAX_LEVELS else ""
        lines.append(f"category path levels (label_level: k keeps the path down to level k{more}):")
        lines.append(tabulate([[lv["level"], lv["labels"], lv["items_this_deep"],
                                "; ".join(f"{n} ({c})" for n, c in lv["examples"])] for lv in report["label_levels"]],
                              headers=["level", "labels", "items this deep", "examples"], tablefmt="simple"))
    if report.get("min_items_per_label"):
        lines.append("min_items_per_label: N keeps (rare_labels: drop):")
        lines.append(tabulate([[r["min_items"], r["labels"], r["items"]] for r in report["min_items_per_label"]],
                              headers=["N", "labels", "items"], tablefmt="simple"))
    groups = report["groups"]
    if groups:
        sizes = ", ".join(f"{k}: {v}" for k, v in groups["sizes"].items() if v)
        lines.append(f"groups: {groups['count']} over {groups['grouped_items']} items, {groups['matchable']} with "
                     f"2+ listings (sizes {sizes}; max {groups['max']}, mean {groups['mean']})")
    else:
        lines.append("groups: none")
    titles = report["titles"]
    for unit in ("tokens", "chars"):
        s = titles[unit]
        if s:
            lines.append(f"title {unit}: min {s['min']}, median {s['median']:g}, mean {s['mean']}, "
                         f"p95 {s['p95']:g}, max {s['max']}")
    if titles["empty"]:
        lines.append(f"empty titles: {titles['empty']}")
    img = report["images"]
    lines.append(f"images: {img['with_image']} found, {img['without_image']} without an image; "
                 f"{img['unreadable']} of {img['checked']} checked do not decode")
    if img.get("titles_only"):
        lines.append("  a titles-only catalogue: trials refuse fusions and objectives that read images")
    if img["placeholders"]:
        lines.append(f"  placeholders: {img['placeholders']} items train and test on a grey placeholder in trials "
                     "that read images (rows count them as n_image_placeholders)")
    for bad in img["unreadable_examples"]:
        lines.append(f"  item {bad['item_id']}: {bad['error']}")
    lines.append(f"duplicate ids dropped: {report['duplicate_ids']}")
    if report.get("pairs"):
        lines.append("labelled pairs (split by pair; items carry no split): " + ", ".join(
            f"{k} {v['pairs']} ({v['matches']} matches)" for k, v in report["pairs"].items()))
    elif report["splits"]:
        lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in report["splits"].items()))
    else:
        lines.append("splits: none given (made per trial)")
    other = {k: v for k, v in report["notes"].items() if k != "dropped_duplicate_ids"}
    if other:
        lines.append("load notes: " + ", ".join(f"{k} {v}" for k, v in other.items()))
    return "\n".join(lines)


@click.group()
def data():
    """Look at datasets."""


@data.command("inspect")
@click.argument("dataset")
@click.option("--option", "pairs", multiple=True, metavar="KEY=VALUE",
              help="a dataset option (repeatable; dotted keys nest, e.g. columns.title=name)")
@click.option("--options-json", default=None, help="all dataset options as one JSON object")
@click.option("--check-images", type=click.IntRange(min=0), default=200, show_default=True,
              help="decode up to N images again (a seeded sample; loading already checked every file)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def inspect(dataset, pairs, options_json, check_images, as_json):
    """Load DATASET through its plugin and report labels, groups, titles, images and splits."""
    catalog = load_dataset(dataset, parse_option_pairs(pairs, options_json))
    report = inspect_catalog(catalog, check_images=check_images)
    click.echo(json.dumps(report, indent=2, default=str) if as_json else render_report(report))
