"""A trial's data: the catalogue (checked against the driver's fingerprint), its splits, and records."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from bench.data.catalog import Catalog
from bench.config.schema import TrialConfig
from bench.errors import BenchError
from bench.api.interfaces import CLASSIFICATION, MATCHING, BuildContext, TaskInfo
from bench.metrics.classification import head_tail_labels
from bench.trial.context import TrialContext
from bench.trial.splits import assign_splits, cap_splits, take_fraction


SSL_FRACTIONS = {"ssl": 0.5, "train": 0.3, "dev": 0.1, "test": 0.1}


def load_catalog(cfg: TrialConfig, ctx: TrialContext) -> Catalog:
    """The trial's catalogue, read with the driver's resolved options (absolute paths) when the
    driver loaded it first, and checked against the driver's content fingerprint."""
    from bench.running.cluster import check_fingerprint, dataset_key

    known = ctx.datasets.get(dataset_key(cfg.dataset.model_dump(mode="json")), {})
    options = known.get("options", cfg.dataset.options)
    catalog = ctx.registry.create("dataset", cfg.dataset.name, options, BuildContext(cache_dir=ctx.cache_dir),
                                  field="trial.dataset")
    if not isinstance(catalog, Catalog):
        raise BenchError(f"dataset plugin '{cfg.dataset.name}' returned {type(catalog).__name__}, not a Catalog",
                         field="trial.dataset.name", fix="the plugin's factory must return bench.data.catalog.Catalog")
    check_fingerprint(known.get("fingerprint"), catalog, options)
    return catalog


def prepare_items(catalog: Catalog, cfg: TrialConfig, uses_ssl: bool) -> tuple[pl.DataFrame, list]:
    """Splits (given or made), then the --subset cap, then the fine-tune fraction of train.

    Also returns the labels of the whole train split before that cut: head and tail labels are
    fixed on them, so every fine-tune fraction of a grid scores the same labels as head.
    """
    fractions = cfg.splits.fractions
    if fractions is None and uses_ssl:
        fractions = SSL_FRACTIONS
    items = assign_splits(catalog.items, fractions, cfg.splits.seed, cfg.splits.use_given, catalog.source)
    items = cap_splits(items, cfg.subset, cfg.splits.seed)
    full_train_labels = items.filter(pl.col("split") == "train")["label"].to_list()
    return take_fraction(items, "train", cfg.finetune_fraction, cfg.splits.seed + 1), full_train_labels


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrialData:
    """The catalogue cut into this trial's splits, as records the loaders read."""

    catalog: Catalog
    task: TaskInfo
    splits: dict[str, list[dict]]
    head_labels: frozenset[int] | None = None  # fixed on the whole train split (before finetune_fraction)

    @property
    def train_labels(self) -> np.ndarray:
        return np.array([r["label"] for r in self.splits["train"]])


def prepare_data(cfg: TrialConfig, ctx: TrialContext, kind: str = CLASSIFICATION, needs: str | None = None) -> TrialData:
    """Items split by item; ``kind``: what the other plugins see (TaskInfo.kind: item labels for
    CLASSIFICATION, none for MATCHING); ``needs``: what the catalogue must support (default ``kind``)."""
    from bench.trial.records import to_records

    catalog = load_catalog(cfg, ctx)
    if (needs or kind) not in catalog.tasks:
        raise BenchError(f"dataset '{cfg.dataset.name}' does not support task '{cfg.task.name}' "
                         f"(it supports: {', '.join(sorted(catalog.tasks)) or 'none'})", field="trial.task",
                         fix="classification needs a label column with 2+ labels; matching needs a group column; "
                             "a pair-labelled dataset (deepmatcher, wdc_products) needs task: pairs")
    items, full_train_labels = prepare_items(catalog, cfg, uses_ssl=any(stage.data != "train" for stage in cfg.stages))
    label_names = catalog.label_names if kind == CLASSIFICATION else []
    label_index = {name: i for i, name in enumerate(label_names)}
    group_index = {g: i for i, g in enumerate(sorted(items["group"].drop_nulls().unique().to_list()))}
    splits = {name: to_records(items.filter(pl.col("split") == name), label_index, group_index)
              for name in ("train", "dev", "test", "ssl")}
    for record in splits["ssl"]:
        record["label"] = -1  # the ssl split stands for unlabeled listings: no stage may see its labels
    for needed in ("train", "test"):
        if not splits[needed]:
            raise BenchError(f"the {needed} split is empty", field="trial.splits",
                             fix="give the split more items (splits.fractions) or a larger --subset")
    head = frozenset(head_tail_labels([label_index.get(l, -1) for l in full_train_labels if l is not None])[0])
    return TrialData(catalog, TaskInfo(kind, label_names, has_groups=MATCHING in catalog.tasks), splits, head)
