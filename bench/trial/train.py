"""One training stage: weighted objectives, an optimizer, epochs; NaN and time limits enforced."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from bench.trial.device import autocast, grad_scaler
from bench.errors import TrialFailure, TrialTimeout
from bench.api.interfaces import Objective
from bench.trial.model import BenchModel
from bench.trial.schedules import lr_factor
from bench.config.schema import StageConfig
OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


@dataclass
class StageStats:
    """What a stage did: samples and pure training seconds (evaluations excluded), and the
    training loss as a mean over the last epoch's steps (not the last batch), with the mean of
    every part the objectives log."""

    name: str
    samples: int = 0
    seconds: float = 0.0
    steps: int = 0
    loss: float = float("nan")
    parts: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False


class RunningMeans:
    """Means of the loss and its logged parts over the steps since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n, self.loss, self.parts, self.counts = 0, 0.0, {}, {}

    def add(self, loss: float, parts: dict[str, float]) -> None:
        self.n += 1
        self.loss += loss
        for k, v in parts.items():
            self.parts[k] = self.parts.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> tuple[float, dict[str, float]]:
        loss = self.loss / self.n if self.n else float("nan")
        return loss, {k: self.parts[k] / self.counts[k] for k in self.parts}


# Called after each epoch (and every ``every_steps`` steps) with the training summary since the
# previous call; returns True to stop the stage (early stopping or a scheduler's decision).
EvaluationHook = Callable[[dict[str, Any]], bool]


def make_optimizer(encoders: list[nn.Module], heads: list[nn.Module], objectives: list[nn.Module],
                   cfg: StageConfig) -> torch.optim.Optimizer | None:
    """Encoders at lr; fusion, task heads and objective heads at head_lr (default lr). Only the
    trainable parameters of the modules given (``TrialRun.trained_modules``): an encoder no output
    reads is not trained, and a stage with nothing trainable is a no-op (None)."""
    head = _trainable([*heads[:1], *objectives, *heads[1:]])  # the fusion, the objectives, then task heads
    groups = [{"params": _trainable(encoders), "lr": cfg.optimizer.lr},
              {"params": head, "lr": cfg.optimizer.head_lr or cfg.optimizer.lr}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        return None
    kwargs = {"weight_decay": cfg.optimizer.weight_decay}
    return OPTIMIZERS[cfg.optimizer.name](groups, **kwargs)


def _trainable(modules: list[nn.Module]) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def run_stage(model: BenchModel, objectives: list[tuple[Objective, float]], loader, cfg: StageConfig,
              device: torch.device, amp: str = "off", deadline: float | None = None,
              on_evaluation: EvaluationHook | None = None, every_steps: int | None = None,
              encoders: list[nn.Module] | None = None, heads: list[nn.Module] | None = None) -> StageStats:
    """Train for ``cfg.epochs`` epochs (fractions allowed). After every epoch, and every
    ``every_steps`` steps when set, ``on_evaluation`` gets the mean training loss and parts since
    its previous call; its time is not counted as training time. ``encoders`` / ``heads``: what
    trains (default: every encoder and the fusion)."""
    stats = StageStats(cfg.name)
    modules = [o for o, _ in objectives]
    encoders = list(model.encoders.values()) if encoders is None else encoders
    heads = [model.fusion] if heads is None else heads
    optimizer = make_optimizer(encoders, heads, modules, cfg)
    if optimizer is None:
        return stats
    steps_per_epoch = len(loader)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.schedule, total_steps))
    scaler = grad_scaler(device, amp)
    model.train()
    for o in modules:
        o.train()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    interval, epoch_means = RunningMeans(), RunningMeans()
    step, paused = 0, 0.0
    model.check_training_outputs = True  # the plugins' outputs on the first batch (bench/trial/output_checks.py)
    start = time.perf_counter()
    interval_samples, interval_start = 0, start  # for each evaluation's training samples/s
    while step < total_steps and not stats.stopped_early:
        for batch in loader:
            if deadline is not None and time.monotonic() > deadline:
                raise TrialTimeout(f"trial ran past max_trial_minutes during stage '{cfg.name}' (step {step})")
            if device.type != "cpu":  # batches are collated on the CPU: nothing to move there
                batch = batch.to(device, non_blocking=device.type == "cuda")
            with autocast(device, amp):
                total = None
                parts: dict[str, float] = {}
                for objective, weight in objectives:
                    out = objective.loss(model, batch)
                    total = out.total * weight if total is None else total + out.total * weight
                    parts.update(out.parts)
            model.check_training_outputs = False
            loss = float(total.detach())
            if not math.isfinite(loss):
                raise TrialFailure(f"loss became {loss} at step {step} of stage '{cfg.name}' "
                                   f"(try a lower learning rate or grad_clip)")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            stats.samples += len(batch)
            interval_samples += len(batch)
            stats.steps += 1
            step += 1
            interval.add(loss, parts)
            epoch_means.add(loss, parts)
            epoch_end = step % steps_per_epoch == 0 or step == total_steps
            if epoch_end:
                stats.loss, stats.parts = epoch_means.means()
                epoch_means.reset()
            if on_evaluation is not None and (epoch_end or (every_steps and step % every_steps == 0)):
                mean_loss, mean_parts = interval.means()
                interval.reset()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                pause = time.perf_counter()
                rate = round(interval_samples / (pause - interval_start), 2) if pause > interval_start else None
                stop = on_evaluation({"stage": cfg.name, "epoch": round(step / steps_per_epoch, 4), "step": step,
                                      "train_loss": mean_loss, **{f"train_{k}": v for k, v in mean_parts.items()},
                                      "train_samples_per_s": rate})
                model.train()
                for o in modules:
                    o.train()
                interval_start = time.perf_counter()
                interval_samples = 0
                paused += interval_start - pause
                if stop and step < total_steps:
                    stats.stopped_early = True
            if step >= total_steps or stats.stopped_early:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    stats.seconds = time.perf_counter() - start - paused
    return stats
