"""One trial, end to end: data -> splits -> model -> stages -> evaluation -> one row.

``run_trial`` never raises for a problem inside the trial: it returns a row with status
"failed" and the error, so a suite always completes.
"""
from __future__ import annotations

import json
import random
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

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
from bench.metrics.classification import classification_metrics, head_tail_labels
from bench.metrics.retrieval import choose_threshold, per_query_metrics, retrieval_metrics, summarise
from bench.model import BenchModel, count_parameters
from bench.registry import Registry
from bench.selection import Selector
from bench.splits import assign_splits, cap_splits, take_fraction
from bench.suite import TrialConfig, TrialSpec
from bench.train import run_stage
from bench.trial_checks import check_stage_needs
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
    # Called with every dev evaluation's metrics (Ray Tune's report inside a worker: trackers draw
    # learning curves from it, schedulers stop weak trials; a stop ends the trial from inside).
    report: Callable[[dict[str, Any]], None] | None = None
    # What the driver loaded per dataset section: {"options": absolute paths, "fingerprint": ...}
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class TrialOutcome:
    row: dict[str, Any]
    predictions: pl.DataFrame | None = None
    curve: pl.DataFrame | None = None


def base_row(spec: TrialSpec, status: str = "ok", error: str = "") -> dict[str, Any]:
    """The columns every row has, whatever happened to the trial: what it was and how it ended."""
    return {"trial_key": spec.key, **spec.axes, **spec.hyper, "seed": spec.config.get("seed", 0),
            "status": status, "error": error}


def run_trial(spec: TrialSpec, ctx: TrialContext) -> TrialOutcome:
    start = time.perf_counter()
    row = base_row(spec)
    predictions = None
    curve: list[dict[str, Any]] = []
    memory = PeakMemory()
    try:
        with memory:
            metrics, predictions = _execute(spec, ctx, curve)
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
    return TrialOutcome(row, predictions, curve_table(curve, spec.key))


def curve_table(points: list[dict[str, Any]], key: str) -> pl.DataFrame | None:
    """The learning curve: one row per evaluation (stage, epoch, step, train loss and parts, dev metrics)."""
    if not points:
        return None
    frame = pl.from_dicts(points, infer_schema_length=None)
    return frame.with_columns(pl.lit(key).alias("trial_key")).select("trial_key", *frame.columns)


def load_catalog(cfg: TrialConfig, ctx: TrialContext) -> Catalog:
    """The trial's catalogue, read with the driver's resolved options (absolute paths) when the
    driver loaded it first, and checked against the driver's content fingerprint."""
    from bench.cluster import check_fingerprint, dataset_key

    known = ctx.datasets.get(dataset_key(cfg.dataset.model_dump(mode="json")), {})
    options = known.get("options", cfg.dataset.options)
    catalog = ctx.registry.create("dataset", cfg.dataset.name, options, BuildContext(cache_dir=ctx.cache_dir),
                                  field="trial.dataset")
    if not isinstance(catalog, Catalog):
        raise BenchError(f"dataset plugin '{cfg.dataset.name}' returned {type(catalog).__name__}, not a Catalog",
                         field="trial.dataset.name", fix="the plugin's factory must return bench.catalog.Catalog")
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


def build_model(cfg: TrialConfig, ctx: TrialContext, task: TaskInfo, catalog: Catalog | None = None) -> BenchModel:
    bctx = BuildContext(task=task, seed=cfg.seed, cache_dir=ctx.cache_dir)
    for slot, ref in cfg.encoders.items():
        encoder = ctx.registry.create("encoder", ref.name, ref.options, bctx, field=f"trial.encoders.{slot}")
        bctx.encoders[slot] = encoder
    fusion: Fusion = ctx.registry.create("fusion", cfg.fusion.name, cfg.fusion.options, bctx, field="trial.fusion")
    missing = set(fusion.requires) - set(bctx.encoders)
    if missing:
        raise BenchError(f"fusion '{cfg.fusion.name}' needs a {', '.join(sorted(missing))} encoder; "
                         f"the trial has {', '.join(sorted(bctx.encoders))}", field="trial.encoders",
                         fix=f"add encoders.{sorted(missing)[0]} to the trial")
    model = BenchModel(dict(bctx.encoders), fusion)
    if catalog is not None:
        model.data_gaps = (catalog.name, absent_modalities(catalog))  # build_objectives checks objectives too
        check_data_modalities(model.data_gaps, fusion.requires, f"fusion '{cfg.fusion.name}'", "trial.fusion.name")
    return model


