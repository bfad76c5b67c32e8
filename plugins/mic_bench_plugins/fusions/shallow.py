"""Early (shallow) fusion: concatenate the pooled vectors [h0; v0] and classify with an MLP."""
from __future__ import annotations

import torch
from pydantic import Field

from bench.api.interfaces import IMAGE, TEXT, EncoderOutput, Fusion, FusionOutput
from bench.api.registry import PluginSpec

from .heads import HeadOptions, make_head, num_labels


class ShallowOptions(HeadOptions):
    hidden: int = Field(256, ge=0, description="hidden width of the MLP head")


class ShallowFusion(Fusion):
    mixes_modalities = False
    uses_sequence = False
    requires = frozenset({TEXT, IMAGE})

    def __init__(self, text_dim: int, image_dim: int, n_labels: int, opts: ShallowOptions):
        super().__init__()
        self.head = make_head(text_dim + image_dim, n_labels, opts)

    def forward(self, features: dict[str, EncoderOutput]) -> FusionOutput:
        t, v = features[TEXT].pooled, features[IMAGE].pooled
        joint = torch.cat([t, v], dim=-1)
        logits = self.head(joint) if self.head is not None else None
        return FusionOutput(embedding=joint, logits=logits, kinds={TEXT: t, IMAGE: v, "multimodal": joint})


def build(opts: ShallowOptions, ctx) -> ShallowFusion:
    return ShallowFusion(ctx.encoders[TEXT].dim, ctx.encoders[IMAGE].dim, num_labels(ctx), opts)


SPECS = [PluginSpec("fusion", "shallow", "early fusion: concatenated pooled vectors [h0; v0] -> MLP head",
                    build, ShallowOptions)]
