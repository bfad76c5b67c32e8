"""One trial's model, inputs (raw or cached features) and steps: train, select on dev, evaluate, measure."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch
from torch import nn

from bench.config.schema import SelectionConfig, TrialConfig
from bench.errors import BenchError
from bench.data.images import placeholder_counts
from bench.api.interfaces import IMAGE, JOINT, TEXT, BuildContext, Fusion, Task
from bench.trial.build import build_model, build_objectives
from bench.trial.cache import CacheStore
from bench.trial.context import TrialContext
from bench.trial.device import autocast, choose_device, loader_settings
from bench.trial.evaluate import Predictions, predict
from bench.trial.inputs import TrialInputs
from bench.trial.model import count_parameters
from bench.trial.prepare import TrialData, seed_everything
from bench.trial.records import make_loader
from bench.trial.selection import Selector
from bench.trial.train import run_stage


MODALITIES = (TEXT, IMAGE, JOINT)


def open_trial(cfg: TrialConfig, ctx: TrialContext) -> "TrialRun":
    """The trial's task (a plugin, ``trial.task``), its data as the task prepares it, and the run."""
    task = ctx.registry.create("task", cfg.task.name, cfg.task.options, BuildContext(seed=cfg.seed,
                               cache_dir=ctx.cache_dir), field="trial.task")
    if not isinstance(task, Task):
        raise BenchError(f"task plugin '{cfg.task.name}' returned {type(task).__name__}, not a Task",
                         field="trial.task.name", fix="the plugin's factory must return a bench.api.interfaces.Task")
    return TrialRun(cfg, ctx, task.prepare(cfg, ctx), task)


