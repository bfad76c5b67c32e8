"""Hierarchical categorization for mic-bench: a task plugin.

The model trains on leaf labels as in classification (each label is a whole category path); the
task scores the predicted path at each level of the tree and as a whole (hierarchical precision,
recall and F1). The whole plugin: an options model, the metrics it declares, a Task and one hook.
"""
from __future__ import annotations

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from bench import hookimpl
from bench.errors import BenchError
from bench.metrics.registry import quality
from bench.api.registry import PluginSpec
from bench.trial.item_task import ItemTask

from .metrics import MAX_LEVELS, Path, hierarchical_prf, level_metrics

PATH_JOIN = "\x1f"  # how dataset readers join the parts of Catalog.label_paths
LABEL_JOIN = " > "  # how dataset readers join the parts of a label cut from a path
CUT = "(a path with fewer levels stays whole: its deepest part stands for the level)"


class HierarchyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    levels: int = Field(3, ge=1, le=MAX_LEVELS, description="tree levels scored one by one (level1_* ...)")
    separator: str = Field(" > ", min_length=1, description="splits a label into its category path when the "
                                                            "dataset gives no whole paths (Catalog.label_paths)")


def _level_metrics(n: int):
    return (quality(f"level{n}_accuracy", "hierarchy", "item",
                    f"share of test items whose predicted category path cut to level {n} is the true one cut "
                    f"to level {n} {CUT}", bootstrap=False, leaderboard=False),
            quality(f"level{n}_macro_f1", "hierarchy", "item",
                    f"macro-F1 (bench.metrics.classification.macro_f1) of the predicted paths cut to level {n} "
                    f"against the true ones, over the level-{n} categories among the true paths {CUT}",
                    bootstrap=False, leaderboard=False))


METRICS = (
    *(m for n in range(1, MAX_LEVELS + 1) for m in _level_metrics(n)),
    quality("hier_precision", "hierarchy", "item",
            "Kiritchenko et al. 2005: each path as the set of its prefixes (ancestors and itself); over test items, "
            "sum of |true & predicted| / sum of |predicted|", bootstrap=False),
    quality("hier_recall", "hierarchy", "item",
            "Kiritchenko et al. 2005: sum over test items of |true & predicted| / sum of |true| (prefix sets)",
            bootstrap=False),
    quality("hier_f1", "hierarchy", "item", "2 hier_precision hier_recall / (hier_precision + hier_recall)",
            bootstrap=False),
)


def split_label(label: str, separator: str) -> Path:
    return tuple(part.strip() for part in label.split(separator) if part.strip())


def _cut_at_label(parts: list[str], label: str) -> Path | None:
    """The path down to the label's own depth (a reader's label_level may have cut it), or None."""
    for depth in range(1, len(parts) + 1):
        if LABEL_JOIN.join(parts[:depth]) == label or parts[depth - 1] == label:
            return tuple(parts[:depth])
    return None


def label_tree(catalog, separator: str) -> dict[str, Path]:
    """Each label's category path: the items' whole paths (``Catalog.label_paths``) cut at the label's
    depth when the reader filled them, else the label split on ``separator``."""
    labels = catalog.items["label"]
    whole = catalog.label_paths if catalog.label_paths is not None else pl.Series([None] * len(labels), dtype=pl.Utf8)
    pairs = pl.DataFrame({"label": labels, "path": whole}).drop_nulls("label").unique(maintain_order=True)
    tree: dict[str, Path] = {}
    for label, path in pairs.iter_rows():
        found = (_cut_at_label(path.split(PATH_JOIN), label) if path else None) or split_label(label, separator)
        if tree.setdefault(label, found) != found:
            raise BenchError(f"label {label!r} sits at two places of the category tree "
                             f"({LABEL_JOIN.join(tree[label])} and {LABEL_JOIN.join(found)})",
                             file=catalog.source or None, field="label",
                             fix="keep whole paths as labels (label_form: path), so equal names stay apart")
    if tree and max(map(len, tree.values())) < 2:
        example = next(iter(tree))
        raise BenchError(f"every label of catalogue '{catalog.name}' is a one-level path (e.g. {example!r}), so "
                         "task hierarchical_classification has no tree to score",
                         file=catalog.source or None, field="label",
                         fix=f"give the labels as category paths ('Home > Kitchen > Knives'); if they use another "
                             f"separator than {separator!r}, set trial.task.options.separator; unset the dataset's "
                             "label_level if it cuts the paths to one level; or use task: classification")
    return tree


class HierarchicalTask(ItemTask):
    """Classification over leaf labels, scored per tree level and hierarchically."""

    main_metric = "hier_f1"  # selection: dev_hier_f1
    metrics = METRICS

    def __init__(self, options: HierarchyOptions | None = None, ctx=None):
        super().__init__(options or HierarchyOptions(), ctx)
        self.paths: list[Path] = []  # each label's path, by label index

    def prepare(self, cfg, ctx):
        data = super().prepare(cfg, ctx)
        tree = label_tree(data.catalog, self.options.separator)
        self.paths = [tree.get(name) or split_label(name, self.options.separator) for name in data.task.label_names]
        return data

    def path_scores(self, predictions) -> dict[str, float]:
        """Per-level and hierarchical scores of the labelled items' highest-scoring labels."""
        if predictions.logits is None:
            return {}
        known = predictions.labels >= 0
        true = [self.paths[i] for i in predictions.labels[known].tolist()]
        pred = [self.paths[i] for i in predictions.logits[known].argmax(dim=1).tolist()]
        if not true:
            return {}
        out = {}
        for level in range(1, self.options.levels + 1):
            out.update(level_metrics(true, pred, level))
        out.update(hierarchical_prf(true, pred))
        return out

    def dev_metrics(self, run, dev):
        out = super().dev_metrics(run, dev)
        out.update({f"dev_{k}": v for k, v in self.path_scores(dev).items()})
        return out

    def test_metrics(self, run, dev, test):
        out = super().test_metrics(run, dev, test)
        out.update(self.path_scores(test))
        return out

    def prediction_table(self, run, key, test):
        """The classification table plus each item's true and predicted path, to recompute the scores."""
        table = super().prediction_table(run, key, test)
        if test.logits is None:
            return table
        paths = pl.List(pl.Utf8)
        true = [list(self.paths[i]) if i >= 0 else None for i in test.labels.tolist()]
        pred = [list(self.paths[i]) for i in test.logits.argmax(dim=1).tolist()]
        return table.with_columns(pl.Series("true_path", true, dtype=paths), pl.Series("pred_path", pred, dtype=paths))


@hookimpl
def bench_tasks():
    return [PluginSpec("task", "hierarchical_classification",
                       "categorization over a category tree: per-level accuracy and macro-F1, hierarchical P/R/F1",
                       HierarchicalTask, HierarchyOptions)]
