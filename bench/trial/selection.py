"""Model selection on dev: remember the best evaluation's weights, stop after ``patience``
evaluations without improvement, and put the best weights back before the test split is seen.

The selector only ever sees dev metrics; the test split is evaluated once, after ``restore``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def trainable_state(modules: list[nn.Module]) -> list[dict[str, torch.Tensor]]:
    """A CPU copy of every tensor that training can change (parameters and buffers)."""
    return [{k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()} for m in modules]


@dataclass
class Selector:
    """Tracks the dev metric of each evaluation of the selected stage.

    ``modules``: what training changes and prediction reads (the fusion, encoders that are not
    frozen); their state at the best evaluation is copied to CPU and restored at the end.
    """

    metric: str
    mode: str = "max"
    patience: int | None = None
    min_delta: float = 0.0
    modules: list[nn.Module] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: float | None = None
    best_metrics: dict[str, Any] = field(default_factory=dict)
    evaluations: int = 0
    since_best: int = 0
    _best_state: list[dict[str, torch.Tensor]] | None = None

    def improves(self, value: float) -> bool:
        if self.best_value is None:
            return True
        gain = value - self.best_value if self.mode == "max" else self.best_value - value
        return gain > self.min_delta

    def update(self, epoch: float, metrics: dict[str, Any]) -> bool:
        """Record one evaluation; True when training should stop (patience used up).

        A missing or NaN metric never counts as an improvement, so a broken evaluation cannot
        become the kept model.
        """
        self.evaluations += 1
        value = metrics.get(self.metric)
        valid = isinstance(value, (int, float)) and not math.isnan(value)
        if valid and self.improves(float(value)):
            self.best_value, self.best_epoch = float(value), epoch
            self.best_metrics = dict(metrics)
            self._best_state = trainable_state(self.modules)
            self.since_best = 0
        else:
            self.since_best += 1
        return self.patience is not None and self.since_best >= self.patience

    def restore(self) -> bool:
        """Load the best evaluation's weights back into the modules (False if none was kept)."""
        if self._best_state is None:
            return False
        for module, state in zip(self.modules, self._best_state):
            module.load_state_dict(state)
        return True
