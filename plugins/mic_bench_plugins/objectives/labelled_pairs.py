"""Objectives for the pairs task: they read the labels of the (left, right) pairs of a pair
batch (bench/trial/pairs.py PairBatch), never item labels or groups.

- ``pair_contrastive``: the pair contrastive loss of metric_learning on the labelled pairs
  themselves: d^2 for a matching pair, max(m - d, 0)^2 for a non-matching one, d the Euclidean
  distance of the two embeddings (L2-normalised by default). Matching and non-matching pairs
  are averaged separately and the two means added, as ``contrastive`` does with in-batch pairs.
- ``pair_classification``: binary cross-entropy on the logit s * cos(left, right) + b, with a
  learned scale s (kept positive: s = exp(log_s)) and bias b. The logit rises with the cosine,
  so the cosine the evaluation thresholds ranks pairs as the trained classifier does. Optionally
  (``in_batch_negatives``) an InfoNCE term makes each match's left item pick its right item out
  of all the batch's right items, as bi-encoder retrievers are trained.
- ``pair_cross_encoder``: the text encoder reads both titles as one sequence ([CLS] left [SEP]
  right [SEP]) and a linear head on [CLS] (or the mean over the tokens) gives the match logit, trained with binary
  cross-entropy (as BERT-based entity matchers such as Ditto do). The pair is then scored by that
  logit, not by the cosine of two separate embeddings, so title words can attend across the pair.
  The joined length is settled on the train pairs (``max_length: auto``) before the first step.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from bench.errors import BenchError
from bench.api.interfaces import Batch, LossOutput, Objective
from bench.api.registry import PluginSpec

from .metric_learning import _masked_mean


def require_pairs(batch: Batch) -> None:
    """Pair objectives read pair batches (bench/trial/pairs.py PairBatch) only."""
    if not hasattr(batch, "pair_labels"):
        raise BenchError("this objective trains on labelled pairs, but the batch holds single items",
                         field="trial.task", fix="use it with task: pairs and a pair-labelled dataset")


def pair_embeddings(model, batch: Batch, normalize: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(left embeddings, right embeddings, pair labels) of a pair batch."""
    require_pairs(batch)
    emb = model(batch).embedding
    if normalize:
        emb = F.normalize(emb, dim=-1)
    left, right = batch.halves(emb)
    return left, right, batch.pair_labels


def labelled_pair_contrastive_loss(left: torch.Tensor, right: torch.Tensor, labels: torch.Tensor,
                                   margin: float = 1.0) -> torch.Tensor:
    d2 = ((left - right) ** 2).sum(1)
    d = d2.clamp(min=1e-12).sqrt()
    match = labels == 1
    return _masked_mean(d2, match) + _masked_mean(F.relu(margin - d) ** 2, ~match)


class PairContrastiveOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    margin: float = Field(1.0, gt=0, description="margin m")
    normalize: bool = Field(True, description="L2-normalise embeddings before measuring distances")


class PairContrastive(Objective):
    needs = frozenset({"pairs"})

    def __init__(self, opts: PairContrastiveOptions):
        super().__init__()
        self.opts = opts

    def loss(self, model, batch: Batch) -> LossOutput:
        left, right, labels = pair_embeddings(model, batch, self.opts.normalize)
        total = labelled_pair_contrastive_loss(left, right, labels, self.opts.margin)
        return LossOutput(total, {"pair_contrastive": float(total.detach())})


class PairClassificationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    init_scale: float = Field(10.0, gt=0, description="starting scale s of the cosine")
    init_bias: float = Field(-5.0, description="starting bias b (with s = 10: a pair starts as a match above cos 0.5)")
    pos_weight: float | None = Field(None, gt=0, description="weight of matching pairs in the loss "
                                                            "(null: 1; e.g. negatives / positives for rare matches)")
    in_batch_negatives: float = Field(0.0, ge=0, le=100, description=(
        "weight of an in-batch-negatives term (0: off): each matching pair's left item must pick its right item "
        "out of every right item of the batch (softmax over scale * cosine, InfoNCE)"))


