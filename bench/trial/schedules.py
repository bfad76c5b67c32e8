"""Learning-rate schedules for a training stage: a factor of the base rate per optimizer step.

All three warm up linearly over the first 10% of steps (a randomly initialised head must not take
full-size steps on its first, noisiest gradients), then:
- linear: decay linearly to 0 at the last step (the usual transformer fine-tuning schedule);
- cosine: decay along a half cosine to 0 at the last step;
- constant: stay at the base rate (what a hand-written loop with early stopping uses).
"""
from __future__ import annotations

import math
from typing import Callable, Literal

ScheduleName = Literal["linear", "constant", "cosine"]
SCHEDULES: tuple[str, ...] = ("linear", "constant", "cosine")


def _warmup_steps(total_steps: int) -> int:
    return max(1, total_steps // 10)


def warmup_then_linear_decay(total_steps: int) -> Callable[[int], float]:
    """Linear warm-up over the first 10% of steps, then linear decay to 0."""
    warmup = _warmup_steps(total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def warmup_then_cosine_decay(total_steps: int) -> Callable[[int], float]:
    """Linear warm-up over the first 10% of steps, then half-cosine decay to 0."""
    warmup = _warmup_steps(total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def warmup_then_constant(total_steps: int) -> Callable[[int], float]:
    """Linear warm-up over the first 10% of steps, then the base rate."""
    warmup = _warmup_steps(total_steps)

    def factor(step: int) -> float:
        return (step + 1) / warmup if step < warmup else 1.0

    return factor


FACTORIES = {"linear": warmup_then_linear_decay, "cosine": warmup_then_cosine_decay,
             "constant": warmup_then_constant}


def lr_factor(name: str, total_steps: int) -> Callable[[int], float]:
    """The schedule ``name`` over ``total_steps`` steps, for torch's LambdaLR."""
    return FACTORIES[name](total_steps)
