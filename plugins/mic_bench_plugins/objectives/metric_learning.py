"""Metric-learning objectives for product matching: listings of one product (group) close,
other products at least a margin away.

Distances are Euclidean, on L2-normalised embeddings by default (then d is in [0, 2] and the
margin m = 1 sits in the middle). Every loss compares anchors x_i with candidates y_j of the
same batch; items of an unknown group (-1) are only ever negatives.

- ``contrastive``: d^2 for same-group pairs, max(m - d, 0)^2 otherwise. Positive and negative
  pairs are averaged separately (the many in-batch negatives would otherwise drown the few
  positives). mining "hard" keeps, per anchor, only the farthest positive and the closest
  negative; "all" uses every pair.
- ``triplet``: max(m + d(a, p) - d(a, n), 0); mining "hard" is batch-hard (hardest positive and
  hardest negative per anchor, Hermans et al. 2017), "all" averages every valid triplet.
- ``in_batch_negatives``: InfoNCE over the batch (MultipleNegativesRankingLoss in
  sentence-transformers, with every listing of the anchor's product a positive): per anchor,
  -log(sum over positives exp(s cos) / sum over every other item exp(s cos)), scale s = 20. Every
  other product in the batch is a negative, none is mined away, and the cosine is what retrieval
  ranks by; it is the loss sentence encoders such as MiniLM were trained with.
- ``omni``: the triplet (or contrastive) loss for pairs of embedding kinds
  {text, image, multimodal}: anchors of one kind against positives / negatives of another. When
  the kinds differ, an item's own other-kind embedding is a positive too. Kinds narrower or
  wider than the common width are mapped to it by linear projections owned by the objective.
The batches come from the P x K sampler (P groups x K listings), so every anchor has positives.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from bench.errors import BenchError
from bench.api.interfaces import Batch, LossOutput, Objective
from bench.api.registry import PluginSpec

from .model_probe import kind_widths

KINDS = ("text", "image", "multimodal")
Kind = Literal["text", "image", "multimodal"]


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """[B, B] squared Euclidean distances between rows of x and rows of y."""
    d2 = (x * x).sum(1, keepdim=True) + (y * y).sum(1).unsqueeze(0) - 2.0 * x @ y.T
    return d2.clamp(min=0.0)


def pair_masks(groups: Tensor, cross_kind: bool = False) -> tuple[Tensor, Tensor]:
    """(positive, negative) masks [B, B] for anchors (rows) against candidates (columns).

    Same kind: an item is not paired with itself. Across kinds, (i, i) is a positive: the
    title and the image of one listing show the same product.
    """
    known = groups >= 0
    same = (groups[:, None] == groups[None, :]) & known[:, None] & known[None, :]
    eye = torch.eye(len(groups), dtype=torch.bool, device=groups.device)
    if cross_kind:
        positive = same | eye
        return positive, ~positive
    return same & ~eye, ~same & ~eye


def _zero(*tensors: Tensor) -> Tensor:
    """A zero that stays attached to the graph (backward still runs on batches without pairs)."""
    return sum(t.sum() * 0.0 for t in tensors)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return values[mask].mean() if bool(mask.any()) else _zero(values)


def hardest(d: Tensor, positive: Tensor, negative: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per anchor: index of the farthest positive and of the closest negative, and whether each exists."""
    far = d.masked_fill(~positive, float("-inf")).argmax(1)
    near = d.masked_fill(~negative, float("inf")).argmin(1)
    return far, near, positive.any(1), negative.any(1)


def contrastive_loss(x: Tensor, y: Tensor, groups: Tensor, margin: float = 1.0, mining: str = "hard",
                     cross_kind: bool = False) -> Tensor:
    d2 = squared_distances(x, y)
    d = d2.clamp(min=1e-12).sqrt()
    positive, negative = pair_masks(groups, cross_kind)
    pos_terms, neg_terms = d2, F.relu(margin - d) ** 2
    if mining == "all":
        return _masked_mean(pos_terms, positive) + _masked_mean(neg_terms, negative)
    far, near, has_pos, has_neg = hardest(d, positive, negative)
    rows = torch.arange(len(groups), device=x.device)
    return _masked_mean(pos_terms[rows, far], has_pos) + _masked_mean(neg_terms[rows, near], has_neg)


