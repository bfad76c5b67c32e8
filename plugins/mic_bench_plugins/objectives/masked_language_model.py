"""Masked language modelling (MLM) with whole-word masking, on titles.

The masked tokens are predicted from the encoder's outputs at their own positions through
BERT's transform and a vocabulary decoder tied to the word embeddings. It runs on the joint
encoder when the trial has one (the image is then context for the masked words), else on the
text encoder. Masking: see masking.py.
"""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from bench.errors import BenchError
from bench.api.interfaces import JOINT, TEXT, Batch, LossOutput, Objective

from .masking import IGNORE, whole_word_mask
from .prediction_heads import VocabDecoder, transform


class MaskingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    word_fraction: float = Field(0.15, gt=0, le=1, description="share of the words of a title that are predicted")
    mask_prob: float = Field(0.8, ge=0, le=1, description="of those, replaced by [MASK]")
    random_prob: float = Field(0.1, ge=0, le=1, description="of those, replaced by a random token (the rest are kept)")
    tie_weights: bool = Field(True, description="decoder weight = the encoder's word embeddings")

    @model_validator(mode="after")
    def _shares(self):
        if self.mask_prob + self.random_prob > 1:
            raise ValueError("mask_prob + random_prob must be at most 1 (e.g. 0.8 and 0.1)")
        return self


def masked_titles(encoder, inputs: dict[str, Tensor], opts: MaskingOptions, vocab_size: int) -> tuple[Tensor, Tensor]:
    return whole_word_mask(inputs["input_ids"], inputs["word_ids"], mask_token_id=encoder.mask_token_id,
                           vocab_size=vocab_size, word_fraction=opts.word_fraction, mask_prob=opts.mask_prob,
                           random_prob=opts.random_prob)


def text_encoder(encoders: dict, objective: str, *, joint_only: bool = False) -> tuple[str, nn.Module]:
    """(slot, encoder) of the encoder that reads titles as tokens: the joint one if present, else text."""
    slots = (JOINT,) if joint_only else (JOINT, TEXT)
    for slot in slots:
        encoder = encoders.get(slot)
        if encoder is not None and hasattr(encoder, "tokenizer"):
            if encoder.mask_token_id is None:
                raise BenchError(f"objective '{objective}': the {slot} encoder's tokenizer has no [MASK] token",
                                 field=f"trial.encoders.{slot}.options.tokenizer", fix="use a BERT-family tokenizer")
            return slot, encoder
    wanted = "a single_stream joint encoder" if joint_only else "a token-level text encoder (hf_text or single_stream)"
    raise BenchError(f"objective '{objective}' needs {wanted}; the trial has {', '.join(encoders) or 'none'}",
                     field="trial.encoders", fix="add encoders.joint (single_stream)" if joint_only
                     else "add encoders.text (hf_text) or encoders.joint (single_stream)")


class MaskedLanguageModel(Objective):
    def __init__(self, opts: MaskingOptions, slot: str, encoder: nn.Module):
        super().__init__()
        self.opts, self.slot = opts, slot
        self.needs = frozenset({slot})
        self.transform = transform(encoder.dim)
        self.decoder = VocabDecoder(encoder.dim, encoder, opts.tie_weights)

    def loss(self, model, batch: Batch) -> LossOutput:
        encoder = model.encoders[self.slot]
        inputs = batch.inputs[self.slot]
        masked, labels = masked_titles(encoder, inputs, self.opts, self.decoder.vocab_size)
        chosen = labels != IGNORE
        out = encoder({**inputs, "input_ids": masked})
        h = out.sequence[:, :masked.shape[1]][chosen]  # text positions come first in every encoder
        if h.shape[0] == 0:
            total = out.pooled.sum() * 0.0
        else:
            total = F.cross_entropy(self.decoder(self.transform(h), encoder), labels[chosen])
        return LossOutput(total, {"mlm": float(total.detach())})


def build_mlm(opts: MaskingOptions, ctx) -> MaskedLanguageModel:
    slot, encoder = text_encoder(ctx.encoders, "mlm")
    return MaskedLanguageModel(opts, slot, encoder)
