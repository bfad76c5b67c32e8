"""Self-supervised contrastive objectives that adapt the text encoder before fine-tuning.

Both read the encoders directly (not the fusion), so they run on unlabeled data and leave the
classification head untouched; the fine-tuning stage that follows trains the head.

- ``simcse``: two dropout views of each title are a positive pair (text only).
- ``convirt``: a title and its own image are a positive pair (text <-> image).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from bench.errors import BenchError
from bench.api.interfaces import IMAGE, TEXT, Batch, EncoderOutput, LossOutput, Objective
from bench.api.registry import PluginSpec

Pooling = Literal["encoder", "cls", "mean"]


def pool(output: EncoderOutput, how: str) -> Tensor:
    """The encoder's own pooled vector, the first token, or the mean of the real tokens."""
    if how == "encoder":
        return output.pooled
    if how == "cls":
        return output.sequence[:, 0]
    mask = output.mask.unsqueeze(-1).to(output.sequence.dtype)
    return (output.sequence * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def info_nce(queries: Tensor, keys: Tensor, temperature: float) -> Tensor:
    """Per-row InfoNCE: -log softmax over keys of cos(q_i, k_j) / tau at j = i. Shape [B]."""
    logits = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device), reduction="none")


def simcse_loss(view1: Tensor, view2: Tensor, temperature: float) -> Tensor:
    """Mean over i of -log( exp(sim(t_i, t_i+)/tau) / sum_j exp(sim(t_i, t_j+)/tau) )."""
    return info_nce(view1, view2, temperature).mean()


def convirt_loss(text: Tensor, image: Tensor, temperature: float, alpha: float) -> Tensor:
    """mean_i( alpha * L_i(t->v) + (1 - alpha) * L_i(v->t) ) on projected vectors."""
    return (alpha * info_nce(text, image, temperature) + (1 - alpha) * info_nce(image, text, temperature)).mean()


def _encoder(model: nn.Module, modality: str, objective: str) -> nn.Module:
    if modality not in model.encoders:
        raise BenchError(f"objective '{objective}' needs a {modality} encoder; the trial has "
                         f"{', '.join(model.encoders) or 'none'}", field=f"trial.encoders.{modality}",
                         fix=f"add encoders.{modality} to the trial")
    return model.encoders[modality]


class SimCSEOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.05, gt=0, description="tau of the InfoNCE softmax")
    pooling: Pooling = Field("encoder", description="encoder's pooled vector (what the classifier reads), cls or mean")


class SimCSE(Objective):
    """Unsupervised SimCSE (Gao et al., 2021) on titles.

    Each title is encoded twice with the encoder in train mode, so the two passes draw
    different dropout masks: t_i and t_i+. With cosine similarity sim and temperature tau,

        L_i = -log( exp(sim(t_i, t_i+)/tau) / sum_j exp(sim(t_i, t_j+)/tau) ),  L = mean_i L_i

    This is the standard SimCSE / InfoNCE form: the denominator runs over the second views of
    every title in the batch, the positive included, so L_i is the cross-entropy of picking
    t_i+ among the in-batch candidates. METHODS.md writes the denominator as
    sum_{j != i} exp(sim(t_i, t_j)/tau); without the positive that is no longer a
    log-probability (it goes negative and its gradient never saturates), so it is not used.
    """

    needs = frozenset({TEXT})

    def __init__(self, opts: SimCSEOptions):
        super().__init__()
        self.opts = opts

    def loss(self, model, batch: Batch) -> LossOutput:
        encoder = _encoder(model, TEXT, "simcse")
        if getattr(encoder, "frozen", False):
            raise BenchError("simcse trains the text encoder, but it is frozen", field="trial.encoders.text.options.freeze",
                             fix="set encoders.text.options.freeze to none (or last_n)")
        inputs = batch.inputs[TEXT]
        view1 = pool(encoder(inputs), self.opts.pooling)
        view2 = pool(encoder(inputs), self.opts.pooling)
        total = simcse_loss(view1, view2, self.opts.temperature)
        return LossOutput(total, {"simcse": float(total.detach())})


class ConVIRTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.1, gt=0, description="tau of both InfoNCE directions")
    alpha: float = Field(0.75, ge=0, le=1, description="weight of the text->image direction")
    projection_dim: int = Field(768, ge=8, description="width of the projection MLPs g_t, g_v (768 in the paper)")
    pooling: Pooling = Field("mean", description="how each encoder's sequence becomes one vector (mean in the paper)")


def projection(in_dim: int, dim: int) -> nn.Module:
    """g: one hidden layer with ReLU, as in ConVIRT."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(), nn.Linear(dim, dim))


class ConVIRT(Objective):
    """ConVIRT (Zhang et al., 2020): contrast each title with its own image.

    u_i = g_t(mean-pooled text output), v_i = g_v(mean-pooled image output), sim = cosine:

        L_i(t->v) = -log( exp(sim(u_i, v_i)/tau) / sum_k exp(sim(u_i, v_k)/tau) )
        L_i(v->t) = -log( exp(sim(v_i, u_i)/tau) / sum_k exp(sim(v_i, u_k)/tau) )
        L = mean_i( alpha * L_i(t->v) + (1 - alpha) * L_i(v->t) ),  tau = 0.1, alpha = 0.75

    alpha weights the text-anchored direction (the ConVIRT paper puts its 0.75 on the
    image-anchored one; alpha: 0.25 gives that). A frozen image encoder runs without
    gradients; its projection g_v still trains.
    """

    needs = frozenset({TEXT, IMAGE})

    def __init__(self, opts: ConVIRTOptions, text_dim: int, image_dim: int):
        super().__init__()
        self.opts = opts
        self.text_projection = projection(text_dim, opts.projection_dim)
        self.image_projection = projection(image_dim, opts.projection_dim)

    def loss(self, model, batch: Batch) -> LossOutput:
        _encoder(model, TEXT, "convirt")
        image_encoder = _encoder(model, IMAGE, "convirt")
        text = self.text_projection(pool(model.encode(batch, [TEXT])[TEXT], self.opts.pooling))
        # model.encode also serves cached features of a frozen image encoder
        with torch.set_grad_enabled(torch.is_grad_enabled() and not getattr(image_encoder, "frozen", False)):
            image_features = pool(model.encode(batch, [IMAGE])[IMAGE], self.opts.pooling)
        image = self.image_projection(image_features)
        total = convirt_loss(text, image, self.opts.temperature, self.opts.alpha)
        return LossOutput(total, {"convirt": float(total.detach())})


def build_simcse(opts: SimCSEOptions, ctx) -> SimCSE:
    return SimCSE(opts)


def build_convirt(opts: ConVIRTOptions, ctx) -> ConVIRT:
    for modality in (TEXT, IMAGE):
        if modality not in ctx.encoders:
            raise BenchError(f"objective 'convirt' needs a {modality} encoder; the trial has "
                             f"{', '.join(ctx.encoders) or 'none'}", field=f"trial.encoders.{modality}",
                             fix=f"add encoders.{modality} (it is used only by this stage when the fusion is text_only)")
    return ConVIRT(opts, ctx.encoders[TEXT].dim, ctx.encoders[IMAGE].dim)


SPECS = [
    PluginSpec("objective", "simcse", "SimCSE: two dropout views of each title as positives, in-batch negatives (text SSL)",
               build_simcse, SimCSEOptions),
    PluginSpec("objective", "convirt", "ConVIRT: title <-> own image InfoNCE both ways through projection MLPs (cross-modal SSL)",
               build_convirt, ConVIRTOptions),
]
