"""Late fusion.

``late``: a text classifier and an image classifier, trained side by side with separate losses
(their parameters are disjoint, so this equals training them separately); prediction is
p = a * p_text + (1 - a) * p_image with a chosen on the dev split over a grid, by the suite's
selection metric (macro-F1 unless told otherwise); without a dev split a is not fitted and the
row says so (late_alpha null, late_alpha_note).
``late_avg_embedding``: the thesis variant, average the two (projected) embeddings, one softmax head.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from bench.errors import BenchError
from bench.api.interfaces import IMAGE, TEXT, EncoderOutput, Fusion, FusionOutput
from bench.metrics.classification import macro_f1
from bench.api.registry import PluginSpec

from .heads import HeadOptions, make_head, num_labels

SELECTION_METRICS = ("accuracy", "macro_f1")


class LateOptions(HeadOptions):
    alpha_grid_step: float = Field(0.05, gt=0.0, le=0.5, description="grid step for a in [0, 1]")


class LateFusion(Fusion):
    mixes_modalities = False
    uses_sequence = False
    requires = frozenset({TEXT, IMAGE})

    def __init__(self, text_dim: int, image_dim: int, n_labels: int, opts: LateOptions):
        super().__init__()
        self.opts = opts
        self.text_head = make_head(text_dim, n_labels, opts)
        self.image_head = make_head(image_dim, n_labels, opts)
        self.register_buffer("alpha", torch.tensor(0.5))
        self.fitted_by: str | None = None  # the metric a was chosen by; None = not fitted

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
        return FusionOutput(embedding=emb, logits=self.combine(lt, li, self.alpha),
                            head_logits={TEXT: lt, IMAGE: li}, kinds=kinds)

    @torch.no_grad()
    def fit_on_dev(self, outputs: FusionOutput, labels: Tensor, metric: str = "macro_f1") -> FusionOutput | None:
        """Pick a on dev by ``metric`` (the suite's selection metric, "accuracy" or "macro_f1");
        returns the dev outputs under the chosen a, so the trial need not predict dev again.

        Several a can score the same (a coarse metric on a small dev split); the tie goes to the
        a nearest the better single modality (a = 1 text, a = 0 image), so a tie never moves the
        prediction toward the weaker model.
        """
        if metric not in SELECTION_METRICS:
            raise BenchError(f"late fusion cannot choose its weight by '{metric}'", field="metric",
                             fix=f"use one of: {', '.join(SELECTION_METRICS)}")
        known = labels >= 0
        heads = outputs.head_logits
        if TEXT not in heads or IMAGE not in heads or int(known.sum()) == 0:
            return None
        lt, li = heads[TEXT][known].float(), heads[IMAGE][known].float()
        y = labels[known].cpu().numpy()
        grid = alpha_grid(self.opts.alpha_grid_step)
        scores = np.array([selection_score(y, self.combine(lt, li, a).argmax(-1).cpu().numpy(), metric)
                           for a in grid])
        candidates = grid[scores >= scores.max() - 1e-12]
        text_end = better_single_modality(scores, lt, li, labels[known])
        self.alpha.fill_(float(candidates.max() if text_end else candidates.min()))
        self.fitted_by = metric
        combined = self.combine(heads[TEXT].float(), heads[IMAGE].float(), self.alpha)
        return FusionOutput(outputs.embedding, combined, head_logits=heads, kinds=outputs.kinds)

    def report(self) -> dict:
        """late_alpha: the weight of the text classifier chosen on dev (null when there was no dev split)."""
        if self.fitted_by is None:
            return {"late_alpha": None, "late_alpha_metric": None,
                    "late_alpha_note": f"not fitted (no dev split): predictions used a = {float(self.alpha):g}"}
        return {"late_alpha": round(float(self.alpha), 4), "late_alpha_metric": self.fitted_by,
                "late_alpha_note": None}


def alpha_grid(step: float) -> np.ndarray:
    """0, step, 2 step, ... and always both ends 0 and 1."""
    return np.unique(np.append(np.round(np.arange(0.0, 1.0, step), 10), 1.0))


def selection_score(y_true: np.ndarray, y_pred: np.ndarray, metric: str) -> float:
    """accuracy, or macro-F1 over the labels present in y_true (as the trial row reports it)."""
    if metric == "accuracy":
        return float((y_true == y_pred).mean())
    return macro_f1(y_true, y_pred)


def better_single_modality(scores: np.ndarray, text_logits: Tensor, image_logits: Tensor, labels: Tensor) -> bool:
    """True if text alone (a = 1, the last grid point) is at least as good as image alone (a = 0);
    an exact tie goes to the lower dev cross-entropy."""
    if scores[-1] != scores[0]:
        return bool(scores[-1] > scores[0])
    return float(F.cross_entropy(text_logits, labels)) <= float(F.cross_entropy(image_logits, labels))


class LateAvgEmbeddingFusion(Fusion):
    mixes_modalities = False
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
        return FusionOutput(embedding=emb, logits=logits, kinds={TEXT: t, IMAGE: v, "multimodal": emb})


class LateAvgOptions(HeadOptions):
    dim: int = Field(256, ge=8, description="common width the two embeddings are projected to")


def build_late(opts: LateOptions, ctx) -> LateFusion:
    return LateFusion(ctx.encoders[TEXT].dim, ctx.encoders[IMAGE].dim, num_labels(ctx), opts)


def build_late_avg(opts: LateAvgOptions, ctx) -> LateAvgEmbeddingFusion:
    return LateAvgEmbeddingFusion(ctx.encoders[TEXT].dim, ctx.encoders[IMAGE].dim, num_labels(ctx), opts)


SPECS = [
    PluginSpec("fusion", "late", "text and image classifiers; p = a p_text + (1-a) p_image, a chosen on dev",
               build_late, LateOptions),
    PluginSpec("fusion", "late_avg_embedding", "average of projected text and image embeddings, one softmax head",
               build_late_avg, LateAvgOptions),
]