def triplet_loss(x: Tensor, y: Tensor, groups: Tensor, margin: float = 1.0, mining: str = "hard",
                 cross_kind: bool = False) -> Tensor:
    d = squared_distances(x, y).clamp(min=1e-12).sqrt()
    positive, negative = pair_masks(groups, cross_kind)
    if mining == "all":
        terms = F.relu(margin + d.unsqueeze(2) - d.unsqueeze(1))  # [a, p, n]
        valid = positive.unsqueeze(2) & negative.unsqueeze(1)
        return _masked_mean(terms, valid)
    far, near, has_pos, has_neg = hardest(d, positive, negative)
    rows = torch.arange(len(groups), device=x.device)
    terms = F.relu(margin + d[rows, far] - d[rows, near])
    return _masked_mean(terms, has_pos & has_neg)


def in_batch_negatives_loss(x: Tensor, y: Tensor, groups: Tensor, scale: float = 20.0) -> Tensor:
    """Multi-positive InfoNCE on cosine similarities (x, y unit length); anchors without a positive
    in the batch are left out."""
    positive, _ = pair_masks(groups)
    eye = torch.eye(len(groups), dtype=torch.bool, device=x.device)
    logits = (scale * x @ y.T).masked_fill(eye, float("-inf"))
    has_pos = positive.any(1)
    if not bool(has_pos.any()):
        return _zero(x, y)
    everything = torch.logsumexp(logits[has_pos], dim=1)
    positives = torch.logsumexp(logits[has_pos].masked_fill(~positive[has_pos], float("-inf")), dim=1)
    return (everything - positives).mean()


LOSSES = {"contrastive": contrastive_loss, "triplet": triplet_loss}


class MetricOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    margin: float = Field(1.0, gt=0, description="margin m")
    normalize: bool = Field(True, description="L2-normalise embeddings before measuring distances")
    mining: Literal["hard", "all"] = Field("hard", description="hardest positive/negative per anchor, or every pair")


class EmbeddingLoss(Objective):
    """contrastive or triplet loss on FusionOutput.embedding."""

    needs = frozenset({"groups"})
    sampler = "pk"

    def __init__(self, name: str, opts: MetricOptions):
        super().__init__()
        self.name, self.opts = name, opts

    def loss(self, model, batch: Batch) -> LossOutput:
        emb = model(batch).embedding
        if self.opts.normalize:
            emb = F.normalize(emb, dim=-1)
        total = LOSSES[self.name](emb, emb, batch.groups, self.opts.margin, self.opts.mining)
        return LossOutput(total, {self.name: float(total.detach())})


