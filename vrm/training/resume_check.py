"""Resuming from a checkpoint made under another config: named by config key before Lightning loads the state.

A checkpoint carries the configuration it was trained with (the module's hyperparameters: the architecture as
``VRMConfig`` kwargs, the train mode, the LoRA settings). Resuming it under a config that builds another model
(``model.num_objectives``, ``model.type``, ``encoder.train_mode``, ...) used to fail inside ``load_state_dict`` with
a list of tensor names and shapes; here the two configs are compared first and the error names the keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: The config key of each ``VRMConfig`` argument that is not a ``model.*`` option under its own name.
ARCH_KEY = {
    "head": "model.type",
    "encoder_kind": "encoder.kind",
    "pooling": "encoder.pooling",
    "encoder_config": "encoder.path/encoder.architecture",
    "max_sequence_length": "data.max_length",
    "truncation": "data.truncation",
    "use_chat_template": "encoder.use_chat_template",
    "prompt_end_ids": "encoder.tokenizer",
}
#: Architecture arguments a resume may change: they change how fast a batch runs, not what is computed or stored.
MAY_CHANGE = {"length_chunks"}
#: Keys of an encoder's config that name where it came from, not what it is.
ENCODER_PROVENANCE = {"_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype"}


def _train_mode(hparams: dict[str, Any]) -> str:
    return "lora" if hparams.get("lora") else ("frozen" if hparams.get("frozen_encoder") else "full")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: checkpoint X, this run Y`` for every config key on which two modules' hyperparameters differ in a way
    that changes the model (its architecture, its train mode, its LoRA settings)."""
    diffs = []
    saved_arch, arch = saved.get("vrm_config", {}), current.get("vrm_config", {})
    for name in sorted(set(saved_arch) | set(arch)):
        if name in MAY_CHANGE:
            continue
        old, new = saved_arch.get(name), arch.get(name)
        if name == "encoder_config" and isinstance(old, dict) and isinstance(new, dict):
            keys = sorted(k for k in set(old) | set(new) if k not in ENCODER_PROVENANCE and old.get(k) != new.get(k))
            if keys:
                diffs.append(f"{ARCH_KEY[name]} (the encoder's {', '.join(keys[:5])}"
                             + (f" and {len(keys) - 5} more" if len(keys) > 5 else "") + ")")
        elif old != new:
            diffs.append(f"{ARCH_KEY.get(name, f'model.{name}')}: checkpoint {_short(old)}, this run {_short(new)}")
    if _train_mode(saved) != _train_mode(current):
        diffs.append(f"encoder.train_mode: checkpoint {_train_mode(saved)!r}, this run {_train_mode(current)!r}")
    elif saved.get("lora") != current.get("lora"):
        diffs.append(f"encoder.lora: checkpoint {saved.get('lora')}, this run {current.get('lora')}")
    return diffs


def check_resume_compatible(path: str | Path, hparams: dict[str, Any]) -> None:
    """ValueError naming the differing config keys when the checkpoint at ``path`` was trained under a config that
    builds another model than ``hparams`` (the module about to be fitted). The checkpoint is memory-mapped, so its
    weights are not read."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - re-raised naming the file
        raise ValueError(f"ckpt_path={path} cannot be read as a training checkpoint: {err}") from None
    saved = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(saved, dict) or "vrm_config" not in saved:
        raise ValueError(f"ckpt_path={path} is not a vrm-train checkpoint (no hyper_parameters with vrm_config)")
    diffs = config_differences(saved, dict(hparams))
    if diffs:
        raise ValueError(f"ckpt_path={path} was trained under another config; it cannot be resumed by this one, "
                         f"which differs in: {'; '.join(diffs)}. Resume with the checkpoint's settings (its run "
                         "folder's .hydra/config.yaml) or start a new run without ckpt_path")
