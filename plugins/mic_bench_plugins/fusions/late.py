"""Late fusion.

``late``: a text classifier and an image classifier, trained side by side with separate losses
(their parameters are disjoint, so this equals training them separately); prediction is
p = a * p_text + (1 - a) * p_image with a chosen on the dev split over a grid.
``late_avg_embedding``: the thesis variant, average the two (projected) embeddings, one softmax head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from bench.interfaces import IMAGE, TEXT, EncoderOutput, Fusion, FusionOutput

from .heads import HeadOptions, make_head, num_labels


class LateOptions(HeadOptions):
    alpha_grid_step: float = Field(0.05, gt=0.0, le=0.5, description="grid step for a in [0, 1]")


class LateFusion(Fusion):
    uses_sequence = False
    requires = frozenset({TEXT, IMAGE})

    def __init__(self, text_dim: int, image_dim: int, n_labels: int, opts: LateOptions):
        super().__init__()
        self.opts = opts
        self.text_head = make_head(text_dim, n_labels, opts)
        self.image_head = make_head(image_dim, n_labels, opts)
        self.register_buffer("alpha", torch.tensor(0.5))

    @staticmethod
    def combine(text_logits: Tensor, image_logits: Tensor, alpha: Tensor | float) -> Tensor:
        """log(a * softmax(text) + (1 - a) * softmax(image)), a log-probability per class."""
        p = alpha * F.softmax(text_logits, -1) + (1 - alpha) * F.softmax(image_logits, -1)
        return torch.log(p.clamp_min(1e-12))

    def forward(self, features: dict[str, EncoderOutput]) -> FusionOutput:
        t, v = features[TEXT].pooled, features[IMAGE].pooled
        emb = torch.cat([F.normalize(t, dim=-1), F.normalize(v, dim=-1)], dim=-1)
        kinds = {TEXT: t, IMAGE: v, "multimodal": emb}
        if self.text_head is None:
            return FusionOutput(embedding=emb, kinds=kinds)
        lt, li = self.text_head(t), self.image_head(v)
        return FusionOutput(embedding=emb, logits=self.combine(lt, li, self.alpha), logits_parts=[lt, li], kinds=kinds)

    @torch.no_grad()
    def fit_on_dev(self, outputs: FusionOutput, labels: Tensor) -> None:
        """Pick a on dev (accuracy; ties go to the a nearest 0.5)."""
        if not outputs.logits_parts or labels.numel() == 0:
            return
        lt, li = outputs.logits_parts
        grid = torch.arange(0.0, 1.0 + 1e-9, self.opts.alpha_grid_step)
        scores = torch.stack([(self.combine(lt, li, a).argmax(-1) == labels).float().mean() for a in grid])
        best = scores.max()
        candidates = grid[scores >= best - 1e-9]
        self.alpha.fill_(float(candidates[(candidates - 0.5).abs().argmin()]))

    def report(self) -> dict:
        return {"late_alpha": round(float(self.alpha), 4)}


class LateAvgEmbeddingFusion(Fusion):
    uses_sequence = False
    requires = frozenset({TEXT, IMAGE})

    def __init__(self, text_dim: int, image_dim: int, n_labels: int, opts: "LateAvgOptions"):
        super().__init__()
        self.text_proj = nn.Linear(text_dim, opts.dim)
        self.image_proj = nn.Linear(image_dim, opts.dim)
        self.head = make_head(opts.dim, n_labels, opts)

    def forward(self, features: dict[str, EncoderOutput]) -> FusionOutput:
        t, v = self.text_proj(features[TEXT].pooled), self.image_proj(features[IMAGE].pooled)
        emb = (t + v) / 2
        logits = self.head(emb) if self.head is not None else None
        return FusionOutput(embedding=emb, logits=logits, logits_parts=[logits] if logits is not None else [],
                            kinds={TEXT: t, IMAGE: v, "multimodal": emb})


class LateAvgOptions(HeadOptions):
    dim: int = Field(256, ge=8, description="common width the two embeddings are projected to")


def build_late(opts: LateOptions, ctx) -> LateFusion:
    return LateFusion(ctx.encoders[TEXT].dim, ctx.encoders[IMAGE].dim, num_labels(ctx), opts)


def build_late_avg(opts: LateAvgOptions, ctx) -> LateAvgEmbeddingFusion:
    return LateAvgEmbeddingFusion(ctx.encoders[TEXT].dim, ctx.encoders[IMAGE].dim, num_labels(ctx), opts)