class PairClassification(Objective):
    needs = frozenset({"pairs"})

    def __init__(self, opts: PairClassificationOptions):
        super().__init__()
        self.opts = opts
        self.log_scale = nn.Parameter(torch.tensor(math.log(opts.init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(opts.init_bias)))

    def loss(self, model, batch: Batch) -> LossOutput:
        left, right, labels = pair_embeddings(model, batch, normalize=True)
        logits = self.log_scale.exp() * (left * right).sum(1) + self.bias
        weight = None if self.opts.pos_weight is None else torch.tensor(self.opts.pos_weight, device=logits.device)
        bce = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=weight)
        parts = {"pair_bce": float(bce.detach()), "pair_scale": float(self.log_scale.exp().detach())}
        total = bce
        if self.opts.in_batch_negatives > 0:
            in_batch = labelled_in_batch_negatives_loss(left, right, labels, self.log_scale.exp())
            total = total + self.opts.in_batch_negatives * in_batch
            parts["pair_in_batch"] = float(in_batch.detach())
        return LossOutput(total, parts)


def labelled_in_batch_negatives_loss(left: torch.Tensor, right: torch.Tensor, labels: torch.Tensor,
                                     scale: torch.Tensor) -> torch.Tensor:
    """InfoNCE over the batch: matching pair i's left item scores every right item of the batch and
    should rank its own right item first (the multiple-negatives ranking loss of bi-encoder
    retrieval). Labelled pairs give about one match in ten; the batch's other right items add
    negatives at no cost. Right items that are the same item as pair i's right item are not
    counted as negatives. Zero when the batch holds no match. (metric_learning's
    ``in_batch_negatives_loss`` is the same InfoNCE over item groups, for batches of single items.)"""
    match = labels == 1
    if not bool(match.any()):
        return left.sum() * 0.0
    scores = scale * left[match].float() @ right.float().T  # [matches, P]
    rows = match.nonzero().squeeze(1)
    same = (right.float()[rows] @ right.float().T) > 1 - 1e-6  # duplicates of the positive (normalised)
    same[torch.arange(len(rows)), rows] = False
    scores = scores.masked_fill(same, float("-inf"))
    return F.cross_entropy(scores, rows)


LENGTH_QUANTILE = 0.99  # max_length auto: the joined length this share of train pairs fits in


class PairCrossEncoderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_length: int | Literal["auto"] = Field(
        "auto", description="tokens of the joined pair (the longer title is cut first); auto: the length 99% of the "
                            "train pairs fit in, at most the model's limit (row: pair_max_length)")
    pooling: Literal["encoder", "cls", "mean"] = Field(
        "encoder", description="what the head reads: [CLS], the mean over the pair's tokens, or encoder (the text "
                               "encoder's own pooling option: a sentence-embedding model trained with mean pooling "
                               "has an untrained [CLS])")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the pooled vector before the head")
    pos_weight: float | None = Field(None, gt=0, description="weight of matching pairs in the loss (null: 1)")

    @field_validator("max_length")
    @classmethod
    def _length_in_range(cls, value):
        if value != "auto" and not 8 <= value <= 512:
            raise ValueError("max_length is a number of tokens from 8 to 512, or auto")
        return value


def fitting_length(lengths: list[int], limit: int) -> int:
    """The joined length that LENGTH_QUANTILE of the pairs fit in, capped at the model's limit."""
    if not lengths:
        return min(128, limit)
    return int(min(limit, max(8, np.ceil(np.quantile(np.asarray(lengths), LENGTH_QUANTILE)))))


