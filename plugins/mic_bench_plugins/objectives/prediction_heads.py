"""Prediction heads shared by the masked-prediction objectives.

The vocabulary decoder reuses the text encoder's input word embeddings as its weight (BERT's
weight tying) when their width matches; it reads them from the encoder at loss time instead of
holding them, so the optimizer sees each parameter once (in the encoder's group).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def input_embeddings(encoder: nn.Module) -> nn.Embedding | None:
    """The word-embedding table of an hf_text or single_stream encoder (None if it has none)."""
    for owner in (encoder, getattr(encoder, "model", None)):
        getter = getattr(owner, "get_input_embeddings", None)
        if callable(getter):
            return getter()
    return None


def transform(hidden: int) -> nn.Module:
    """BERT's prediction-head transform: dense, GELU, LayerNorm."""
    return nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))


def global_predictor(hidden: int) -> nn.Module:
    """VT-BERT's 2-layer GELU + LayerNorm network on [CLS] output + position embedding."""
    return nn.Sequential(transform(hidden), transform(hidden))


class VocabDecoder(nn.Module):
    """hidden -> vocabulary logits; tied to the encoder's word embeddings when ``tie`` and widths agree."""

    def __init__(self, hidden: int, encoder: nn.Module, tie: bool = True):
        super().__init__()
        table = input_embeddings(encoder)
        self.tied = bool(tie and table is not None and table.weight.shape[1] == hidden)
        self.vocab_size = table.num_embeddings if table is not None else len(encoder.tokenizer)
        self.bias = nn.Parameter(torch.zeros(self.vocab_size))
        self.weight = None if self.tied else nn.Parameter(torch.randn(self.vocab_size, hidden) * 0.02)

    def forward(self, h: Tensor, encoder: nn.Module) -> Tensor:
        weight = input_embeddings(encoder).weight if self.tied else self.weight
        return F.linear(h, weight.to(h.dtype), self.bias.to(h.dtype))
