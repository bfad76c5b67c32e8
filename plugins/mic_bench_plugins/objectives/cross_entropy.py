"""Cross-entropy on labels, summed over every logits head the fusion trains."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from bench.api.interfaces import Batch, LossOutput, Objective
from bench.api.registry import PluginSpec


class CrossEntropyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    class_weighted: bool = Field(False, description="weight classes by inverse training frequency")


class CrossEntropy(Objective):
    needs = frozenset({"labels"})

    def __init__(self, opts: CrossEntropyOptions, n_labels: int):
        super().__init__()
        self.opts = opts
        self.register_buffer("class_weights", torch.ones(max(n_labels, 1)))

    def set_label_counts(self, counts: torch.Tensor) -> None:
        """Called by the trainer with training label counts when class weighting is on."""
        if self.opts.class_weighted:
            w = counts.sum() / (counts.clamp(min=1) * len(counts))
            self.class_weights.copy_(w.to(self.class_weights))

    def loss(self, model, batch: Batch) -> LossOutput:
        out = model(batch)
        parts = out.trained_logits()
        if not parts:
            raise ValueError("cross_entropy needs a fusion with a classification head")
        weight = self.class_weights if self.opts.class_weighted else None
        # unknown labels (-1) are ignored by the loss itself: no masked copies of logits and labels per step
        losses = [F.cross_entropy(p, batch.labels, weight=weight, ignore_index=-1,
                                  label_smoothing=self.opts.label_smoothing) for p in parts]
        total = torch.stack(losses).sum()
        return LossOutput(total, {"ce": float(total.detach())})


def build(opts: CrossEntropyOptions, ctx) -> CrossEntropy:
    return CrossEntropy(opts, ctx.task.num_labels if ctx.task else 0)


SPECS = [PluginSpec("objective", "cross_entropy", "cross-entropy on labels (optionally class-weighted, label smoothing)",
                    build, CrossEntropyOptions)]
