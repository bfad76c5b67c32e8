"""Cross-modal gated attention ("Multimodal Item Categorization Fully Based on Transformers").

Text tokens are queries; image tokens are keys and values:
    h'_i = SA(h, h, h)_i + VG_i * SA(h, v, v)_i
    VG_i = sigmoid(W1 h_i + W2 v0 + b)          (elementwise; v0 = the global image vector)
    y    = softmax(W3 sum_i h'_i)               (sum over real text tokens; padding is masked)
SA is multi-head scaled dot-product attention (W_Q, W_K, W_V inside nn.MultiheadAttention).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from bench.api.interfaces import IMAGE, TEXT, EncoderOutput, Fusion, FusionOutput
from bench.api.registry import PluginSpec

from .heads import HeadOptions, make_head, num_labels


class CrossModalOptions(HeadOptions):
    dim: int | None = Field(None, ge=8, description="attention width (default: the text encoder's)")
    heads: int = Field(4, ge=1, description="attention heads; must divide dim")
    attention_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    reduce: Literal["sum", "mean"] = Field("sum", description="how h'_i are pooled over text tokens (paper: sum)")


class CrossModalGatedAttention(Fusion):
    mixes_modalities = True
    requires = frozenset({TEXT, IMAGE})

    def __init__(self, text_dim: int, image_dim: int, n_labels: int, opts: CrossModalOptions):
        super().__init__()
        d = opts.dim or text_dim
        if d % opts.heads:
            from bench.errors import BenchError

            raise BenchError(f"heads ({opts.heads}) must divide the attention width ({d})",
                             field="fusion.options.heads", fix="choose heads that divide dim, e.g. 1, 2, 4")
        self.opts = opts
        self.text_in = nn.Identity() if d == text_dim else nn.Linear(text_dim, d)
        self.image_in = nn.Linear(image_dim, d)
        self.self_attn = nn.MultiheadAttention(d, opts.heads, dropout=opts.attention_dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, opts.heads, dropout=opts.attention_dropout, batch_first=True)
        self.gate_text = nn.Linear(d, d, bias=False)   # W1
        self.gate_image = nn.Linear(d, d, bias=True)   # W2 and b
        self.head = make_head(d, n_labels, opts)       # W3

    def forward(self, features: dict[str, EncoderOutput]) -> FusionOutput:
        text, image = features[TEXT], features[IMAGE]
        h = self.text_in(text.sequence)
        v = self.image_in(image.sequence)
        v0 = self.image_in(image.pooled)
        text_pad = ~text.mask.bool()
        image_pad = ~image.mask.bool()
        sa, _ = self.self_attn(h, h, h, key_padding_mask=text_pad, need_weights=False)
        ca, _ = self.cross_attn(h, v, v, key_padding_mask=image_pad, need_weights=False)
        gate = torch.sigmoid(self.gate_text(h) + self.gate_image(v0).unsqueeze(1))
        fused = sa + gate * ca
        keep = text.mask.unsqueeze(-1).to(fused.dtype)
        pooled = (fused * keep).sum(1)
        if self.opts.reduce == "mean":
            pooled = pooled / keep.sum(1).clamp(min=1.0)
        logits = self.head(pooled) if self.head is not None else None
        return FusionOutput(embedding=pooled, logits=logits, kinds={TEXT: text.pooled, IMAGE: image.pooled, "multimodal": pooled})


def build(opts: CrossModalOptions, ctx) -> CrossModalGatedAttention:
    return CrossModalGatedAttention(ctx.encoders[TEXT].dim, ctx.encoders[IMAGE].dim, num_labels(ctx), opts)


SPECS = [PluginSpec("fusion", "cross_modal_gated_attention",
                    "text tokens attend to image tokens; gated by the global image vector", build, CrossModalOptions)]
