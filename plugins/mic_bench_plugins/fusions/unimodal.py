"""text_only and image_only: one encoder's pooled vector and a head (the unimodal baselines)."""
from __future__ import annotations

from bench.api.interfaces import IMAGE, TEXT, EncoderOutput, Fusion, FusionOutput
from bench.api.registry import PluginSpec

from .heads import HeadOptions, make_head, num_labels


class UnimodalFusion(Fusion):
    mixes_modalities = False
    uses_sequence = False

    def __init__(self, modality: str, dim: int, n_labels: int, opts: HeadOptions):
        super().__init__()
        self.modality = modality
        self.requires = frozenset({modality})
        self.head = make_head(dim, n_labels, opts)

    def forward(self, features: dict[str, EncoderOutput]) -> FusionOutput:
        pooled = features[self.modality].pooled
        logits = self.head(pooled) if self.head is not None else None
        return FusionOutput(embedding=pooled, logits=logits, kinds={self.modality: pooled})


def build_text_only(opts: HeadOptions, ctx) -> UnimodalFusion:
    return UnimodalFusion(TEXT, ctx.encoders[TEXT].dim, num_labels(ctx), opts)


def build_image_only(opts: HeadOptions, ctx) -> UnimodalFusion:
    return UnimodalFusion(IMAGE, ctx.encoders[IMAGE].dim, num_labels(ctx), opts)


SPECS = [
    PluginSpec("fusion", "text_only", "text encoder + classification head (unimodal baseline)",
               build_text_only, HeadOptions),
    PluginSpec("fusion", "image_only", "image encoder + classification head (unimodal baseline)",
               build_image_only, HeadOptions),
]
