"""The build step: a training config -> the encoder, the data module and the LightningModule (and the Trainer).

``train()``, the benchmarks and the server load test all assemble a run here, so there is one way to do it.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import pyro
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from vrm.config import ModelConfig, TrainConfig
from vrm.data.contract import build_contract
from vrm.data.schema import MAX_PROMPT_GROUPS
from vrm.models.encoder import LoadedEncoder, load_encoder, lora_settings
from vrm.models.modeling_vrm import VRMConfig, uses_token_types
from vrm.training.datamodule import PreferenceDataModule
from vrm.training.feature_cache import attach_cached_features, encoder_identity
from vrm.training.module import RewardModule
from vrm.training.resumable import AtomicCheckpointIO
from vrm.training.trackers import LogRunConfig, instantiate_loggers

log = logging.getLogger(__name__)

#: Where a run keeps the tokenizer its checkpoints were trained with.
TOKENIZER_DIR = "tokenizer"


@dataclass
class BuiltRun:
    """What a training run is made of (the data module is set up: its splits are loaded and tokenised)."""

    encoder: LoadedEncoder
    datamodule: PreferenceDataModule
    module: RewardModule


def as_container(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def typed_config(cfg: Any) -> DictConfig:
    """``cfg`` checked against :class:`TrainConfig` (a config composed from ``conf/train.yaml`` already is)."""
    if not isinstance(cfg, DictConfig) or OmegaConf.get_type(cfg) is dict:
        cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)
    return cfg


def seed_everything(seed: int | None) -> None:
    """Seed Python, NumPy, torch and Pyro (None: leave them unseeded)."""
    if seed is not None:
        L.seed_everything(seed, workers=True)
        pyro.set_rng_seed(seed)


#: The model options that are architecture: every ``ModelConfig`` field whose name ``VRMConfig`` takes (the rest,
#: the objective's and the loop's options, stay with the training module).
ARCHITECTURE_OPTIONS = tuple(name for name in inspect.signature(VRMConfig.__init__).parameters
                             if name in {f.name for f in fields(ModelConfig)})


def architecture(cfg: DictConfig, enc: LoadedEncoder, prompt_groups: list[str] | None = None) -> dict[str, Any]:
    """The VRMConfig kwargs of this run: the model's architecture options under their own names, the head
    (``model.type``), what the loaded encoder is, and the tokenisation rule.

    ``prompt_groups``: the training data's prompt groups (``PreferenceDataModule.prompt_groups``), which
    ``model.weight_posterior`` ``groups`` needs and ``auto`` chooses by; None before the data is loaded (``auto``
    is then ``prompt``, and ``groups`` is checked with every other option but its groups)."""
    m = cfg.model
    if m.type not in ("vrm", "bt"):
        raise ValueError(f"model.type={m.type!r} is not one of ('vrm', 'bt')")
    check_max_length(cfg, enc)
    arch = {k: m[k] for k in ARCHITECTURE_OPTIONS}
    if arch["prompt_repr"] == "auto":
        arch["prompt_repr"] = "shared" if enc.kind == "decoder" else "separate"
    arch.update(weight_posterior_of(m, prompt_groups))
    arch.update(head=m.type, encoder_kind=enc.kind, pooling=enc.pooling, encoder_config=enc.model.config.to_dict(),
                max_sequence_length=cfg.data.max_length, truncation=cfg.data.truncation,
                use_chat_template=cfg.encoder.use_chat_template, length_chunks=cfg.encoder.length_chunks,
                prompt_end_ids=build_contract(enc.tokenizer, enc.kind, cfg.encoder.use_chat_template).prompt_end_ids)
    pending = arch["weight_posterior"] == "groups" and arch["prompt_groups"] is None
    # validates the combination before any data is loaded (with stand-in group names while the groups are pending)
    VRMConfig(**{**arch, "prompt_groups": ["group 1", "group 2"]} if pending else arch)
    return arch


def weight_posterior_of(m: DictConfig, prompt_groups: list[str] | None) -> dict[str, Any]:
    """``weight_posterior`` and ``prompt_groups`` of the model config ``m`` given the training data's prompt groups
    (None: not loaded yet); ``auto`` becomes ``groups`` or ``prompt``, and a BT head, which has no weights, ``prompt``."""
    posterior = m.weight_posterior
    if posterior == "auto" or m.type == "bt":
        posterior = "groups" if m.type == "vrm" and prompt_groups else "prompt"
    if posterior == "groups" and prompt_groups is not None and not prompt_groups:
        raise ValueError(f"model.weight_posterior=groups needs prompt groups: 2 to {MAX_PROMPT_GROUPS} distinct "
                         "non-empty values of the training split's `subset` column (the data's subsets or sources), "
                         "and this data has none; use model.weight_posterior=prompt, or give the pairs a subset")
    return {"weight_posterior": posterior,
            "prompt_groups": list(prompt_groups) if posterior == "groups" and prompt_groups else None}


def with_prompt_groups(cfg: DictConfig, arch: dict[str, Any], prompt_groups: list[str]) -> dict[str, Any]:
    """:func:`architecture`'s ``arch`` once the training data's prompt groups are known, checked; says what
    ``model.weight_posterior=auto`` chose."""
    arch = {**arch, **weight_posterior_of(cfg.model, prompt_groups)}
    VRMConfig(**arch)
    if cfg.model.type == "vrm" and cfg.model.weight_posterior == "auto":
        groups = arch["prompt_groups"]
        if groups:
            log.info("model.weight_posterior=auto: groups (the weights read the prompt's predicted group; %d groups "
                     "from the training split's subset column: %s)", len(groups), ", ".join(groups))
        else:
            log.info("model.weight_posterior=auto: prompt (the training split's subset column has no 2-%d distinct "
                     "values to group the prompts by)", MAX_PROMPT_GROUPS)
    return arch


def check_max_length(cfg: DictConfig, enc: LoadedEncoder) -> None:
    """``data.max_length`` within the encoder's position embeddings (a longer sequence indexes past them)."""
    positions = getattr(enc.model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and cfg.data.max_length > positions:
        raise ValueError(f"data.max_length={cfg.data.max_length} is more than the {positions} positions of the encoder "
                         f"{cfg.encoder.path!r} (its config's max_position_embeddings): set data.max_length<={positions}")


def build_module(cfg: DictConfig, enc: LoadedEncoder, arch: dict[str, Any] | None = None,
                 tokenizer_dir: str | None = None, test_split_names: list[str] | None = None) -> RewardModule:
    """The LightningModule of ``cfg`` on the loaded encoder (``arch``: :func:`architecture`, computed if None)."""
    return RewardModule(arch or architecture(cfg, enc), as_container(cfg.model), as_container(cfg.optim),
                        tokenizer_dir, frozen_encoder=cfg.encoder.train_mode == "frozen",
                        test_split_names=test_split_names, encoder=enc.model, lora=lora_settings(cfg.encoder))


def build_datamodule(cfg: DictConfig, enc: LoadedEncoder, arch: dict[str, Any], output_dir: Path
                     ) -> PreferenceDataModule:
    """The data module of ``cfg``, set up (its splits loaded and tokenised as ``arch`` says)."""
    datamodule = PreferenceDataModule(cfg.data, enc.tokenizer, enc.kind, uses_token_types(arch["encoder_config"]),
                                      cfg.encoder.use_chat_template, str(output_dir),
                                      seed=cfg.seed if cfg.seed is not None else 0)
    datamodule.setup()
    return datamodule


def build(cfg: DictConfig, output_dir: Path) -> BuiltRun:
    """Encoder, data module and module of ``cfg``; the tokenizer is saved under ``output_dir/tokenizer``, and a
    frozen encoder's features are computed once (or read from the feature cache)."""
    enc = load_encoder(cfg.encoder)
    arch = architecture(cfg, enc)  # an impossible combination fails before any data is loaded
    tokenizer_dir = output_dir / TOKENIZER_DIR
    enc.tokenizer.save_pretrained(tokenizer_dir)
    datamodule = build_datamodule(cfg, enc, arch, output_dir)
    arch = with_prompt_groups(cfg, arch, datamodule.prompt_groups)
    module = build_module(cfg, enc, arch, str(tokenizer_dir), datamodule.test_split_names)
    if cfg.encoder.train_mode == "frozen" and cfg.encoder.feature_cache:
        attach_cached_features(datamodule, module.net, encoder_identity(cfg.encoder.path, enc.model))
    return BuiltRun(enc, datamodule, module)


def instantiate_dict(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a callbacks group."""
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Lightning Trainer of ``cfg`` with its callbacks and loggers (each logs the whole config once as its
    hyperparameters: :class:`LogRunConfig`); checkpoints are written atomically."""
    callbacks = instantiate_dict(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    if loggers:
        callbacks.append(LogRunConfig(as_container(cfg)))
    try:
        return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                       plugins=[AtomicCheckpointIO()], enable_autolog_hparams=False)
    except InstantiationException as err:  # Lightning's refusal (no GPU, devices=0, ...), named as trainer's
        t = cfg.trainer
        raise ValueError(f"the trainer config (trainer.accelerator={t.accelerator}, trainer.devices={t.devices}, "
                         f"trainer.strategy={t.strategy}, trainer.precision={t.precision}) is refused by Lightning: "
                         f"{err.__cause__ or err}") from err
