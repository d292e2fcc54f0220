"""``train(cfg)``: fit a reward model, test it, optionally export it; returns the metrics dict."""

from __future__ import annotations

import json
import logging
import math
import zipfile
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import pyro
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from vrm.config import TrainConfig
from vrm.models.encoder import LoadedEncoder, load_encoder, lora_settings
from vrm.models.modeling_vrm import VRMConfig
from vrm.training.datamodule import PreferenceDataModule
from vrm.training.feature_cache import attach_cached_features, encoder_identity
from vrm.training.module import ACC_BEST, RewardModule
from vrm.training.resumable import AtomicCheckpointIO

log = logging.getLogger(__name__)

#: Where a run keeps the tokenizer its checkpoints were trained with.
TOKENIZER_DIR = "tokenizer"
#: The metrics dict train() returns, also written into the run folder (read by sweep summaries).
METRICS_FILE = "metrics.json"


def as_container(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def architecture(cfg: DictConfig, enc: LoadedEncoder) -> dict[str, Any]:
    """The VRMConfig kwargs of this run: head options, encoder config and tokenisation rule."""
    m = cfg.model
    if m.type not in ("vrm", "bt"):
        raise ValueError(f"model.type={m.type!r} is not one of ('vrm', 'bt')")
    prompt_repr = m.prompt_repr
    if prompt_repr == "auto":
        prompt_repr = "shared" if enc.kind == "decoder" else "separate"
    keys = ("num_objectives", "feature_dim", "score_head", "head_hidden_dim", "weight_posterior", "weight_prior",
            "prior_concentration", "concentration_eps", "concentration_min", "concentration_max",
            "use_weight_latent", "use_feature_latent", "bt_head", "bt_aspect_heads")
    arch = {k: m[k] for k in keys}
    arch.update(head=m.type, encoder_kind=enc.kind, pooling=enc.pooling, prompt_repr=prompt_repr,
                encoder_config=enc.model.config.to_dict(), max_sequence_length=cfg.data.max_length,
                truncation=cfg.data.truncation, use_chat_template=cfg.encoder.use_chat_template,
                length_chunks=cfg.encoder.length_chunks)
    VRMConfig(**arch)  # validates the combination before any data is loaded
    return arch


def validate(cfg: DictConfig) -> None:
    """Impossible values the types cannot catch; each error names its key."""
    m = cfg.model
    checks = [
        (m.num_objectives >= 1, "model.num_objectives", m.num_objectives, "must be >= 1"),
        (m.feature_dim >= 1, "model.feature_dim", m.feature_dim, "must be >= 1"),
        (m.num_samples >= 1, "model.num_samples", m.num_samples, "must be >= 1"),
        (m.beta_w >= 0, "model.beta_w", m.beta_w, "must be >= 0"),
        (m.beta_z >= 0, "model.beta_z", m.beta_z, "must be >= 0"),
        (m.tau > 0, "model.tau", m.tau, "must be > 0"),
        (m.max_nonfinite_batches >= 0, "model.max_nonfinite_batches", m.max_nonfinite_batches, "must be >= 0"),
        (0 <= m.kl_warmup_fraction <= 1, "model.kl_warmup_fraction", m.kl_warmup_fraction, "must be in [0, 1]"),
        (cfg.data.batch_size >= 1, "data.batch_size", cfg.data.batch_size, "must be >= 1"),
        (cfg.encoder.length_chunks >= 1, "encoder.length_chunks", cfg.encoder.length_chunks, "must be >= 1"),
        (cfg.optim.lr > 0 and cfg.optim.head_lr > 0, "optim.lr/head_lr", (cfg.optim.lr, cfg.optim.head_lr),
         "must be > 0"),
    ]
    for ok, key, value, why in checks:
        if not ok:
            raise ValueError(f"{key}={value} {why}")


def instantiate_dict(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a callbacks/logger group."""
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def metrics_to_floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.is_tensor(v) or isinstance(v, int | float)}


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` means this run folder's ``checkpoints/last.ckpt`` (for resuming with the same command)."""
    if ckpt_path is None:
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        if ckpt_path == "last":
            log.warning("ckpt_path=last: %s does not exist yet; starting from scratch", path)
            return None
        raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist")
    check_checkpoint_file(path)
    return str(path)


def check_checkpoint_file(path: Path) -> None:
    """Fail early, naming the file, when a checkpoint is not a complete torch zip archive (truncated, not one)."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"checkpoint {path} cannot be resumed from: it is not a complete torch checkpoint ({err}); "
                         "checkpoints are written atomically (AtomicCheckpointIO), so it was not written by vrm-train "
                         "or was damaged afterwards: remove it or pass an older one as ckpt_path") from err


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best checkpoint of the monitoring ModelCheckpoint (not the step-interval one that only keeps last)."""
    callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    callbacks.sort(key=lambda c: c.monitor is None)
    return next((c.best_model_path for c in callbacks if c.best_model_path), None)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train (and test, and export) as configured; returns every logged metric as a float."""
    if not isinstance(cfg, DictConfig) or OmegaConf.get_type(cfg) is dict:
        cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)
    validate(cfg)
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True)
        pyro.set_rng_seed(cfg.seed)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    enc = load_encoder(cfg.encoder)
    arch = architecture(cfg, enc)
    tokenizer_dir = output_dir / TOKENIZER_DIR
    enc.tokenizer.save_pretrained(tokenizer_dir)

    datamodule = PreferenceDataModule(cfg.data, enc.tokenizer, enc.kind, VRMConfig(**arch).use_token_types,
                                      cfg.encoder.use_chat_template, str(output_dir),
                                      seed=cfg.seed if cfg.seed is not None else 0)
    datamodule.setup()
    module = RewardModule(arch, as_container(cfg.model), as_container(cfg.optim), str(tokenizer_dir),
                          frozen_encoder=cfg.encoder.train_mode == "frozen",
                          test_split_names=datamodule.test_split_names, encoder=enc.model,
                          lora=lora_settings(cfg.encoder))
    if cfg.encoder.train_mode == "frozen" and cfg.encoder.feature_cache:
        attach_cached_features(datamodule, module.net, encoder_identity(cfg.encoder.path, enc.model))

    callbacks = instantiate_dict(cfg.get("callbacks"))
    loggers = instantiate_dict(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                                 plugins=[AtomicCheckpointIO()])

    metrics: dict[str, float] = {}
    status = "failed"
    try:
        if cfg.train:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg.ckpt_path, output_dir))
            metrics.update(metrics_to_floats(trainer.callback_metrics))
        best = best_checkpoint(trainer)
        if cfg.test and datamodule.test_split_names:
            ckpt = best if best and not trainer.fast_dev_run else None
            for result in trainer.test(module, datamodule=datamodule, ckpt_path=ckpt):
                metrics.update(metrics_to_floats(result))
        if best:
            (output_dir / "best_checkpoint.txt").write_text(best + "\n")
        if cfg.export_dir is not None:
            if not best:
                raise ValueError("export_dir is set but no checkpoint was saved (enable_checkpointing?)")
            from vrm.scoring.export import export_checkpoint

            export_checkpoint(best, cfg.export_dir, metrics)
            log.info("exported %s to %s", best, cfg.export_dir)
        status = "success"
    finally:
        for logger in trainer.loggers:
            logger.finalize(status)
    (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if ACC_BEST in metrics and not math.isfinite(metrics[ACC_BEST]):
        raise FloatingPointError(f"{ACC_BEST} is not finite: {metrics[ACC_BEST]}")
    return metrics
