"""One trial, end to end: data -> splits -> model -> stages -> evaluation -> one row.

``run_trial`` never raises for a problem inside the trial: it returns a row with status
"failed" and the error, so a suite always completes.
"""
from __future__ import annotations

import json
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from bench.cache import CacheStore
from bench.catalog import Catalog
from bench.device import choose_device, loader_settings, set_threads
from bench.errors import BenchError, TrialFailure
from bench.evaluate import Predictions, predict
from bench.images import placeholder_counts
from bench.memory import PeakMemory
from bench.interfaces import CLASSIFICATION, IMAGE, JOINT, MATCHING, TEXT, BuildContext, Fusion, TaskInfo
from bench.metrics.classification import classification_metrics
from bench.metrics.retrieval import choose_threshold, retrieval_metrics
from bench.model import BenchModel, count_parameters
from bench.registry import Registry
from bench.splits import assign_splits, cap_splits, take_fraction
from bench.suite import TrialConfig, TrialSpec
from bench.train import run_stage
from bench.trial_inputs import TrialInputs

MODALITIES = (TEXT, IMAGE, JOINT)
SSL_FRACTIONS = {"ssl": 0.5, "train": 0.3, "dev": 0.1, "test": 0.1}


@dataclass
class TrialContext:
    registry: Registry
    cpus: float = 1.0
    gpus: float = 0.0
    cache_dir: str | None = None
    provenance: dict[str, str] = field(default_factory=dict)


@dataclass
class TrialOutcome:
    row: dict[str, Any]
    predictions: pl.DataFrame | None = None


def base_row(spec: TrialSpec, status: str = "ok", error: str = "") -> dict[str, Any]:
    """The columns every row has, whatever happened to the trial: what it was and how it ended."""
    return {"trial_key": spec.key, **spec.axes, **spec.hyper, "seed": spec.config.get("seed", 0),
            "status": status, "error": error}


def run_trial(spec: TrialSpec, ctx: TrialContext) -> TrialOutcome:
    start = time.perf_counter()
    row = base_row(spec)
    predictions = None
    memory = PeakMemory()
    try:
        with memory:
            metrics, predictions = _execute(spec, ctx)
        row.update(metrics)
    except BenchError as exc:
        row.update(status="failed", error=exc.render())
    except TrialFailure as exc:
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    except torch.cuda.OutOfMemoryError as exc:
        row.update(status="failed", error=f"out of memory: {exc}")
    except Exception as exc:  # a plugin bug must not end the suite; keep the stack for the log
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                   traceback="".join(traceback.format_exception(exc))[-4000:])
    row["wall_s"] = round(time.perf_counter() - start, 3)
    row["peak_mem_mb"] = memory.peak_mb
    row["config"] = json.dumps(spec.config, sort_keys=True)
    row.update(ctx.provenance)
    return TrialOutcome(row, predictions)


def load_catalog(cfg: TrialConfig, ctx: TrialContext) -> Catalog:
    spec = ctx.registry.get("dataset", cfg.dataset.name, field="trial.dataset.name")
    opts = spec.parse_options(cfg.dataset.options, field="trial.dataset.options")
    catalog = spec.factory(opts, BuildContext(cache_dir=ctx.cache_dir))
    if not isinstance(catalog, Catalog):
        raise BenchError(f"dataset plugin '{cfg.dataset.name}' returned {type(catalog).__name__}, not a Catalog",
                         field="trial.dataset.name", fix="the plugin's factory must return bench.catalog.Catalog")
    return catalog


def prepare_items(catalog: Catalog, cfg: TrialConfig, uses_ssl: bool) -> pl.DataFrame:
    """Splits (given or made), then the --subset cap, then the fine-tune fraction of train."""
    fractions = cfg.splits.fractions
    if fractions is None and uses_ssl:
        fractions = SSL_FRACTIONS
    items = assign_splits(catalog.items, fractions, cfg.splits.seed, cfg.splits.use_given, catalog.source)
    items = cap_splits(items, cfg.subset, cfg.splits.seed)
    return take_fraction(items, "train", cfg.finetune_fraction, cfg.splits.seed + 1)