def absent_modalities(catalog: Catalog) -> dict[str, str]:
    absent = {IMAGE: "images"} if not catalog.has_images else {}
    if not catalog.has_titles:
        absent[TEXT] = "titles"
    return absent


def check_data_modalities(gaps: tuple[str, dict[str, str]], needs, what: str, field_name: str) -> None:
    """A catalogue without pictures (or titles) cannot feed a part that reads them: grey
    placeholders or empty strings would be trained as if they were the data."""
    name, absent = gaps
    wanted = set(needs) | ({TEXT, IMAGE} if JOINT in needs else set())
    lacking = [absent[m] for m in (TEXT, IMAGE) if m in wanted and m in absent]
    if lacking:
        other = "image_only" if IMAGE not in absent else "text_only"
        raise BenchError(f"{what} needs {' and '.join(lacking)}, but the catalogue {name} has none "
                         f"(a {'titles' if 'images' in lacking else 'images'}-only catalogue)", field=field_name,
                         fix=f"use a part that reads only what the data has (e.g. fusion {other}), or give the "
                             f"dataset its {' and '.join(lacking)} (dataset options images / columns.title)")


def build_objectives(stage, cfg: TrialConfig, ctx: TrialContext, model: BenchModel, task: TaskInfo, index: int):
    bctx = BuildContext(task=task, encoders=dict(model.encoders.items()), fusion=model.fusion, seed=cfg.seed,
                        cache_dir=ctx.cache_dir)
    built = []
    for j, ref in enumerate(stage.objectives):
        field_name = f"trial.stages[{index}].objectives[{j}]"
        objective = ctx.registry.create("objective", ref.name, ref.options, bctx, field=field_name)
        check_stage_needs(stage, index, ref.name, objective.needs)
        if getattr(model, "data_gaps", None) is not None:
            check_data_modalities(model.data_gaps, objective.needs, f"objective '{ref.name}'", f"{field_name}.name")
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
    head_labels: frozenset[int] | None = None  # fixed on the whole train split (before finetune_fraction)

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
    items, full_train_labels = prepare_items(catalog, cfg, uses_ssl=any(stage.data != "train" for stage in cfg.stages))
    label_names = catalog.label_names if cfg.task == CLASSIFICATION else []
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
    return TrialData(catalog, TaskInfo(cfg.task, label_names, has_groups=MATCHING in catalog.tasks), splits, head)


