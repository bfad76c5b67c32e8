"""One training stage: weighted objectives, an optimizer, epochs; NaN and time limits enforced."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from bench.device import autocast, grad_scaler
from bench.errors import TrialFailure, TrialTimeout
from bench.interfaces import Objective
from bench.model import BenchModel
from bench.suite import StageConfig

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


@dataclass
class StageStats:
    name: str
    samples: int = 0
    seconds: float = 0.0
    steps: int = 0
    loss: float = float("nan")
    parts: dict[str, float] = field(default_factory=dict)


def make_optimizer(model: BenchModel, objectives: list[nn.Module], cfg: StageConfig) -> torch.optim.Optimizer | None:
    """Encoders at lr; fusion and objective heads at head_lr (default lr)."""
    head = model.head_parameters() + [p for o in objectives for p in o.parameters() if p.requires_grad]
    groups = [{"params": model.encoder_parameters(), "lr": cfg.optimizer.lr},
              {"params": head, "lr": cfg.optimizer.head_lr or cfg.optimizer.lr}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        return None
    kwargs = {"weight_decay": cfg.optimizer.weight_decay}
    return OPTIMIZERS[cfg.optimizer.name](groups, **kwargs)


def warmup_then_linear_decay(total_steps: int):
    """Learning-rate factor: linear warm-up over the first 10% of steps, then linear decay to 0."""
    warmup = max(1, total_steps // 10)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def run_stage(model: BenchModel, objectives: list[tuple[Objective, float]], loader, cfg: StageConfig,
              device: torch.device, amp: str = "off", deadline: float | None = None) -> StageStats:
    stats = StageStats(cfg.name)
    modules = [o for o, _ in objectives]
    optimizer = make_optimizer(model, modules, cfg)
    if optimizer is None:
        return stats
    steps_per_epoch = len(loader)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    from bench.schedules import lr_factor
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.schedule, total_steps))
    scaler = grad_scaler(device, amp)
    model.train()
    for o in modules:
        o.train()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    start = time.perf_counter()
    step = 0
    while step < total_steps:
        for batch in loader:
            if step >= total_steps:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TrialTimeout(f"trial ran past max_trial_minutes during stage '{cfg.name}' (step {step})")
            batch = batch.to(device, non_blocking=device.type == "cuda")
            with autocast(device, amp):
                total = None
                parts: dict[str, float] = {}
                for objective, weight in objectives:
                    out = objective.loss(model, batch)
                    total = out.total * weight if total is None else total + out.total * weight
                    parts.update(out.parts)
            if not torch.isfinite(total):
                raise TrialFailure(f"loss became {float(total)} at step {step} of stage '{cfg.name}' "
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
            stats.steps += 1
            stats.loss = float(total.detach())
            stats.parts = parts
            step += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    stats.seconds = time.perf_counter() - start
    return stats