def build_model(cfg: TrialConfig, ctx: TrialContext, task: TaskInfo) -> BenchModel:
    bctx = BuildContext(task=task, seed=cfg.seed, cache_dir=ctx.cache_dir)
    for slot, ref in cfg.encoders.items():
        spec = ctx.registry.get("encoder", ref.name, field=f"trial.encoders.{slot}.name")
        encoder = spec.factory(spec.parse_options(ref.options, field=f"trial.encoders.{slot}.options"), bctx)
        bctx.encoders[slot] = encoder
    spec = ctx.registry.get("fusion", cfg.fusion.name, field="trial.fusion.name")
    fusion: Fusion = spec.factory(spec.parse_options(cfg.fusion.options, field="trial.fusion.options"), bctx)
    missing = set(fusion.requires) - set(bctx.encoders)
    if missing:
        raise BenchError(f"fusion '{cfg.fusion.name}' needs a {', '.join(sorted(missing))} encoder; "
                         f"the trial has {', '.join(sorted(bctx.encoders))}", field="trial.encoders",
                         fix=f"add encoders.{sorted(missing)[0]} to the trial")
    return BenchModel(dict(bctx.encoders), fusion)


def build_objectives(stage, cfg: TrialConfig, ctx: TrialContext, model: BenchModel, task: TaskInfo, index: int):
    bctx = BuildContext(task=task, encoders=dict(model.encoders.items()), fusion=model.fusion, seed=cfg.seed,
                        cache_dir=ctx.cache_dir)
    built = []
    for j, ref in enumerate(stage.objectives):
        field_name = f"trial.stages[{index}].objectives[{j}]"
        spec = ctx.registry.get("objective", ref.name, field=f"{field_name}.name")
        objective = spec.factory(spec.parse_options(ref.options, field=f"{field_name}.options"), bctx)
        if "labels" in objective.needs and task.num_labels < 2:
            raise BenchError(f"objective '{ref.name}' needs labels; this data has none", field=f"{field_name}.name",
                             fix="use an embedding objective (triplet, contrastive, ...) or data with labels")
        if "groups" in objective.needs and not task.has_groups:
            raise BenchError(f"objective '{ref.name}' needs product groups; this data has none",
                             field=f"{field_name}.name", fix="map a group column in the dataset options")
        built.append((objective, ref.weight))
    return built


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrialData:
    """The catalogue cut into this trial's splits, as records the loaders read."""

    catalog: Catalog
    task: TaskInfo
    splits: dict[str, list[dict]]

    @property
    def train_labels(self) -> np.ndarray:
        return np.array([r["label"] for r in self.splits["train"]])


def prepare_data(cfg: TrialConfig, ctx: TrialContext) -> TrialData:
    from bench.data import to_records

    catalog = load_catalog(cfg, ctx)
    if cfg.task not in catalog.tasks:
        raise BenchError(f"dataset '{cfg.dataset.name}' does not support task '{cfg.task}' "
                         f"(it supports: {', '.join(sorted(catalog.tasks)) or 'none'})", field="trial.task",
                         fix="classification needs a label column with 2+ labels; matching needs a group column")
    items = prepare_items(catalog, cfg, uses_ssl=any(stage.data != "train" for stage in cfg.stages))
    label_names = catalog.label_names if cfg.task == CLASSIFICATION else []
    label_index = {name: i for i, name in enumerate(label_names)}
    group_index = {g: i for i, g in enumerate(sorted(items["group"].drop_nulls().unique().to_list()))}
    splits = {name: to_records(items.filter(pl.col("split") == name), label_index, group_index)
              for name in ("train", "dev", "test", "ssl")}
    for needed in ("train", "test"):
        if not splits[needed]:
            raise BenchError(f"the {needed} split is empty", field="trial.splits",
                             fix="give the split more items (splits.fractions) or a larger --subset")
    return TrialData(catalog, TaskInfo(cfg.task, label_names, has_groups=MATCHING in catalog.tasks), splits)