class TrialRun:
    """One trial's model, its inputs (raw or cached) and its training/evaluation steps."""

    def __init__(self, cfg: TrialConfig, ctx: TrialContext, data: TrialData):
        self.cfg, self.ctx, self.data = cfg, ctx, data
        self.device = choose_device(cfg.device, ctx.gpus)
        if self.device.type == "cuda":  # the worker may have run another trial before this one
            torch.cuda.reset_peak_memory_stats(self.device)
        self.deadline = time.monotonic() + cfg.max_trial_minutes * 60 if cfg.max_trial_minutes else None
        _seed_everything(cfg.seed)
        self.model = build_model(cfg, ctx, data.task, data.catalog).to(self.device)
        self.loader_kw = loader_settings(self.device, ctx.cpus, cfg.dataloader_workers)
        store = (CacheStore(Path(ctx.cache_dir) / "tensors" if ctx.cache_dir else None) if cfg.cache else None)
        self.inputs = TrialInputs(store, data.catalog.fingerprint, self.device, cfg.amp, cfg.eval.batch_size,
                                  cpus=ctx.cpus)
        self.objective_modules: list[torch.nn.Module] = []
        self.used_modalities = set(self.model.fusion.requires)
        self.train_samples, self.train_seconds = 0, 0.0
        self.curve: list[dict[str, Any]] = []
        self.selection: dict[str, Any] = {}
        self.fit_report: dict[str, Any] = {}
        self.test_per_query: dict[str, np.ndarray] | None = None  # each test query's retrieval values

    def feeder(self, modality: str, records: list[dict], frozen_ok: bool = True):
        """Cached frozen features when allowed, else (cached) preprocessed inputs."""
        encoder = self.model.encoders[modality]
        if self.inputs.store is not None and frozen_ok and getattr(encoder, "frozen", False):
            return self.inputs.features(modality, encoder, records, with_sequence=self.model.fusion.uses_sequence)
        return self.inputs.inputs(modality, encoder, records)

    def train(self) -> dict[str, float]:
        """Run the stages in order; the model's weights flow from one stage to the next."""
        from bench.data import make_loader, seen_share, served_item_ids

        served: set[str] = self.fit_encoders_and_probe()  # item ids the training saw (probe, then batches)
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
            last = i == len(self.cfg.stages) - 1
            selector = self.selector() if last else None
            hook = self.evaluation_hook(selector)
            every = self.cfg.selection.every_steps if selector is not None else None
            stats = run_stage(self.model, objectives, loader, stage, self.device, self.cfg.amp, self.deadline,
                              on_evaluation=hook, every_steps=every)
            served |= served_item_ids(loader, stats.steps)
            self.train_samples += stats.samples
            self.train_seconds += stats.seconds
            losses[f"loss_{stage.name}"] = round(stats.loss, 5) if stats.steps else None  # nothing trained
            losses.update({f"train_{stage.name}_{k}": round(v, 5) for k, v in stats.parts.items()})
            if last:
                self.finish_selection(selector, stats)
        losses["train_items_seen_share"] = seen_share(served, self.data.splits["train"])
        return losses

    def selector(self) -> Selector | None:
        """A dev-metric selector for the last stage, or None (``selection: last``, or no dev split)."""
        metric = self.cfg.selection_metric()
        self.selection = {"selection_metric": metric}
        if metric is None:
            return None
        if not self.data.splits["dev"]:
            self.selection["selection_note"] = "no dev split: the last epoch's weights are kept"
            return None
        sel = self.cfg.selection
        trained = [self.model.fusion] + [e for m, e in self.model.encoders.items()
                                         if m in self.used_modalities and not getattr(e, "frozen", False)]
        return Selector(metric, sel.mode, sel.patience, sel.min_delta, modules=trained)

    def evaluation_hook(self, selector: Selector | None):
        """After each epoch: record the curve point; on the selected stage, evaluate dev, keep the best
        weights, report to the scheduler, and say whether to stop."""
        def on_evaluation(point: dict[str, Any]) -> bool:
            stop = False
            if selector is not None:
                start = time.perf_counter()
                metrics = self.dev_metrics()
                if selector.metric not in metrics:
                    raise BenchError(f"selection metric '{selector.metric}' is not measured by this trial "
                                     f"(dev metrics: {', '.join(sorted(metrics)) or 'none'})",
                                     field="trial.selection.metric",
                                     fix="choose one of the dev metrics listed, or write selection: last")
                stop = selector.update(point["epoch"], metrics)
                self.selection["selection_s"] = self.selection.get("selection_s", 0.0) + time.perf_counter() - start
                point = {**point, **metrics, "evaluation": selector.evaluations}
            self.curve.append(point)
            if self.ctx.report is not None:
                best = {f"best_{k}": v for k, v in (selector.best_metrics if selector else {}).items()}
                self.ctx.report({**_numeric(point), **best,
                                 "best_epoch": selector.best_epoch if selector else None})
            return stop

        return on_evaluation

    def dev_metrics(self) -> dict[str, float]:
        """Dev metrics of the current weights (post-training choices such as late fusion's weight
        are fitted on dev first, as at the end of training)."""
        dev = self.predict("dev")
        return self.dev_metrics_of(self.fit_on_dev(dev)) if dev is not None else {}

    def dev_metrics_of(self, dev: Predictions) -> dict[str, float]:
        """The dev_* columns from dev predictions: classification, and retrieval when the data has groups."""
        out = {}
        if self.data.task.kind == CLASSIFICATION and dev.logits is not None:
            out.update({f"dev_{k}": v for k, v in classification_metrics(dev.labels.numpy(), dev.logits.numpy()).items()})
        if self.data.task.has_groups and self.cfg.eval.retrieval != "off" and len(dev.item_ids) > 1:
            found = retrieval_metrics(_retrieval_embeddings(self.cfg, dev), dev.groups.numpy(), k=self.cfg.eval.k)
            out.update({f"dev_{k}": v for k, v in found.items()})
        return out

    def finish_selection(self, selector: Selector | None, stats) -> None:
        """Put the dev-best weights back before anything sees the test split."""
        last_stage = [pt["epoch"] for pt in self.curve if pt["stage"] == stats.name]
        self.selection.update(epochs_run=last_stage[-1] if last_stage else 0.0, stopped_early=stats.stopped_early,
                              best_epoch=selector.best_epoch if selector else None,
                              n_evaluations=selector.evaluations if selector else 0)
        if selector is None:
            return
        if stats.steps == 0:
            self.selection["selection_note"] = "the last stage had nothing to train: no epoch to choose"
        elif not selector.restore():
            self.selection["selection_note"] = (f"{selector.metric} was never a number on dev: "
                                                "the last epoch's weights are kept")

    def fit_on_dev(self, dev: Predictions) -> Predictions:
        """Fit post-training choices (late fusion's weight) on dev; dev as the fitted fusion gives it."""
        fusion = self.model.fusion
        if dev.logits is None or type(fusion).fit_on_dev is Fusion.fit_on_dev:
            return dev
        metric = "accuracy" if self.cfg.selection_metric() == "dev_accuracy" else "macro_f1"
        refit = fusion.fit_on_dev(dev.as_fusion_output(), dev.labels, metric=metric)
        if refit is None:
            return self.predict("dev")
        return replace(dev, embedding=refit.embedding, logits=refit.logits, logits_parts=list(refit.logits_parts),
                       kinds=dict(refit.kinds))

    def fit_encoders_and_probe(self) -> set[str]:
        """What is learnt from the train split alone, once, before the stages (and before any
        feature of a fitted encoder is cached): fitted encoders' state (Encoder.fit, e.g. TF-IDF's
        vocabulary and idf from train titles; cached by train content) and a fusion fitted in closed
        form on the train split's pooled features (Fusion.fit_on_train, e.g. the linear probe).
        Dev, test and ssl records never reach it. Kept out of the stage loop so that loop can change
        freely; a fusion left with nothing to train makes each stage a no-op in run_stage.

        Row values: each fitted encoder's report, ``encoder_fit_s`` (fitting or reading the cached
        fit); the probe's sklearn fit counts as training (``train_s``, one pass over train items).
        """
        from bench.fitting import fit_encoder, is_fitted_encoder

        train = self.data.splits["train"]
        fitted = [encoder for encoder in self.model.encoders.values() if is_fitted_encoder(encoder)]
        if fitted:
            start = time.perf_counter()
            for encoder in fitted:
                self.fit_report.update(fit_encoder(encoder, train, self.inputs.store))
            self.fit_report["encoder_fit_s"] = round(time.perf_counter() - start, 3)
        fusion = self.model.fusion
        if type(fusion).fit_on_train is Fusion.fit_on_train:
            return set()
        features = self.pooled_features(train)
        start = time.perf_counter()
        fusion.fit_on_train(features, torch.tensor([r["label"] for r in train], dtype=torch.long))
        self.train_seconds += time.perf_counter() - start
        self.train_samples += len(train)
        return {r["item_id"] for r in train}

    @torch.no_grad()
    def pooled_features(self, records: list[dict]) -> dict[str, torch.Tensor]:
        """The fusion's encoders' pooled vectors for these records, in order (frozen ones from the cache)."""
        from bench.data import make_loader
        from bench.device import autocast

        feeders = {m: self.feeder(m, records) for m in sorted(self.model.fusion.requires)}
        loader = make_loader(records, feeders, batch_size=self.cfg.eval.batch_size, train=False, **self.loader_kw)
        self.model.eval()
        chunks: dict[str, list[torch.Tensor]] = {m: [] for m in feeders}
        for batch in loader:
            batch = batch.to(self.device, non_blocking=self.device.type == "cuda")
            with autocast(self.device, self.cfg.amp):
                encoded = self.model.encode(batch, sorted(feeders))
            for m in feeders:
                chunks[m].append(encoded[m].pooled.float())
        return {m: torch.cat(parts) for m, parts in chunks.items()}

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
        if dev is not None:
            dev = self.fit_on_dev(dev)
        return dev, self.predict("test")

    def metrics(self, dev: Predictions | None, test: Predictions) -> dict[str, Any]:
        task, splits = self.data.task, self.data.splits
        out: dict[str, Any] = {}
        if task.kind == CLASSIFICATION and test.logits is not None:
            out.update(classification_metrics(test.labels.numpy(), test.logits.numpy(), self.data.train_labels,
                                              head_labels=self.data.head_labels))
        if task.has_groups and self.cfg.eval.retrieval != "off":
            found, self.test_per_query = _retrieval(self.cfg, dev, test)
            out.update(found)
        if dev is not None:
            out.update(self.dev_metrics_of(dev))
        used = [self.model.encoders[m] for m in sorted(self.used_modalities) if m in self.model.encoders]
        n_params, n_trainable = count_parameters(self.model.fusion, *used, *self.objective_modules)
        out.update(self.model.fusion.report())
        out.update({k: round(v, 3) if k == "selection_s" else v for k, v in self.selection.items()})
        out.update(self.fit_report)
        out.update({
            "train_samples_per_s": round(self.train_samples / self.train_seconds, 2) if self.train_seconds else None,
            "eval_samples_per_s": round(len(test.item_ids) / test.seconds, 2) if test.seconds else None,
            "train_s": round(self.train_seconds, 3),
            "n_params": n_params, "n_trainable_params": n_trainable,
            **{f"n_{name}": len(records) for name, records in splits.items()},
            "device": str(self.device), "data_fingerprint": self.data.catalog.fingerprint,
            "cache_s": round(self.inputs.seconds, 3),
        })
        if self.inputs.store is not None:
            out.update(cache_hits=self.inputs.store.hits, cache_misses=self.inputs.store.misses)
        if self.device.type == "cuda":
            out["gpu_peak_mem_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        out.update({f"data_{k}": v for k, v in self.data.catalog.notes.items()})
        out.update(placeholder_counts(splits, reads_images=bool(self.used_modalities & {IMAGE, JOINT})))
        return out


def _numeric(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def _execute(spec: TrialSpec, ctx: TrialContext, curve: list[dict[str, Any]]) -> tuple[dict[str, Any], pl.DataFrame | None]:
    cfg = TrialConfig.model_validate(spec.config)
    set_threads(ctx.cpus)
    _seed_everything(cfg.seed)
    data = prepare_data(cfg, ctx)
    run = TrialRun(cfg, ctx, data)
    run.curve = curve  # the caller keeps the curve even when training fails half-way
    losses = run.train()
    dev, test = run.evaluate()
    metrics = run.metrics(dev, test)
    return {**metrics, **losses}, prediction_table(test, data.task.label_names, spec.key, per_query=run.test_per_query)


def _retrieval_embeddings(cfg: TrialConfig, p: Predictions):
    """The kinds' embeddings (scored by their max) or the one embedding, as eval.retrieval says."""
    if cfg.eval.retrieval == "max_of_kinds" and p.kinds:
        return p.kinds
    return p.embedding


def _retrieval(cfg: TrialConfig, dev: Predictions | None, test: Predictions
               ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Retrieval row metrics on test, and each test query's values (stored for bootstrap intervals);
    the F1 threshold is chosen on dev, and when it cannot be, f1 / f1_all / f1_threshold are null
    and ``f1_note`` says why (never a default threshold)."""
    threshold, note = None, None
    if dev is None:
        note = "no dev split: the F1 threshold is chosen on dev"
    elif len(dev.item_ids) < 2:
        note = f"dev has {len(dev.item_ids)} item(s): too few to choose the F1 threshold"
    else:
        threshold = choose_threshold(_retrieval_embeddings(cfg, dev), dev.groups.numpy())
        if threshold is None:
            note = "no dev item has another item of its product: the F1 threshold cannot be chosen"
    per_query = per_query_metrics(_retrieval_embeddings(cfg, test), test.groups.numpy(), k=cfg.eval.k,
                                  threshold=threshold)
    out: dict[str, Any] = summarise(per_query)
    if threshold is not None:
        out["f1_threshold"] = float(threshold)
    if out.get(f"ndcg@{cfg.eval.k}") is None:
        out["retrieval_note"] = "no test item has another item of its product: nothing to retrieve"
    if threshold is None:
        out.update(f1=None, f1_all=None, f1_threshold=None, f1_note=note)
    return out, per_query


def prediction_table(p: Predictions, label_names: list[str], key: str, top_k: int = 5,
                     per_query: dict[str, np.ndarray] | None = None) -> pl.DataFrame:
    """Test predictions kept beside the row: later analyses need no retraining.

    ``per_query``: each query's value of a retrieval row metric, in a column of the metric's name
    (null where the query is left out), so intervals can be recomputed from the stored table.
    """
    frame = {"trial_key": [key] * len(p.item_ids), "item_id": p.item_ids, "group": p.groups.tolist()}
    for name, values in (per_query or {}).items():
        frame[name] = pl.Series(name, values, dtype=pl.Float64, nan_to_null=True)
    if p.logits is not None and label_names:
        probs = torch.softmax(p.logits, -1)
        k = min(top_k, probs.shape[1])
        top = probs.topk(k, dim=1)
        frame["true_label"] = [label_names[i] if i >= 0 else None for i in p.labels.tolist()]
        frame["pred_label"] = [label_names[i] for i in top.indices[:, 0].tolist()]
        frame["topk_labels"] = [[label_names[i] for i in row] for row in top.indices.tolist()]
        frame["topk_scores"] = [[round(s, 5) for s in row] for row in top.values.tolist()]
    return pl.DataFrame(frame)
