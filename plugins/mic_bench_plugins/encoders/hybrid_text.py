"""`hybrid_text`: a lexical (TF-IDF) and a neural (HF transformers) view of the same title, side by side.

On product titles practitioners ship hybrid scores: a model number or brand token that TF-IDF
matches exactly and a paraphrase that a sentence encoder matches both count. The trial has one
text encoder slot, so this encoder holds both: its pooled vector is [lexical ; neural], each part
scaled to unit length (a zero TF-IDF vector, a title with no known n-gram, stays zero). Under
``text_only`` the cosine of two such vectors is the plain average of the two cosines; the
``hybrid_score`` fusion weighs them, with the weight chosen on dev.

The lexical part is fitted on the train titles only (``tfidf_text``'s fit); the neural part is
``hf_text`` with its own options (``freeze: all`` makes the whole encoder frozen, so its outputs
go through the frozen-feature cache).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from bench.api.interfaces import TEXT, Encoder, EncoderOutput
from bench.api.registry import PluginSpec

from .hf_text import HFTextEncoder, HFTextOptions
from .tfidf_text import VECTOR_KEY, TfidfTextEncoder, TfidfTextOptions

PART_NAMES = ("lexical", "neural")


class HybridTextOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lexical: TfidfTextOptions = Field(default_factory=TfidfTextOptions, description="tfidf_text options")
    neural: HFTextOptions = Field(default_factory=lambda: HFTextOptions(pooling="mean", freeze="all"),
                                  description="hf_text options (default: the packaged MiniLM, mean-pooled, frozen)")


class HybridTextEncoder(Encoder):
    """[unit TF-IDF vector ; unit neural vector]; ``parts`` gives each part's name and width."""

    modality = TEXT

    def __init__(self, opts: HybridTextOptions, seed: int = 0):
        super().__init__()
        self.opts = opts
        self.lexical = TfidfTextEncoder(opts.lexical)
        self.neural = HFTextEncoder(opts.neural, seed=seed)
        self.parts = ((PART_NAMES[0], self.lexical.dim), (PART_NAMES[1], self.neural.dim))
        self.dim = self.lexical.dim + self.neural.dim
        self.frozen = bool(getattr(self.neural, "frozen", False))

    def fit(self, train_records: list[dict[str, Any]]) -> dict[str, Tensor]:
        return self.lexical.fit(train_records)

    def load_fitted(self, state: dict[str, Tensor]) -> None:
        self.lexical.load_fitted(state)

    def fit_fingerprint(self) -> dict[str, Any]:
        return self.lexical.fit_fingerprint()

    def report(self) -> dict[str, Any]:
        return self.lexical.report()

    def preprocess(self, records: list[dict[str, Any]]) -> dict[str, Tensor]:
        return {**self.lexical.preprocess(records), **self.neural.preprocess(records)}

    def preprocess_fingerprint(self) -> dict[str, Any]:
        return {"lexical": self.lexical.preprocess_fingerprint(), "neural": self.neural.preprocess_fingerprint()}

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        lexical = F.normalize(inputs[VECTOR_KEY].float(), dim=-1)  # a zero row stays zero
        neural = F.normalize(self.neural({k: v for k, v in inputs.items() if k != VECTOR_KEY}).pooled.float(), dim=-1)
        pooled = torch.cat([lexical, neural], dim=-1)
        return EncoderOutput(sequence=pooled.unsqueeze(1), mask=pooled.new_ones(pooled.shape[0], 1, dtype=torch.bool),
                             pooled=pooled)


def build(opts: HybridTextOptions, ctx) -> HybridTextEncoder:
    return HybridTextEncoder(opts, seed=getattr(ctx, "seed", 0))


SPECS = [PluginSpec("encoder", "hybrid_text",
                    "TF-IDF and an HF text model side by side: [unit TF-IDF ; unit neural] (weigh them with hybrid_score)",
                    build, HybridTextOptions)]
