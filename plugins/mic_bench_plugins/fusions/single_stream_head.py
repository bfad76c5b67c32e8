"""single_stream_head: the joint encoder's [CLS] as the embedding, an optional label head on it.

The joint encoder already mixed the modalities, so the fusion only reads out: embedding =
[CLS] output, logits = head([CLS]) for classification, and the per-kind embeddings the
encoder offers in ``extras`` (text mean, image mean) as FusionOutput.kinds, so omni losses
and max-of-kinds retrieval work unchanged. Features of a frozen joint encoder served from the
feature cache carry only the pooled vector, so their kinds are the multimodal one alone.
"""
from __future__ import annotations

from bench.api.interfaces import IMAGE, JOINT, TEXT, EncoderOutput, Fusion, FusionOutput
from bench.api.registry import PluginSpec

from .heads import HeadOptions, make_head, num_labels


class SingleStreamHead(Fusion):
    mixes_modalities = True
    requires = frozenset({JOINT})
    uses_sequence = False  # reads pooled and extras only

    def __init__(self, dim: int, n_labels: int, opts: HeadOptions):
        super().__init__()
        self.head = make_head(dim, n_labels, opts)

    def forward(self, features: dict[str, EncoderOutput]) -> FusionOutput:
        joint = features[JOINT]
        pooled = joint.pooled
        kinds = {k: joint.extras[k] for k in (TEXT, IMAGE) if k in joint.extras}
        kinds["multimodal"] = pooled
        logits = self.head(pooled) if self.head is not None else None
        return FusionOutput(embedding=pooled, logits=logits, kinds=kinds)


def build(opts: HeadOptions, ctx) -> SingleStreamHead:
    return SingleStreamHead(ctx.encoders[JOINT].dim, num_labels(ctx), opts)


SPECS = [PluginSpec("fusion", "single_stream_head",
                    "joint encoder's [CLS] as the embedding (+ label head); text/image kinds from its extras",
                    build, HeadOptions)]
