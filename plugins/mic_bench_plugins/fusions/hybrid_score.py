"""`hybrid_score`: a lexical and a neural similarity mixed, s = w cos_lexical + (1 - w) cos_neural,
with the weight w chosen on dev by the trial's selection metric.

It reads a ``hybrid_text`` encoder, whose pooled vector is [unit TF-IDF ; unit neural]. The
embedding is [sqrt(w) TF-IDF ; sqrt(1 - w) neural]: a unit vector whose cosine with another is
exactly w cos_lexical + (1 - w) cos_neural (when neither part is zero), so pair scoring, retrieval
and every metric path use it unchanged. Nothing trains: each dev evaluation tries every w of the
grid (``Fusion.dev_choices``) and the trial keeps the best by its own selection metric
(dev_pair_ap for task pairs, dev_ndcg@k for matching), so both parts alone (w = 1: TF-IDF,
w = 0: the neural encoder) are candidates and the row says which won (``hybrid_weight``).
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from bench.errors import BenchError
from bench.api.interfaces import CLASSIFICATION, TEXT, EncoderOutput, Fusion, FusionOutput
from bench.api.registry import PluginSpec


class HybridScoreOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float | None = Field(None, ge=0.0, le=1.0, description="the lexical weight w; None: the best of the "
                                                                   "grid on dev")
    grid_step: float = Field(0.05, gt=0.0, le=0.5, description="grid step for w in [0, 1] (both ends always tried)")


class HybridScoreFusion(Fusion):
    mixes_modalities = False
    uses_sequence = False
    requires = frozenset({TEXT})

    def __init__(self, widths: tuple[int, int], opts: HybridScoreOptions):
        super().__init__()
        self.opts = opts
        self.widths = widths
        self.register_buffer("weight", torch.tensor(opts.weight if opts.weight is not None else 0.5))
        self.fitted_by: str | None = None  # the metric w was chosen by; None = given or not fitted

    def mix(self, pooled: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
        lexical, neural = pooled.float().split(self.widths, dim=-1)
        weight = torch.as_tensor(weight, dtype=torch.float32, device=pooled.device)
        return torch.cat([weight.sqrt() * lexical, (1 - weight).sqrt() * neural], dim=-1)

    def forward(self, features: dict[str, EncoderOutput]) -> FusionOutput:
        pooled = features[TEXT].pooled
        return FusionOutput(embedding=self.mix(pooled, self.weight), kinds={TEXT: pooled})

    def grid(self) -> list[float]:
        """w from 0.5 outwards (0.5, 0.45, 0.55, ...): the trial keeps the first of equal scores, so a
        tie goes to the more even mix."""
        step = self.opts.grid_step
        values = np.unique(np.append(np.round(np.arange(0.0, 1.0, step), 10), 1.0))
        return sorted(values.tolist(), key=lambda w: (abs(w - 0.5), w))

    def dev_choices(self, outputs: FusionOutput) -> Iterator[tuple[float, FusionOutput]]:
        if self.opts.weight is not None:
            return
        pooled = outputs.kinds[TEXT]
        for w in self.grid():  # one at a time: a dev embedding of a wide TF-IDF is large
            yield w, FusionOutput(embedding=self.mix(pooled, w), kinds=outputs.kinds)

    def choose_on_dev(self, setting: float, metric: str) -> None:
        self.weight.fill_(float(setting))
        self.fitted_by = metric

    def report(self) -> dict:
        """hybrid_weight: the lexical weight w (1 = TF-IDF alone, 0 = the neural encoder alone)."""
        w = round(float(self.weight), 4)
        if self.opts.weight is not None:
            return {"hybrid_weight": w, "hybrid_weight_metric": None, "hybrid_weight_note": "given in the options"}
        if self.fitted_by is None:
            return {"hybrid_weight": None, "hybrid_weight_metric": None,
                    "hybrid_weight_note": f"not fitted (no dev split or no dev score): predictions used w = {w:g}"}
        return {"hybrid_weight": w, "hybrid_weight_metric": self.fitted_by, "hybrid_weight_note": None}


def build(opts: HybridScoreOptions, ctx) -> HybridScoreFusion:
    encoder = ctx.encoders.get(TEXT)
    parts = getattr(encoder, "parts", None)
    if encoder is None or parts is None or len(parts) != 2:
        raise BenchError("hybrid_score weighs the two parts of a hybrid_text encoder", field="trial.encoders.text.name",
                         fix="use encoders: {text: {name: hybrid_text, options: {lexical: {...}, neural: {...}}}}")
    if ctx.task is not None and ctx.task.kind == CLASSIFICATION:
        raise BenchError("hybrid_score is a similarity (task pairs or matching); it has no classifier",
                         field="trial.fusion.name", fix="for classification use linear_probe or text_only")
    if not math.isclose(sum(w for _, w in parts), encoder.dim):
        raise BenchError(f"the text encoder's parts ({parts}) do not add up to its width {encoder.dim}",
                         field="trial.encoders.text")
    return HybridScoreFusion((parts[0][1], parts[1][1]), opts)


SPECS = [PluginSpec("fusion", "hybrid_score",
                    "w cos_tfidf + (1 - w) cos_neural of a hybrid_text encoder, w chosen on dev by the selection metric",
                    build, HybridScoreOptions)]
