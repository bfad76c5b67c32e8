"""Image encoders from timm: ViTs give their token sequence, CNNs their flattened feature map.

Weights: random init, the hub (``pretrained: true``, needs a network), a local state-dict file
(.safetensors, or .pth read with weights_only=True), or a package that ships them
(``package:efficientnet-lite0`` / ``package:efficientnet-lite2``).
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from bench.errors import BenchError
from bench.api.interfaces import IMAGE, Encoder, EncoderOutput
from bench.api.registry import PluginSpec

from .freezing import FreezePolicy, apply_freeze
from .image_preprocess import ImagePreprocess
from .packaged_weights import load_state_dict_file, packaged_weights


class TimmImageOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field("vit_tiny_patch16_224", description="timm model name")
    pretrained: bool | str = Field(False, description="false, true (hub), a state-dict path, or 'package:efficientnet-lite0'")
    img_size: int | None = Field(None, ge=16, le=1024, description="input size (default: the model's)")
    crop_pct: float | None = Field(None, gt=0.0, le=1.0, description="centre-crop share after resizing the shorter "
                                                                     "side to img_size / crop_pct (default: the model's)")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to timm.create_model")
    pooling: Literal["token", "mean"] = Field("token", description="class token (ViT) or mean of the sequence")
    freeze: FreezePolicy = "none"
    train_last_n: int = Field(1, ge=0)
    missing_images: Literal["error", "blank", "skip"] = Field(
        "blank", description="items the catalogue left without an image (its missing_images: blank): a counted grey "
                             "placeholder (blank; skip acts the same here) or an error")


class TimmImageEncoder(Encoder):
    modality = IMAGE

    def __init__(self, opts: TimmImageOptions, seed: int = 0):
        super().__init__()
        import timm

        self.opts = opts
        kwargs = dict(opts.model_kwargs)
        if opts.img_size and ("vit" in opts.model or "deit" in opts.model):
            kwargs.setdefault("img_size", opts.img_size)
        torch.manual_seed(seed)
        try:
            self.model = timm.create_model(opts.model, pretrained=opts.pretrained is True, num_classes=0, **kwargs)
        except RuntimeError as exc:
            raise BenchError(f"cannot create timm model '{opts.model}': {exc}", field="encoders.image.options.model",
                             fix="use a name from timm.list_models(), e.g. vit_tiny_patch16_224, resnet50, tf_efficientnet_lite0") from None
        if isinstance(opts.pretrained, str):
            self._load_weights(opts.pretrained)
        extra = {"crop_pct": opts.crop_pct} if opts.crop_pct else {}
        self.images = ImagePreprocess.for_timm_model(self.model, opts.img_size, missing_images=opts.missing_images,
                                                     **extra)
        self.input_size = self.images.size
        self.mean, self.std = self.images.mean, self.images.std
        self.dim = int(self.model.num_features)
        self.is_vit = hasattr(self.model, "blocks") and hasattr(self.model, "num_prefix_tokens") and hasattr(self.model, "patch_embed")
        blocks = list(getattr(self.model, "blocks", []) or getattr(self.model, "stages", []) or
                      [getattr(self.model, f"layer{i}") for i in range(1, 5) if hasattr(self.model, f"layer{i}")])
        self.frozen = apply_freeze(self.model, blocks, opts.freeze, opts.train_last_n)

    def _load_weights(self, source: str) -> None:
        state = packaged_weights(source, self.model) if source.startswith("package:") else load_state_dict_file(source)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(("classifier", "head", "fc."))]
        if missing or unexpected:
            raise BenchError(f"weights '{source}' do not fit {self.opts.model}: missing {missing[:3]}, unexpected {unexpected[:3]}",
                             field="encoders.image.options.pretrained", fix="give weights saved from the same timm architecture")

    def preprocess(self, records: list[dict[str, Any]]) -> dict[str, Tensor]:
        """timm's eval transform for this model (shorter side resized, centre crop, normalise)."""
        return {"pixels": self.images.pixels(records)}

    def preprocess_fingerprint(self) -> dict[str, Any]:
        return self.images.fingerprint()

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        feats = self.model.forward_features(inputs["pixels"])
        if feats.dim() == 4:  # CNN feature map [B, C, H, W] -> sequence [B, HW, C]
            seq = feats.flatten(2).transpose(1, 2)
            pooled = seq.mean(1)
        else:
            seq = feats
            n_prefix = getattr(self.model, "num_prefix_tokens", 0)
            use_token = self.opts.pooling == "token" and n_prefix > 0
            pooled = seq[:, 0] if use_token else seq[:, n_prefix:].mean(1)
        mask = torch.ones(seq.shape[:2], dtype=torch.bool, device=seq.device)
        return EncoderOutput(sequence=seq, mask=mask, pooled=pooled)


def build(opts: TimmImageOptions, ctx) -> TimmImageEncoder:
    return TimmImageEncoder(opts, seed=getattr(ctx, "seed", 0))


SPECS = [PluginSpec("encoder", "timm_image", "timm image model: ViT tokens or CNN feature map as a sequence + pooled vector",
                    build, TimmImageOptions)]