class PairCrossEncoder(Objective):
    needs = frozenset({"pairs"})
    scores_pairs = True

    def __init__(self, opts: PairCrossEncoderOptions, width: int):
        super().__init__()
        self.opts = opts
        self.dropout = nn.Dropout(opts.dropout)
        self.head = nn.Linear(width, 1)
        self.max_length = None if opts.max_length == "auto" else opts.max_length

    def fit_train_pairs(self, model, left: list[str], right: list[str]) -> dict[str, float | int]:
        """Settle the joined length on the train pairs' titles (max_length auto; a number is kept), and
        report it with the share of train pairs it cuts."""
        tokenizer = model.encoders["text"].tokenizer
        lengths = [len(ids) for ids in tokenizer(left, right, truncation=False)["input_ids"]]
        limit = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512,
                    int(getattr(model.encoders["text"].model.config, "max_position_embeddings", 512)))
        if self.max_length is None:
            self.max_length = fitting_length(lengths, limit)
        cut = sum(n > self.max_length for n in lengths) / len(lengths) if lengths else 0.0
        return {"pair_max_length": self.max_length, "pair_truncated_share": round(cut, 4)}

    def logits(self, model, left: list[str], right: list[str]) -> torch.Tensor:
        """The match logit of each (left title, right title), read together by the text encoder."""
        encoder = model.encoders["text"]
        if self.max_length is None:
            raise BenchError("pair_cross_encoder's max_length auto is settled on the train pairs before training",
                             field="objectives.pair_cross_encoder.options.max_length",
                             fix="give max_length as a number to score pairs without training first")
        tokens = encoder.tokenizer(left, right, truncation="longest_first", max_length=self.max_length,
                                   padding="longest", return_tensors="pt")
        device = self.head.weight.device
        tokens = {k: v.to(device) for k, v in tokens.items()}
        hidden = encoder.model(**tokens).last_hidden_state
        pooling = getattr(encoder.opts, "pooling", "cls") if self.opts.pooling == "encoder" else self.opts.pooling
        if pooling == "mean":
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            pooled = hidden[:, 0]
        return self.head(self.dropout(pooled)).squeeze(-1)

    def loss(self, model, batch: Batch) -> LossOutput:
        require_pairs(batch)
        n = len(batch.pair_labels)
        logits = self.logits(model, batch.titles[:n], batch.titles[n:])
        weight = None if self.opts.pos_weight is None else torch.tensor(self.opts.pos_weight, device=logits.device)
        total = F.binary_cross_entropy_with_logits(logits.float(), batch.pair_labels.float(), pos_weight=weight)
        return LossOutput(total, {"pair_bce": float(total.detach())})

    def pair_scores(self, model, left: list[dict], right: list[dict]) -> torch.Tensor:
        return self.logits(model, [r["title"] or "" for r in left], [r["title"] or "" for r in right])


def build_pair_cross_encoder(opts: PairCrossEncoderOptions, ctx) -> PairCrossEncoder:
    encoder = ctx.encoders.get("text")
    if encoder is None or not hasattr(encoder, "tokenizer") or not hasattr(encoder, "model"):
        raise BenchError("pair_cross_encoder reads both titles through a transformer text encoder; the trial has "
                         f"{type(encoder).__name__ if encoder is not None else 'no text encoder'}",
                         field="trial.encoders.text", fix="use encoders.text: hf_text (e.g. packaged:all-minilm-l6-v2)")
    return PairCrossEncoder(opts, encoder.dim)


def build_pair_contrastive(opts: PairContrastiveOptions, ctx) -> PairContrastive:
    return PairContrastive(opts)


def build_pair_classification(opts: PairClassificationOptions, ctx) -> PairClassification:
    return PairClassification(opts)


SPECS = [
    PluginSpec("objective", "pair_contrastive", "task pairs: contrastive loss on labelled pairs, d^2 for a match, "
               "max(m-d,0)^2 otherwise", build_pair_contrastive, PairContrastiveOptions),
    PluginSpec("objective", "pair_classification", "task pairs: binary cross-entropy on a learned scale * cosine + bias "
               "of each labelled pair", build_pair_classification, PairClassificationOptions),
    PluginSpec("objective", "pair_cross_encoder", "task pairs: cross-encoder, both titles in one transformer "
               "sequence, BCE on a [CLS] head; pairs scored by its logit", build_pair_cross_encoder,
               PairCrossEncoderOptions),
]