class TrialRun:
    """One trial's model, its inputs (raw or cached) and its training/evaluation steps."""

    def __init__(self, cfg: TrialConfig, ctx: TrialContext, data: TrialData):
        self.cfg, self.ctx, self.data = cfg, ctx, data
        self.device = choose_device(cfg.device, ctx.gpus)
        if self.device.type == "cuda":  # the worker may have run another trial before this one
            torch.cuda.reset_peak_memory_stats(self.device)
        self.deadline = time.monotonic() + cfg.max_trial_minutes * 60 if cfg.max_trial_minutes else None
        _seed_everything(cfg.seed)
        self.model = build_model(cfg, ctx, data.task).to(self.device)
        self.loader_kw = loader_settings(self.device, ctx.cpus, cfg.dataloader_workers)
        store = (CacheStore(Path(ctx.cache_dir) / "tensors" if ctx.cache_dir else None) if cfg.cache else None)
        self.inputs = TrialInputs(store, data.catalog.fingerprint, self.device, cfg.amp, cfg.eval.batch_size)
        self.objective_modules: list[torch.nn.Module] = []
        self.used_modalities = set(self.model.fusion.requires)
        self.train_samples, self.train_seconds = 0, 0.0

    def feeder(self, modality: str, records: list[dict], frozen_ok: bool = True):
        """Cached frozen features when allowed, else (cached) preprocessed inputs."""
        encoder = self.model.encoders[modality]
        if self.inputs.store is not None and frozen_ok and getattr(encoder, "frozen", False):
            return self.inputs.features(modality, encoder, records, with_sequence=self.model.fusion.uses_sequence)
        return self.inputs.inputs(modality, encoder, records)

    def train(self) -> dict[str, float]:
        """Run the stages in order; the model's weights flow from one stage to the next."""
        from bench.data import make_loader

        losses = {}
        train_labels = self.data.train_labels
        for i, stage in enumerate(self.cfg.stages):
            objectives = build_objectives(stage, self.cfg, self.ctx, self.model, self.data.task, i)
            for objective, _ in objectives:
                objective.to(self.device)
                if hasattr(objective, "set_label_counts") and self.data.task.num_labels:
                    objective.set_label_counts(torch.bincount(torch.tensor(train_labels[train_labels >= 0]),
                                                              minlength=self.data.task.num_labels).float())
            self.objective_modules.extend(o for o, _ in objectives)
            self_encoded = {n for o, _ in objectives for n in o.needs}
            modalities = set(self.model.fusion.requires) | (self_encoded & set(MODALITIES))
            self.used_modalities |= modalities
            records = [r for part in stage.data.split("+") for r in self.data.splits[part]]
            if not records:
                raise BenchError(f"stage '{stage.name}' trains on the {stage.data} split, which is empty",
                                 field=f"trial.stages[{i}].data",
                                 fix="give that split a fraction (splits.fractions.ssl) or use data: train")
            sampler = stage.sampler
            if sampler == "auto":
                sampler = "pk" if any(o.sampler == "pk" for o, _ in objectives) else "random"
            preprocessors = {m: self.feeder(m, records, frozen_ok=m not in self_encoded) for m in sorted(modalities)}
            loader = make_loader(records, preprocessors, batch_size=stage.batch_size, train=True, sampler=sampler,
                                 pk_items=stage.pk_items, seed=self.cfg.seed + i, **self.loader_kw)
            stats = run_stage(self.model, objectives, loader, stage, self.device, self.cfg.amp, self.deadline)
            self.train_samples += stats.samples
            self.train_seconds += stats.seconds
            losses[f"loss_{stage.name}"] = round(stats.loss, 5)
        return losses

    def predict(self, split: str) -> Predictions | None:
        from bench.data import make_loader

        records = self.data.splits[split]
        if not records:
            return None
        feeders = {m: self.feeder(m, records) for m in sorted(self.model.fusion.requires)}
        loader = make_loader(records, feeders, batch_size=self.cfg.eval.batch_size, train=False, **self.loader_kw)
        return predict(self.model, loader, self.device, self.cfg.amp)

    def evaluate(self) -> tuple[Predictions | None, Predictions]:
        """Dev first (post-training choices such as late fusion's weight are fitted there), then test."""
        dev = self.predict("dev")
        if dev is not None and dev.logits is not None and type(self.model.fusion).fit_on_dev is not Fusion.fit_on_dev:
            self.model.fusion.fit_on_dev(dev.as_fusion_output(), dev.labels)
            dev = self.predict("dev")
        return dev, self.predict("test")

    def metrics(self, dev: Predictions | None, test: Predictions) -> dict[str, Any]:
        task, splits = self.data.task, self.data.splits
        out: dict[str, Any] = {}
        if task.kind == CLASSIFICATION and test.logits is not None:
            out.update(classification_metrics(test.labels.numpy(), test.logits.numpy(), self.data.train_labels))
            if dev is not None:
                dev_metrics = classification_metrics(dev.labels.numpy(), dev.logits.numpy())
                out.update({f"dev_{k}": v for k, v in dev_metrics.items()})
        if task.has_groups and self.cfg.eval.retrieval != "off":
            out.update(_retrieval(self.cfg, dev, test))
        used = [self.model.encoders[m] for m in sorted(self.used_modalities) if m in self.model.encoders]
        n_params, n_trainable = count_parameters(self.model.fusion, *used, *self.objective_modules)
        out.update(self.model.fusion.report())
        out.update({
            "train_samples_per_s": round(self.train_samples / self.train_seconds, 2) if self.train_seconds else 0.0,
            "eval_samples_per_s": round(len(test.item_ids) / test.seconds, 2) if test.seconds else 0.0,
            "train_s": round(self.train_seconds, 3),
            "n_params": n_params, "n_trainable_params": n_trainable,
            **{f"n_{name}": len(records) for name, records in splits.items()},
            "device": str(self.device),
            "cache_s": round(self.inputs.seconds, 3),
        })
        if self.inputs.store is not None:
            out.update(cache_hits=self.inputs.store.hits, cache_misses=self.inputs.store.misses)
        if self.device.type == "cuda":
            out["gpu_peak_mem_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        out.update({f"data_{k}": v for k, v in self.data.catalog.notes.items()})
        out.update(placeholder_counts(splits, reads_images=bool(self.used_modalities & {IMAGE, JOINT})))
        return out


def _execute(spec: TrialSpec, ctx: TrialContext) -> tuple[dict[str, Any], pl.DataFrame | None]:
    cfg = TrialConfig.model_validate(spec.config)
    set_threads(ctx.cpus)
    _seed_everything(cfg.seed)
    data = prepare_data(cfg, ctx)
    run = TrialRun(cfg, ctx, data)
    losses = run.train()
    dev, test = run.evaluate()
    return {**run.metrics(dev, test), **losses}, prediction_table(test, data.task.label_names, spec.key)


def _retrieval(cfg: TrialConfig, dev: Predictions | None, test: Predictions) -> dict[str, float]:
    def pick(p: Predictions):
        if cfg.eval.retrieval == "max_of_kinds" and p.kinds:
            return p.kinds
        return p.embedding

    threshold = choose_threshold(pick(dev), dev.groups.numpy()) if dev is not None and len(dev.item_ids) > 1 else 0.5
    return retrieval_metrics(pick(test), test.groups.numpy(), k=cfg.eval.k, threshold=threshold)


def prediction_table(p: Predictions, label_names: list[str], key: str, top_k: int = 5) -> pl.DataFrame:
    """Test predictions kept beside the row: later analyses need no retraining."""
    frame = {"trial_key": [key] * len(p.item_ids), "item_id": p.item_ids, "group": p.groups.tolist()}
    if p.logits is not None and label_names:
        probs = torch.softmax(p.logits, -1)
        k = min(top_k, probs.shape[1])
        top = probs.topk(k, dim=1)
        frame["true_label"] = [label_names[i] if i >= 0 else None for i in p.labels.tolist()]
        frame["pred_label"] = [label_names[i] for i in top.indices[:, 0].tolist()]
        frame["topk_labels"] = [[label_names[i] for i in row] for row in top.indices.tolist()]
        frame["topk_scores"] = [[round(s, 5) for s in row] for row in top.values.tolist()]
    return pl.DataFrame(frame)
