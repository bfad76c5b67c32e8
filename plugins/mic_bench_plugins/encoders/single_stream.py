"""Single-stream (ViLT-style) encoder: title tokens and image patches in one transformer.

Text tokens go through a BERT-family embedding layer (word + position), image patches through
a linear patch projection plus learned patch positions; a modality-type embedding (0 = text,
1 = image) is added to each, and the joined sequence runs through the BERT layers, so every
layer attends across both modalities.

Sequence layout (objectives rely on it): the text positions first, in ``input_ids`` order
(position 0 = [CLS]), then the image patches in row-major order.
pooled = [CLS] output; ``extras``: "text" (mean of real text positions), "image" (mean of the
patches) and "joint" ([CLS]), so a fusion can offer per-kind embeddings for omni losses and
max-of-kinds retrieval.

``inputs["patch_mask"]`` (bool [B, n_patches], optional) swaps masked patches for a learned
[MASK] patch embedding before the transformer (masked patch regression objectives).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from bench.errors import BenchError
from bench.api.interfaces import JOINT, Encoder, EncoderOutput
from bench.api.registry import PluginSpec

from .freezing import FreezePolicy, apply_freeze
from .image_preprocess import ImagePreprocess
from .hf_text import PACKAGED, _load_tokenizer, resolve_model_path

TEXT_TYPE, IMAGE_TYPE = 0, 1


class SingleStreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field("random", description="BERT-family id or folder, 'packaged:all-minilm-l6-v2', or 'random'")
    tokenizer: str | None = Field(None, description="tokenizer id/folder; default: the model's (the packaged MiniLM's for 'random')")
    max_length: int = Field(32, ge=4, le=512)
    img_size: int = Field(224, ge=16, le=1024)
    patch_size: int = Field(32, ge=2, le=128, description="patch side P; img_size must be a multiple of it")
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    crop_pct: float = Field(1.0, gt=0.0, le=1.0, description="centre-crop share after resizing the shorter side to "
                                                             "img_size / crop_pct (1.0: the largest centred square)")
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    missing_images: Literal["error", "blank", "skip"] = Field(
        "blank", description="items the catalogue left without an image: a counted grey placeholder (blank; skip "
                             "acts the same here) or an error")
    freeze: FreezePolicy = "none"
    train_last_n: int = Field(1, ge=0)
    random_config: dict[str, Any] = Field(
        default_factory=lambda: {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                 "intermediate_size": 128, "max_position_embeddings": 128})


def _load_bert(opts: SingleStreamOptions, vocab_size: int, seed: int) -> nn.Module:
    """A BERT-family model without pooler: pretrained weights or a small random config."""
    from transformers import AutoConfig, AutoModel, BertConfig

    if opts.model == "random":
        torch.manual_seed(seed)
        bert = AutoModel.from_config(BertConfig(vocab_size=vocab_size, **opts.random_config), add_pooling_layer=False)
        return bert
    path = resolve_model_path(opts.model)
    local = Path(path).exists()
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=local)
        bert = AutoModel.from_pretrained(path, config=config, local_files_only=local, add_pooling_layer=False)
    except (OSError, TypeError) as exc:
        raise BenchError(f"cannot load model '{opts.model}': {exc}", field="encoders.joint.options.model",
                         fix="give a BERT-family folder, 'packaged:all-minilm-l6-v2', or 'random'") from None
    embeddings = getattr(bert, "embeddings", None)
    if not (hasattr(embeddings, "word_embeddings") and hasattr(embeddings, "position_embeddings")
            and hasattr(getattr(bert, "encoder", None), "layer")):
        raise BenchError(f"'{opts.model}' is not a BERT-family encoder (no embeddings.word_embeddings / encoder.layer)",
                         field="encoders.joint.options.model",
                         fix="use a BERT, MiniLM or similar checkpoint, or 'random'")
    return bert


class SingleStreamEncoder(Encoder):
    modality = JOINT

    def __init__(self, opts: SingleStreamOptions, seed: int = 0):
        super().__init__()
        if opts.img_size % opts.patch_size:
            raise BenchError(f"img_size {opts.img_size} is not a multiple of patch_size {opts.patch_size}",
                             field="encoders.joint.options.img_size", fix="make img_size a multiple of patch_size")
        self.opts = opts
        self.tokenizer = _load_tokenizer(opts.tokenizer or (PACKAGED if opts.model == "random" else opts.model))
        self.bert = _load_bert(opts, self.tokenizer.vocab_size, seed)
        hidden = self.bert.config.hidden_size
        self.dim = hidden
        self.grid = opts.img_size // opts.patch_size
        self.n_patches = self.grid * self.grid
        torch.manual_seed(seed + 1)
        self.patch_proj = nn.Conv2d(3, hidden, kernel_size=opts.patch_size, stride=opts.patch_size)
        self.image_positions = nn.Parameter(torch.empty(1, self.n_patches, hidden))
        self.mask_patch = nn.Parameter(torch.zeros(1, 1, hidden))
        self.modality_type = nn.Embedding(2, hidden)
        self.image_norm = nn.LayerNorm(hidden, eps=getattr(self.bert.config, "layer_norm_eps", 1e-12))
        self.image_dropout = nn.Dropout(self.bert.config.hidden_dropout_prob)
        for p in (self.image_positions, self.modality_type.weight):
            nn.init.trunc_normal_(p, std=0.02)
        self.images = ImagePreprocess(size=opts.img_size, mean=tuple(opts.image_mean), std=tuple(opts.image_std),
                                      crop_pct=opts.crop_pct, interpolation=opts.interpolation,
                                      missing_images=opts.missing_images)
        self.frozen = apply_freeze(self, list(self.bert.encoder.layer), opts.freeze, opts.train_last_n)

    # -- pieces the pretraining objectives use ------------------------------------------------
    @property
    def mask_token_id(self) -> int | None:
        return self.tokenizer.mask_token_id

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def text_position_embedding(self, positions: Tensor) -> Tensor:
        return self.bert.embeddings.position_embeddings(positions)

    def image_position_embedding(self, patch_index: Tensor) -> Tensor:
        return self.image_positions[0, patch_index]

    def patchify(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, n_patches, 3 * P * P], row-major, the order of the image positions."""
        p = self.opts.patch_size
        b = pixels.shape[0]
        x = pixels.unfold(2, p, p).unfold(3, p, p)  # B, 3, g, g, P, P
        return x.permute(0, 2, 3, 1, 4, 5).reshape(b, self.n_patches, 3 * p * p)

    # -- Encoder interface -------------------------------------------------------------------
    def preprocess(self, records: list[dict[str, Any]]) -> dict[str, Tensor]:
        enc = self.tokenizer([r["title"] or "" for r in records], padding="longest", truncation=True,
                             max_length=self.opts.max_length, return_tensors="pt")
        word_ids = torch.tensor([[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(records))])
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "word_ids": word_ids,
                "pixels": self.images.pixels(records)}

    def preprocess_fingerprint(self) -> dict[str, Any]:
        return {"tokenizer": self.opts.tokenizer or self.opts.model, "max_length": self.opts.max_length,
                "image": self.images.fingerprint()}

    def embed_image(self, pixels: Tensor, patch_mask: Tensor | None = None) -> Tensor:
        x = self.patch_proj(pixels).flatten(2).transpose(1, 2)  # B, n_patches, D
        if patch_mask is not None:
            x = torch.where(patch_mask.unsqueeze(-1), self.mask_patch.to(x.dtype).expand_as(x), x)
        x = x + self.image_positions + self.modality_type.weight[IMAGE_TYPE]
        return self.image_dropout(self.image_norm(x))

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        ids, text_mask = inputs["input_ids"], inputs["attention_mask"].bool()
        text = self.bert.embeddings(input_ids=ids) + self.modality_type.weight[TEXT_TYPE]
        image = self.embed_image(inputs["pixels"].to(text.dtype), inputs.get("patch_mask"))
        x = torch.cat([text, image], dim=1)
        mask = torch.cat([text_mask, torch.ones(image.shape[:2], dtype=torch.bool, device=x.device)], dim=1)
        additive = (~mask)[:, None, None, :].to(x.dtype) * torch.finfo(x.dtype).min
        for layer in self.bert.encoder.layer:
            out = layer(x, additive)
            x = out[0] if isinstance(out, tuple) else out
        n_text = ids.shape[1]
        keep = text_mask.unsqueeze(-1).to(x.dtype)
        text_mean = (x[:, :n_text] * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        cls = x[:, 0]
        return EncoderOutput(sequence=x, mask=mask, pooled=cls,
                             extras={"text": text_mean, "image": x[:, n_text:].mean(1), "joint": cls})


def build(opts: SingleStreamOptions, ctx) -> SingleStreamEncoder:
    return SingleStreamEncoder(opts, seed=getattr(ctx, "seed", 0))


SPECS = [PluginSpec("encoder", "single_stream",
                    "ViLT-style joint encoder: title tokens + image patches in one BERT-family transformer",
                    build, SingleStreamOptions)]
