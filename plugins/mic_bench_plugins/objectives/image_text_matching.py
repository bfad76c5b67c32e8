"""Image-text matching (ITM; VT-BERT's VTM): does this title belong to this image?

A share of the listings (half by default) get the title of a random other listing from the
batch, never one of the same product (P x K batches hold several listings per product). A
binary head on the pooled multimodal vector predicts match / mismatch. With the single-stream
encoder that vector is the joint [CLS] output; with two-stream models it is the fusion's
multimodal embedding of the half-mismatched batch. One forward pass serves both halves.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from bench.errors import BenchError
from bench.api.interfaces import IMAGE, JOINT, TEXT, Batch, LossOutput, Objective

from .model_probe import kind_widths

TEXT_KEYS = ("input_ids", "attention_mask", "word_ids", "token_type_ids")


def choose_donors(groups: Tensor, fraction: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """For each row, the row whose title it gets: itself (a match) or, for round(fraction * B)
    random rows, a random other row of a different (or unknown) product."""
    n = len(groups)
    donors = torch.arange(n, device=groups.device)
    n_swap = int(round(fraction * n))
    if n < 2 or n_swap == 0:
        return donors
    rows = torch.randperm(n, generator=generator)[:n_swap].to(groups.device)
    same = (groups[:, None] == groups[None, :]) & (groups[:, None] >= 0)
    allowed = ~same & ~torch.eye(n, dtype=torch.bool, device=groups.device)
    weights = allowed[rows].float().cpu()
    ok = weights.sum(1) > 0
    if bool(ok.any()):
        picked = torch.multinomial(weights[ok], 1, generator=generator).squeeze(1).to(groups.device)
        donors[rows[ok.to(groups.device)]] = picked
    return donors


def swap_titles(batch: Batch, slot: str, donors: Tensor) -> Batch:
    """The batch with row i's title inputs taken from row donors[i] (images stay in place)."""
    inputs = batch.inputs[slot]
    keys = list(inputs) if slot == TEXT else [k for k in TEXT_KEYS if k in inputs]
    swapped = {**inputs, **{k: inputs[k][donors] for k in keys}}
    return Batch(batch.item_ids, {**batch.inputs, slot: swapped}, batch.labels, batch.groups, batch.titles)


class ITMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mismatch_fraction: float = Field(0.5, gt=0, lt=1, description="share of listings that get another title")


class ImageTextMatching(Objective):
    scores_title_image_pairs = True
    def __init__(self, name: str, opts: ITMOptions, slot: str, width: int):
        super().__init__()
        self.name, self.opts, self.slot = name, opts, slot
        self.head = nn.Linear(width, 2)

    def loss(self, model, batch: Batch) -> LossOutput:
        donors = choose_donors(batch.groups, self.opts.mismatch_fraction)
        out = model(swap_titles(batch, self.slot, donors))
        logits = self.head(out.kinds.get("multimodal", out.embedding))
        target = (donors == torch.arange(len(donors), device=donors.device)).long()
        total = F.cross_entropy(logits, target)
        accuracy = float((logits.argmax(1) == target).float().mean())
        return LossOutput(total, {self.name: float(total.detach()), f"{self.name}_accuracy": accuracy})


def build_itm(opts: ITMOptions, ctx, name: str = "itm") -> ImageTextMatching:
    requires = set(ctx.fusion.requires)
    if JOINT in requires:
        slot = JOINT
    elif {TEXT, IMAGE} <= requires:
        slot = TEXT
    else:
        raise BenchError(f"objective '{name}' pairs titles with images, but the fusion reads only "
                         f"{', '.join(sorted(requires))}", field="trial.fusion.name",
                         fix="use a fusion that mixes title and image: cross_modal_gated_attention, or "
                             "single_stream_head with encoders.joint: single_stream")
    widths = kind_widths(ctx.encoders, ctx.fusion)
    return ImageTextMatching(name, opts, slot, widths.get("multimodal", widths["embedding"]))
