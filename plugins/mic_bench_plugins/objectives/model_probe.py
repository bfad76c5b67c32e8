"""Learn the shapes a model produces before training starts.

Objectives that own layers sized by the fusion's outputs (projections of embedding kinds, an
ITM head) must create them before the optimizer is built, and the widths are only known by
running the model. One forward pass of two throwaway listings (a short title, a grey image
file) answers it for any encoder and fusion, with real preprocessing.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from PIL import Image

from bench.api.interfaces import EncoderOutput, FusionOutput


def _probe_records(folder: Path) -> list[dict]:
    image = folder / "probe.png"
    Image.new("RGB", (32, 32), (128, 128, 128)).save(image)
    return [{"item_id": f"probe-{i}", "title": "probe listing title", "image": str(image), "label": -1, "group": -1}
            for i in range(2)]


@torch.no_grad()
def probe_fusion(encoders: dict, fusion) -> FusionOutput:
    """Run encoders + fusion once in eval mode (training flags restored afterwards)."""
    modules = [*encoders.values(), fusion]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            records = _probe_records(Path(tmp))
            features: dict[str, EncoderOutput] = {}
            for slot in fusion.requires:
                encoder = encoders[slot]
                device = next(iter(encoder.parameters()), torch.empty(0)).device  # fitted encoders: none
                inputs = {k: v.to(device) for k, v in encoder.preprocess(records).items()}
                features[slot] = encoder(inputs)
            return fusion(features)
    finally:
        for m, flag in zip(modules, was_training):
            m.train(flag)


def kind_widths(encoders: dict, fusion) -> dict[str, int]:
    """Width of every embedding kind the fusion returns, plus "embedding" for FusionOutput.embedding."""
    out = probe_fusion(encoders, fusion)
    return {"embedding": int(out.embedding.shape[-1]), **{k: int(v.shape[-1]) for k, v in out.kinds.items()}}
