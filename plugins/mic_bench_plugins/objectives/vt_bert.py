"""VT-BERT pretraining objectives for the single-stream encoder
("How to Attend to Different Modalities Equally").

- ``vtm``: visual-text matching, the same loss as ``itm``.
- ``mrfr``: masked region (patch) feature regression. 15% of the patches of each image are
  swapped for a learned [MASK] patch; each masked patch's output goes through a small head and
  is regressed onto the patch's own pixels (mean squared error, L2). Pixels rather than the
  patch embeddings are the target, so the encoder cannot satisfy the loss by collapsing them.
- ``gmlm`` / ``gmrfr``: global masked token / patch prediction. The same masking, but each
  masked item is predicted from the [CLS] output plus the item's position embedding, through a
  2-layer GELU + LayerNorm network, so the global vector must carry every part of the input.
"""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from bench.errors import BenchError
from bench.api.interfaces import JOINT, Batch, LossOutput, Objective
from bench.api.registry import PluginSpec

from .image_text_matching import ITMOptions, ImageTextMatching, build_itm
from .masked_language_model import MaskingOptions, masked_titles, text_encoder
from .masking import IGNORE, random_patch_mask
from .prediction_heads import VocabDecoder, global_predictor, transform


def joint_encoder(ctx, objective: str) -> nn.Module:
    encoder = ctx.encoders.get(JOINT)
    if encoder is None or not hasattr(encoder, "patchify"):
        raise BenchError(f"objective '{objective}' needs the single_stream encoder (encoders.joint); the trial has "
                         f"{', '.join(ctx.encoders) or 'none'}", field="trial.encoders",
                         fix="add encoders.joint: {name: single_stream} and fusion: single_stream_head")
    return encoder


class PatchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mask_fraction: float = Field(0.15, gt=0, le=1, description="share of the patches of each image that are masked")


class _PatchRegression(Objective):
    """Shared by mrfr and gmrfr: mask patches, run the joint encoder, regress the patch pixels."""

    needs = frozenset({JOINT})

    def __init__(self, name: str, opts: PatchOptions):
        super().__init__()
        self.name, self.opts = name, opts

    def predict(self, encoder, out, mask: Tensor, n_text: int) -> Tensor:
        raise NotImplementedError

    def loss(self, model, batch: Batch) -> LossOutput:
        encoder = model.encoders[JOINT]
        inputs = batch.inputs[JOINT]
        target = encoder.patchify(inputs["pixels"])
        mask = random_patch_mask(target.shape[0], target.shape[1], self.opts.mask_fraction, device=target.device)
        out = encoder({**inputs, "patch_mask": mask})
        prediction = self.predict(encoder, out, mask, inputs["input_ids"].shape[1])
        total = F.mse_loss(prediction, target[mask].to(prediction.dtype))
        return LossOutput(total, {self.name: float(total.detach())})


class MaskedPatchRegression(_PatchRegression):
    """mrfr: each masked patch from its own output."""

    def __init__(self, opts: PatchOptions, hidden: int, patch_dim: int):
        super().__init__("mrfr", opts)
        self.head = nn.Sequential(transform(hidden), nn.Linear(hidden, patch_dim))

    def predict(self, encoder, out, mask, n_text):
        return self.head(out.sequence[:, n_text:][mask])


class GlobalPatchRegression(_PatchRegression):
    """gmrfr: each masked patch from [CLS] + its patch position embedding."""

    def __init__(self, opts: PatchOptions, hidden: int, patch_dim: int):
        super().__init__("gmrfr", opts)
        self.predictor = global_predictor(hidden)
        self.out = nn.Linear(hidden, patch_dim)

    def predict(self, encoder, out, mask, n_text):
        rows, patches = mask.nonzero(as_tuple=True)
        query = out.pooled[rows] + encoder.image_position_embedding(patches)
        return self.out(self.predictor(query))


class GlobalMaskedLanguageModel(Objective):
    """gmlm: each masked title token from [CLS] + its text position embedding."""

    needs = frozenset({JOINT})

    def __init__(self, opts: MaskingOptions, encoder: nn.Module):
        super().__init__()
        self.opts = opts
        self.predictor = global_predictor(encoder.dim)
        self.decoder = VocabDecoder(encoder.dim, encoder, opts.tie_weights)

    def loss(self, model, batch: Batch) -> LossOutput:
        encoder = model.encoders[JOINT]
        inputs = batch.inputs[JOINT]
        masked, labels = masked_titles(encoder, inputs, self.opts, self.decoder.vocab_size)
        out = encoder({**inputs, "input_ids": masked})
        rows, positions = (labels != IGNORE).nonzero(as_tuple=True)
        if rows.numel() == 0:
            total = out.pooled.sum() * 0.0
        else:
            query = out.pooled[rows] + encoder.text_position_embedding(positions)
            total = F.cross_entropy(self.decoder(self.predictor(query), encoder), labels[rows, positions])
        return LossOutput(total, {"gmlm": float(total.detach())})


def _patch_dim(encoder) -> int:
    return 3 * encoder.opts.patch_size ** 2


def build_vtm(opts: ITMOptions, ctx) -> ImageTextMatching:
    joint_encoder(ctx, "vtm")
    return build_itm(opts, ctx, name="vtm")


def build_mrfr(opts: PatchOptions, ctx) -> MaskedPatchRegression:
    encoder = joint_encoder(ctx, "mrfr")
    return MaskedPatchRegression(opts, encoder.dim, _patch_dim(encoder))


def build_gmrfr(opts: PatchOptions, ctx) -> GlobalPatchRegression:
    encoder = joint_encoder(ctx, "gmrfr")
    return GlobalPatchRegression(opts, encoder.dim, _patch_dim(encoder))


def build_gmlm(opts: MaskingOptions, ctx) -> GlobalMaskedLanguageModel:
    joint_encoder(ctx, "gmlm")
    _, encoder = text_encoder(ctx.encoders, "gmlm", joint_only=True)
    return GlobalMaskedLanguageModel(opts, encoder)


SPECS = [
    PluginSpec("objective", "vtm", "VT-BERT visual-text matching (= itm) on the single-stream [CLS]",
               build_vtm, ITMOptions),
    PluginSpec("objective", "mrfr", "VT-BERT masked patch regression: masked patches' pixels from their own outputs (L2)",
               build_mrfr, PatchOptions),
    PluginSpec("objective", "gmlm", "VT-BERT global MLM: masked tokens from [CLS] + position embedding (2-layer GELU+LN)",
               build_gmlm, MaskingOptions),
    PluginSpec("objective", "gmrfr", "VT-BERT global patch regression: masked patches from [CLS] + position embedding",
               build_gmrfr, PatchOptions),
]
