"""FiLM fusion for mic-bench: y = head(t * (1 + gamma(v)) + beta(v)).

The whole plugin: an options model, a torch module, a factory and one hook.
"""
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from bench import hookimpl
from bench.api.interfaces import IMAGE, TEXT, Fusion, FusionOutput
from bench.api.registry import PluginSpec


class FilmOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class FilmFusion(Fusion):
    requires = frozenset({TEXT, IMAGE})

    def __init__(self, text_dim: int, image_dim: int, num_labels: int, opts: FilmOptions):
        super().__init__()
        self.gamma = nn.Linear(image_dim, text_dim)
        self.beta = nn.Linear(image_dim, text_dim)
        self.head = nn.Sequential(nn.Dropout(opts.dropout), nn.Linear(text_dim, num_labels))

    def forward(self, features):
        t, v = features[TEXT].pooled, features[IMAGE].pooled
        joint = t * (1 + self.gamma(v)) + self.beta(v)
        logits = self.head(joint)
        return FusionOutput(embedding=joint, logits=logits, kinds={TEXT: t, IMAGE: v, "multimodal": joint})


def build(opts: FilmOptions, ctx) -> FilmFusion:
    return FilmFusion(ctx.encoders[TEXT].dim, ctx.encoders[IMAGE].dim, ctx.task.num_labels, opts)


@hookimpl
def bench_fusions():
    return [PluginSpec("fusion", "film", "FiLM: the image vector scales and shifts the text vector", build, FilmOptions)]