class TrialRun:
    """One trial: the model, its inputs (raw or cached), and the loop that trains the stages, selects
    on dev and scores test, asking the task (``self.task``) at every step where tasks differ."""

    def __init__(self, cfg: TrialConfig, ctx: TrialContext, data: TrialData, task: Task):
        self.cfg, self.ctx, self.data, self.task = cfg, ctx, data, task
        self.device = choose_device(cfg.device, ctx.gpus)
        if self.device.type == "cuda":  # the worker may have run another trial before this one
            torch.cuda.reset_peak_memory_stats(self.device)
        self.deadline = time.monotonic() + cfg.max_trial_minutes * 60 if cfg.max_trial_minutes else None
        seed_everything(cfg.seed)
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
        task.check_model(self)

    @property
    def selection_metric(self) -> str | None:
        """The dev metric that picks the epoch: the suite's, else the task's (None with `selection: last`)."""
        if self.cfg.selection == "last":
            return None
        return self.cfg.selection.metric or self.task.selection_metric(self.cfg.eval.k)

    def feeder(self, modality: str, records: list[dict], frozen_ok: bool = True):
        """Cached frozen features when allowed, else (cached) preprocessed inputs."""
        encoder = self.model.encoders[modality]
        if self.inputs.store is not None and frozen_ok and getattr(encoder, "frozen", False):
            return self.inputs.features(modality, encoder, records, with_sequence=self.model.fusion.uses_sequence)
        return self.inputs.inputs(modality, encoder, records)

    def trained_modules(self, modalities: set[str] | None = None) -> tuple[list[nn.Module], list[nn.Module]]:
        """(encoders, heads) that training changes and selection restores: the encoders that feed the
        outputs (the fusion's, and the ones ``modalities`` adds: those a stage's objectives encode
        themselves) unless frozen, then the fusion and the task's scoring modules. The one place
        that decides it: the optimizer and the selector both read it."""
        used = self.used_modalities | set(modalities or ())
        encoders = [e for m, e in self.model.encoders.items() if m in used and not getattr(e, "frozen", False)]
        return encoders, [self.model.fusion, *self.task.trained_modules(self)]

    def train(self) -> dict[str, float]:
        """Run the stages in order (none: the trial only evaluates); weights flow from one stage to the next."""
        self.served_ids = self.fit_encoders_and_probe()  # item ids the training saw (probe, then batches)
        losses = {}
        if not self.cfg.stages:
            self.selection = {"selection_metric": None,
                              "selection_note": "stages: [] - nothing trained; the model is evaluated as built"}
        for i, stage in enumerate(self.cfg.stages):
            objectives = self.stage_objectives(stage, i)
            self_encoded = {n for o, _ in objectives for n in o.needs}
            modalities = set(self.model.fusion.requires) | (self_encoded & set(MODALITIES))
            self.used_modalities |= modalities

            def preprocessors(records: list[dict]) -> dict:
                return {m: self.feeder(m, records, frozen_ok=m not in self_encoded) for m in sorted(modalities)}

            loader = self.task.training_loader(self, stage, i, objectives, preprocessors)
            last = i == len(self.cfg.stages) - 1
            selector = self.selector() if last else None
            hook = self.evaluation_hook(selector)
            every = self.cfg.selection.every_steps if selector is not None else None
            encoders, heads = self.trained_modules()
            stats = run_stage(self.model, objectives, loader, stage, self.device, self.cfg.amp, self.deadline,
                              on_evaluation=hook, every_steps=every, encoders=encoders, heads=heads)
            self.task.note_served(self, loader, stats.steps)
            self.train_samples += stats.samples
            self.train_seconds += stats.seconds
            losses[f"loss_{stage.name}"] = round(stats.loss, 5) if stats.steps else None  # nothing trained
            losses.update({f"train_{stage.name}_{k}": round(v, 5) for k, v in stats.parts.items()})
            if last:
                self.finish_selection(selector, stats)
        losses.update(self.task.seen_shares(self))
        return losses

    def stage_objectives(self, stage, index: int) -> list:
        """The stage's objectives, built, on the device, told the train label counts if they ask."""
        objectives = build_objectives(stage, self.cfg, self.ctx, self.model, self.data.task, index)
        train_labels = self.data.train_labels if self.data.task.num_labels else None
        for objective, _ in objectives:
            objective.to(self.device)
            if hasattr(objective, "set_label_counts") and train_labels is not None:
                objective.set_label_counts(torch.bincount(torch.tensor(train_labels[train_labels >= 0]),
                                                          minlength=self.data.task.num_labels).float())
        self.objective_modules.extend(o for o, _ in objectives)
        self.task.stage_objectives(self, stage, index, objectives)
        return objectives

    def selector(self) -> Selector | None:
        """A dev-metric selector for the last stage, or None (``selection: last``, or no dev split)."""
        metric = self.selection_metric
        self.selection = {"selection_metric": metric}
        if metric is None:
            return None
        if not self.data.splits["dev"]:
            self.selection["selection_note"] = "no dev split: the last epoch's weights are kept"
            return None
        sel = self.cfg.selection
        encoders, heads = self.trained_modules()
        return Selector(metric, sel.mode, sel.patience, sel.min_delta, modules=[*heads[:1], *encoders, *heads[1:]])

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
        return self.task.dev_metrics(self, self.task.fit_on_dev(self, dev)) if dev is not None else {}

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

    def choose_on_dev(self, dev: Predictions) -> Predictions:
        """The fusion's setting (``Fusion.dev_choices``, e.g. hybrid_score's weight) that is best on
        dev by the trial's selection metric (the task's own under `selection: last` and without
        stages); ties go to the fusion's first. Dev as the chosen setting gives it."""
        metric = self.selection_metric or self.task.selection_metric(self.cfg.eval.k)
        sign = -1.0 if isinstance(self.cfg.selection, SelectionConfig) and self.cfg.selection.mode == "min" else 1.0
        best = None
        for setting, out in self.model.fusion.dev_choices(dev.as_fusion_output()):
            candidate = dev.with_outputs(out)
            value = self.task.dev_metrics(self, candidate).get(metric)
            if value is not None and not math.isnan(value) and (best is None or sign * value > sign * best[0]):
                best = (value, setting, candidate)
        if best is None:
            return dev
        self.model.fusion.choose_on_dev(best[1], metric)
        return best[2]

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
        from bench.trial.fitting import fit_encoder, is_fitted_encoder

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
        modalities = sorted(self.model.fusion.requires)
        self.model.eval()
        chunks: dict[str, list[torch.Tensor]] = {m: [] for m in modalities}
        for batch in self.eval_loader(records):
            batch = batch.to(self.device, non_blocking=self.device.type == "cuda")
            with autocast(self.device, self.cfg.amp):
                encoded = self.model.encode(batch, modalities)
            for m in modalities:
                chunks[m].append(encoded[m].pooled.float())
        return {m: torch.cat(parts) for m, parts in chunks.items()}

    def eval_loader(self, records: list[dict]):
        """In-order batches of these records with the fusion's inputs (frozen encoders' from the cache)."""
        feeders = {m: self.feeder(m, records) for m in sorted(self.model.fusion.requires)}
        return make_loader(records, feeders, batch_size=self.cfg.eval.batch_size, train=False, **self.loader_kw)

    def predict(self, split: str) -> Predictions | None:
        records = self.data.splits[split]
        if not records:
            return None
        return predict(self.model, self.eval_loader(records), self.device, self.cfg.amp)

    def evaluate(self) -> tuple[Predictions | None, Predictions]:
        """Dev first (post-training choices such as late fusion's weight are fitted there), then test."""
        dev = self.predict("dev")
        if dev is not None:
            dev = self.task.fit_on_dev(self, dev)
        return dev, self.predict("test")

    def metrics(self, dev: Predictions | None, test: Predictions) -> dict[str, Any]:
        """The row: the task's test (and dev) metrics, then what the trial cost and what it was."""
        splits = self.data.splits
        out: dict[str, Any] = dict(self.task.test_metrics(self, dev, test))
        used = [self.model.encoders[m] for m in sorted(self.used_modalities) if m in self.model.encoders]
        n_params, n_trainable = count_parameters(self.model.fusion, *used, *self.objective_modules)
        out.update(self.model.fusion.report())
        out.update({k: round(v, 3) if k == "selection_s" else v for k, v in self.selection.items()})
        out.update(self.fit_report)
        for encoder in self.model.encoders.values():  # every encoder of the trial, fitted on train or not
            out.update(encoder.report())
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



    def prediction_table(self, key: str, test: Predictions) -> pl.DataFrame:
        return self.task.prediction_table(self, key, test)


def _numeric(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
