"""``train(cfg)``: fit a reward model and test it; returns the metrics dict (and writes it into the run folder)."""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from vrm.config.train import validate
from vrm.data.files import folder_lock, write_text_atomically
from vrm.metric_names import METRICS_FILE, VAL_STAGE
from vrm.models.finite import check_finite_metrics, check_finite_parameters
from vrm.training.build import build, build_trainer, seed_everything, typed_config
from vrm.training.console import frozen_encoder_notice_silenced, one_line_per_message, split_table
from vrm.training.module import RewardModule
from vrm.training.resume_check import check_resume_compatible
from vrm.training.trackers import close_loggers

log = logging.getLogger(__name__)

#: The run folder's record of its best checkpoint (the one an export takes).
BEST_CHECKPOINT_FILE = "best_checkpoint.txt"


def metrics_to_floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.is_tensor(v) or isinstance(v, int | float)}


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` means this run folder's ``checkpoints/last.ckpt`` (for resuming with the same command)."""
    if ckpt_path is None:
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if path.is_dir():
        hint = f" (e.g. {path / 'checkpoints' / 'last.ckpt'})" if (path / "checkpoints").is_dir() else ""
        raise ValueError(f"ckpt_path={ckpt_path} is a folder; give the checkpoint file{hint}, or ckpt_path=last")
    if not path.is_file():
        if ckpt_path == "last":
            log.warning("ckpt_path=last: %s does not exist yet; starting from scratch", path)
            return None
        raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist")
    check_checkpoint_file(path)
    return str(path)


def check_checkpoint_file(path: Path) -> None:
    """Fail early, naming the file, when a checkpoint is not a complete torch zip archive (truncated, not one), is
    not a training checkpoint (a zip of something else), or holds anything but tensors and plain values (a pickle
    that would run code: refused by ``weights_only=True`` before anything runs)."""
    why = None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
            why = f"a zip archive without a torch pickle (it holds {names[:3]}...)"
        else:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
                why = "a torch file but not a Lightning training checkpoint (no state_dict)"
    except (zipfile.BadZipFile, OSError) as err:
        why = f"not a complete torch checkpoint ({err})"
    except pickle.UnpicklingError as err:
        why = f"it holds objects that are not tensors or plain values, refused unread ({str(err).splitlines()[0]})"
    except (RuntimeError, ValueError, EOFError) as err:
        why = f"it cannot be read as a torch checkpoint ({type(err).__name__}: {str(err).splitlines()[0]})"
    if why is not None:
        raise ValueError(f"checkpoint {path} cannot be resumed from: {why}; checkpoints are written atomically "
                         "(AtomicCheckpointIO), so it was not written by vrm-train or was damaged afterwards: remove "
                         "it or pass an older one as ckpt_path")


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best checkpoint of the monitoring ModelCheckpoint (not the step-interval one that only keeps last)."""
    callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    callbacks.sort(key=lambda c: c.monitor is None)
    return next((c.best_model_path for c in callbacks if c.best_model_path), None)


def train(cfg: DictConfig) -> dict[str, float]:
    """Build, fit and test as configured, write ``metrics.json`` and ``best_checkpoint.txt`` into the run folder;
    returns every logged metric as a float. Exporting the best checkpoint (``export_dir``) is the caller's step:
    :func:`vrm.cli.train.train_and_export`."""
    cfg = typed_config(cfg)
    validate(cfg)
    one_line_per_message()
    seed_everything(cfg.seed)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(output_dir, "run folder"):
        return _train(cfg, output_dir)


def _train(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    trainer = build_trainer(cfg)  # a trainer Lightning refuses (no GPU, devices=0) fails before the encoder loads
    run = build(cfg, output_dir)
    module, datamodule = run.module, run.datamodule

    metrics: dict[str, float] = {}
    status = "failed"
    try:
        if cfg.train:
            ckpt_path = resolve_ckpt_path(cfg.ckpt_path, output_dir)
            if ckpt_path is not None:
                check_resume_compatible(ckpt_path, module.hparams)
            encoder = module.net.encoder if module.frozen_encoder else None
            with frozen_encoder_notice_silenced(module, encoder):
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            metrics.update(metrics_to_floats(trainer.callback_metrics))
            check_finite_run(module, metrics, "after training")
        best = best_checkpoint(trainer)
        if cfg.test and datamodule.test_split_names:
            ckpt = best if best and not trainer.fast_dev_run else None
            tested: dict[str, float] = {}
            for result in trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False):
                tested.update(metrics_to_floats(result))
            if trainer.is_global_zero:
                log.info("test results\n%s", split_table(tested, datamodule.test_split_names))
            metrics.update(tested)
            check_finite_run(module, metrics, "after testing")
        if best:
            write_text_atomically(output_dir / BEST_CHECKPOINT_FILE, best + "\n")
        else:
            (output_dir / BEST_CHECKPOINT_FILE).unlink(missing_ok=True)
        status = "success"
    finally:
        close_loggers(trainer.loggers, status)
    write_text_atomically(output_dir / METRICS_FILE, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def check_finite_run(module: RewardModule, metrics: dict[str, float], when: str) -> None:
    """NonFiniteModelError when the model's weights or the run's metrics went NaN or Inf (a diverged run: a learning
    rate far too large, non-finite batches skipped under ``model.max_nonfinite_batches``): the run fails, writing no
    ``best_checkpoint.txt`` and exporting nothing."""
    skipped = len(module.nonfinite_batches)
    hint = ("the run diverged" + (f" ({skipped} training batches were skipped for a non-finite loss)" if skipped
                                  else "") + ": lower optim.lr / optim.head_lr, or check the data")
    check_finite_parameters(module.net, f"the model {when}", hint)
    check_finite_metrics(metrics, f"the run {when}", hint)


def recorded_best_checkpoint(output_dir: str | Path) -> str | None:
    """The best checkpoint :func:`train` recorded in the run folder, or None when it saved none."""
    path = Path(output_dir) / BEST_CHECKPOINT_FILE
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def missing_objective_reason(cfg: DictConfig, metrics: dict[str, float]) -> str:
    """One line: why the run has no finite ``optimized_metric``, naming the setting to change."""
    metric, t = cfg.optimized_metric, cfg.trainer
    if not cfg.train:
        why = "train=false: nothing was fitted or validated; set train=true"
    elif any(k.startswith(f"{VAL_STAGE}/") for k in metrics):
        value = metrics.get(metric)
        why = (f"it is {value}; the run diverged: lower optim.lr / optim.head_lr" if value is not None else
               f"the run logs no such metric; set optimized_metric to one of {', '.join(sorted(metrics))}")
    elif t.limit_val_batches == 0 or t.limit_val_batches == 0.0:
        why = f"trainer.limit_val_batches={t.limit_val_batches} turns validation off; set it > 0"
    elif t.check_val_every_n_epoch and t.max_epochs is not None and t.max_epochs < t.check_val_every_n_epoch:
        why = (f"trainer.check_val_every_n_epoch={t.check_val_every_n_epoch} is more than "
               f"trainer.max_epochs={t.max_epochs}; set it <= trainer.max_epochs")
    else:
        why = "validation never ran (is there a validation split? data.validation, data.synthetic.num_validation)"
    return f"no {metric} (optimized_metric) to report: {why}"
