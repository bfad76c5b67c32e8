"""Objective example: focal loss on the fusion's logits (Lin et al. 2017)."""
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from bench import hookimpl
from bench.api.interfaces import LossOutput, Objective
from bench.api.registry import PluginSpec


class FocalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gamma: float = Field(2.0, ge=0.0, le=10.0, description="focusing strength; 0 = plain cross-entropy")


class FocalLoss(Objective):
    needs = frozenset({"labels"})  # refused on the ssl split, whose labels are hidden
    sampler = "random"

    def __init__(self, opts: FocalOptions):
        super().__init__()
        self.gamma = opts.gamma

    def loss(self, model, batch):
        logits = model(batch).logits
        known = batch.labels >= 0  # -1 = no label
        if not known.any():
            return LossOutput(logits.sum() * 0.0)
        log_p = F.log_softmax(logits[known], dim=-1).gather(1, batch.labels[known].unsqueeze(1)).squeeze(1)
        focal = (-(1 - log_p.exp()) ** self.gamma * log_p).mean()
        return LossOutput(focal, {"focal": float(focal.detach()), "ce": float(-log_p.detach().mean())})


def build(opts: FocalOptions, ctx) -> FocalLoss:
    return FocalLoss(opts)


@hookimpl
def bench_objectives():
    return [PluginSpec("objective", "focal", "focal loss on the labels", build, FocalOptions)]