class OmniOptions(MetricOptions):
    loss: Literal["triplet", "contrastive"] = Field("triplet", description="the loss applied to each pair of kinds")
    kinds: Literal["multimodal_only", "all9"] | list[tuple[Kind, Kind]] = Field(
        "multimodal_only", description="multimodal_only, all9, or a list of [anchor kind, candidate kind] pairs")
    dim: int | None = Field(None, ge=2, description="common width of the kinds (default: the multimodal kind's)")

    @field_validator("kinds")
    @classmethod
    def _not_empty(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("give at least one [anchor kind, candidate kind] pair")
        return value

    def pairs(self) -> list[tuple[str, str]]:
        if self.kinds == "multimodal_only":
            return [("multimodal", "multimodal")]
        if self.kinds == "all9":
            return [(a, b) for a in KINDS for b in KINDS]
        return [tuple(p) for p in self.kinds]


class Omni(Objective):
    """The chosen loss summed over kind pairs, divided by the number of pairs (a mean, so the
    loss scale and a good learning rate do not depend on how many pairs are used)."""

    needs = frozenset({"groups"})
    sampler = "pk"

    def __init__(self, opts: OmniOptions, widths: dict[str, int]):
        super().__init__()
        self.opts = opts
        self.pairs = opts.pairs()
        used = sorted({k for pair in self.pairs for k in pair})
        missing = [k for k in used if k not in widths]
        if missing:
            offered = ", ".join(k for k in widths if k in KINDS) or "none"
            raise BenchError(f"omni uses the {', '.join(missing)} embedding kind, but the fusion offers only: {offered}",
                             field="objectives.omni.options.kinds",
                             fix="use kinds the fusion returns, or a fusion with text, image and multimodal kinds "
                                 "(single_stream_head, late, shallow, cross_modal_gated_attention)")
        common = opts.dim or widths.get("multimodal") or max(widths[k] for k in used)
        self.projections = nn.ModuleDict({k: nn.Linear(widths[k], common) for k in used if widths[k] != common})

    def embed(self, kinds: dict[str, Tensor], kind: str) -> Tensor:
        v = kinds[kind]
        if kind in self.projections:
            v = self.projections[kind](v)
        return F.normalize(v, dim=-1) if self.opts.normalize else v

    def loss(self, model, batch: Batch) -> LossOutput:
        kinds = model(batch).kinds
        vectors = {k: self.embed(kinds, k) for k in {k for pair in self.pairs for k in pair}}
        parts, terms = {}, []
        for a, b in self.pairs:
            term = LOSSES[self.opts.loss](vectors[a], vectors[b], batch.groups, self.opts.margin, self.opts.mining,
                                          cross_kind=a != b)
            terms.append(term)
            parts[f"omni_{a}_{b}"] = float(term.detach())
        total = torch.stack(terms).mean()
        parts["omni"] = float(total.detach())
        return LossOutput(total, parts)


class InBatchNegativesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = Field(20.0, gt=0, le=1000, description="s: the inverse temperature on cosine similarities "
                                                          "(sentence-transformers' default 20)")


class InBatchNegatives(Objective):
    """InfoNCE over the batch on the unit-length FusionOutput.embedding."""

    needs = frozenset({"groups"})
    sampler = "pk"

    def __init__(self, opts: InBatchNegativesOptions):
        super().__init__()
        self.opts = opts

    def loss(self, model, batch: Batch) -> LossOutput:
        emb = F.normalize(model(batch).embedding, dim=-1)
        total = in_batch_negatives_loss(emb, emb, batch.groups, self.opts.scale)
        return LossOutput(total, {"in_batch_negatives": float(total.detach())})


def build_in_batch_negatives(opts: InBatchNegativesOptions, ctx) -> InBatchNegatives:
    return InBatchNegatives(opts)


def build_contrastive(opts: MetricOptions, ctx) -> EmbeddingLoss:
    return EmbeddingLoss("contrastive", opts)


def build_triplet(opts: MetricOptions, ctx) -> EmbeddingLoss:
    return EmbeddingLoss("triplet", opts)


def build_omni(opts: OmniOptions, ctx) -> Omni:
    return Omni(opts, kind_widths(ctx.encoders, ctx.fusion))


SPECS = [
    PluginSpec("objective", "contrastive", "pair contrastive loss on the embedding: d^2 same group, max(m-d,0)^2 "
               "otherwise; hard-pair mining", build_contrastive, MetricOptions),
    PluginSpec("objective", "triplet", "batch-hard triplet loss on the embedding: max(m + d(a,p) - d(a,n), 0)",
               build_triplet, MetricOptions),
    PluginSpec("objective", "in_batch_negatives", "InfoNCE over the batch (MultipleNegativesRanking): "
               "-log sum_pos exp(s cos) / sum_others exp(s cos), every other product a negative",
               build_in_batch_negatives, InBatchNegativesOptions),
    PluginSpec("objective", "omni", "triplet/contrastive loss over pairs of embedding kinds {text, image, "
               "multimodal} (multimodal_only, all9 or listed pairs)", build_omni, OmniOptions),
]
