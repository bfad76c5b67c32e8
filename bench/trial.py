"""One trial, end to end: data -> splits -> model -> stages -> evaluation -> one row.

``run_trial`` never raises for a problem inside the trial: it returns a row with status
"failed" and the error, so a suite always completes.
"""
from __future__ import annotations

import json
import random
import resource
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


def run_trial(spec: TrialSpec, ctx: TrialContext) -> TrialOutcome:
    start = time.perf_counter()
    row: dict[str, Any] = {"trial_key": spec.key, **spec.axes, **spec.hyper,
                           "seed": spec.config.get("seed", 0), "status": "ok", "error": ""}
    predictions = None
    try:
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
    row["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
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


def _execute(spec: TrialSpec, ctx: TrialContext) -> tuple[dict[str, Any], pl.DataFrame | None]:
    cfg = TrialConfig.model_validate(spec.config)
    set_threads(ctx.cpus)
    _seed_everything(cfg.seed)
    device = choose_device(cfg.device, ctx.gpus)
    deadline = time.monotonic() + cfg.max_trial_minutes * 60 if cfg.max_trial_minutes else None
    catalog = load_catalog(cfg, ctx)
    if cfg.task not in catalog.tasks:
        raise BenchError(f"dataset '{cfg.dataset.name}' does not support task '{cfg.task}' "
                         f"(it supports: {', '.join(sorted(catalog.tasks)) or 'none'})", field="trial.task",
                         fix="classification needs a label column with 2+ labels; matching needs a group column")
    uses_ssl = any(stage.data != "train" for stage in cfg.stages)
    items = prepare_items(catalog, cfg, uses_ssl)
    label_names = catalog.label_names if cfg.task == CLASSIFICATION else []
    task = TaskInfo(cfg.task, label_names, has_groups=MATCHING in catalog.tasks)
    label_index = {name: i for i, name in enumerate(label_names)}
    group_index = {g: i for i, g in enumerate(sorted(items["group"].drop_nulls().unique().to_list()))}
    from bench.data import make_loader, to_records

    split_records = {name: to_records(items.filter(pl.col("split") == name), label_index, group_index)
                     for name in ("train", "dev", "test", "ssl")}
    for needed in ("train", "test"):
        if not split_records[needed]:
            raise BenchError(f"the {needed} split is empty", field="trial.splits",
                             fix="give the split more items (splits.fractions) or a larger --subset")
    _seed_everything(cfg.seed)
    model = build_model(cfg, ctx, task).to(device)
    loader_kw = loader_settings(device, ctx.cpus, cfg.dataloader_workers)
    train_labels = np.array([r["label"] for r in split_records["train"]])
    inputs = TrialInputs(CacheStore(Path(ctx.cache_dir) / "tensors" if ctx.cache_dir else None) if cfg.cache else None,
                         catalog.fingerprint, device, cfg.amp, cfg.eval.batch_size)

    def feeder(modality: str, records: list[dict], frozen_ok: bool = True):
        """Cached frozen features when allowed, else (cached) preprocessed inputs."""
        encoder = model.encoders[modality]
        if inputs.store is not None and frozen_ok and getattr(encoder, "frozen", False):
            return inputs.features(modality, encoder, records, with_sequence=model.fusion.uses_sequence)
        return inputs.inputs(modality, encoder, records)

    objective_modules = []
    used_modalities = set(model.fusion.requires)
    stage_rows: dict[str, float] = {}
    train_samples, train_seconds = 0, 0.0
    for i, stage in enumerate(cfg.stages):
        objectives = build_objectives(stage, cfg, ctx, model, task, i)
        for objective, _ in objectives:
            objective.to(device)
            if hasattr(objective, "set_label_counts") and task.num_labels:
                objective.set_label_counts(torch.bincount(torch.tensor(train_labels[train_labels >= 0]),
                                                          minlength=task.num_labels).float())
        objective_modules.extend(o for o, _ in objectives)
        modalities = set(model.fusion.requires) | {n for o, _ in objectives for n in o.needs if n in MODALITIES}
        used_modalities |= modalities
        records = [r for part in stage.data.split("+") for r in split_records[part]]
        if not records:
            raise BenchError(f"stage '{stage.name}' trains on the {stage.data} split, which is empty",
                             field=f"trial.stages[{i}].data",
                             fix="give that split a fraction (splits.fractions.ssl) or use data: train")
        sampler = stage.sampler
        if sampler == "auto":
            sampler = "pk" if any(o.sampler == "pk" for o, _ in objectives) else "random"
        self_encoded = {n for o, _ in objectives for n in o.needs}
        preprocessors = {m: feeder(m, records, frozen_ok=m not in self_encoded) for m in sorted(modalities)}
        loader = make_loader(records, preprocessors, batch_size=stage.batch_size, train=True, sampler=sampler,
                             pk_items=stage.pk_items, seed=cfg.seed + i, **loader_kw)
        stats = run_stage(model, objectives, loader, stage, device, cfg.amp, deadline)
        train_samples += stats.samples
        train_seconds += stats.seconds
        stage_rows[f"loss_{stage.name}"] = round(stats.loss, 5)
    def run_eval(split: str) -> Predictions | None:
        if not split_records[split]:
            return None
        eval_pre = {m: feeder(m, split_records[split]) for m in sorted(model.fusion.requires)}
        loader = make_loader(split_records[split], eval_pre, batch_size=cfg.eval.batch_size, train=False, **loader_kw)
        return predict(model, loader, device, cfg.amp)

    dev = run_eval("dev")
    if dev is not None and dev.logits is not None and type(model.fusion).fit_on_dev is not Fusion.fit_on_dev:
        model.fusion.fit_on_dev(dev.as_fusion_output(), dev.labels)
        dev = run_eval("dev")
    test = run_eval("test")
    metrics: dict[str, Any] = {}
    if task.kind == CLASSIFICATION and test.logits is not None:
        metrics.update(classification_metrics(test.labels.numpy(), test.logits.numpy(), train_labels))
        if dev is not None:
            metrics.update({f"dev_{k}": v for k, v in classification_metrics(dev.labels.numpy(), dev.logits.numpy()).items()})
    if task.has_groups and cfg.eval.retrieval != "off":
        metrics.update(_retrieval(cfg, dev, test))
    used = [model.encoders[m] for m in sorted(used_modalities) if m in model.encoders]
    n_params, n_trainable = count_parameters(model.fusion, *used, *objective_modules)
    metrics.update(stage_rows)
    metrics.update(model.fusion.report())
    metrics.update({
        "train_samples_per_s": round(train_samples / train_seconds, 2) if train_seconds else 0.0,
        "eval_samples_per_s": round(len(test.item_ids) / test.seconds, 2) if test.seconds else 0.0,
        "train_s": round(train_seconds, 3),
        "n_params": n_params, "n_trainable_params": n_trainable,
        "n_train": len(split_records["train"]), "n_dev": len(split_records["dev"]),
        "n_test": len(split_records["test"]), "n_ssl": len(split_records["ssl"]),
        "device": str(device),
        "cache_s": round(inputs.seconds, 3),
    })
    if inputs.store is not None:
        metrics.update(cache_hits=inputs.store.hits, cache_misses=inputs.store.misses)
    if device.type == "cuda":
        metrics["gpu_peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    for k, v in catalog.notes.items():
        metrics[f"data_{k}"] = v
    return metrics, prediction_table(test, label_names, spec.key)


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
