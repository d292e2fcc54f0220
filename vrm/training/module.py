"""One LightningModule for every reward model: BT and VRM share the loop and differ only in the model."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torchmetrics import MaxMetric
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from vrm.data.schema import PROMPT_GROUP
from vrm.errors import NonFiniteLossError
from vrm.metric_names import (
    ACC,
    ACC_BEST,
    LOSS,
    MARGIN,
    NONFINITE_METRIC,
    REWARD_MEAN,
    REWARD_STD,
    TRAIN_STAGE,
    VAL_STAGE,
)
from vrm.models.encoder import apply_lora
from vrm.models.modeling_vrm import VRMConfig, VRMForSequenceClassification, build_encoder
from vrm.models.objectives import BTObjective, ObjectiveOutput, VRMObjective
from vrm.training.feature_cache import H_CHOSEN, H_PROMPT, H_REJECTED
from vrm.training.resumable import RNG_STATE_KEY, apply_restored_loader_state, rng_state, set_rng_state

log = logging.getLogger(__name__)

#: Devices where ``optim.fused=null`` picks torch's fused AdamW.
FUSED_ADAMW_DEVICES = ("cpu", "cuda")
#: The model config key that allows batches with a non-finite loss to be skipped.
MAX_NONFINITE_KEY = "max_nonfinite_batches"
#: Extra checkpoint keys: skipped batches and the best validation accuracy so far (RNG: RNG_STATE_KEY).
NONFINITE_KEY, ACC_BEST_KEY = "vrm_nonfinite_batches", "vrm_val_acc_best"


def build_objective(net: VRMForSequenceClassification, model_cfg: dict[str, Any]):
    """The training objective of the configured head (spec defaults live in ``vrm.config.ModelConfig``)."""
    if net.config.head == "bt":
        return BTObjective(net.head, center_coef=model_cfg["center_coef"], tau=model_cfg["tau"],
                           aspect_coef=model_cfg.get("aspect_coef", 1.0), aspect_loss=model_cfg.get("aspect_loss", "bt"))
    return VRMObjective(net.head, num_samples=model_cfg["num_samples"], beta_w=model_cfg["beta_w"],
                        beta_z=model_cfg["beta_z"], tau=model_cfg["tau"], center_coef=model_cfg["center_coef"],
                        aspect_coef=model_cfg["aspect_coef"], aspect_loss=model_cfg["aspect_loss"],
                        group_coef=model_cfg.get("group_coef", 1.0),
                        score_training=model_cfg.get("score_training", "joint"),
                        validate_distributions=model_cfg.get("validate_distributions", False))


def pair_count(batch: dict[str, torch.Tensor]) -> int:
    """B, the number of pairs in a batch of tokens (2B rows) or of cached features (B rows)."""
    return batch[H_CHOSEN].shape[0] if H_CHOSEN in batch else batch["input_ids"].shape[0] // 2


class RewardModule(L.LightningModule):
    """Trains a :class:`VRMForSequenceClassification` (either head) on batches of preference pairs.

    Hyperparameters are plain dicts, so a checkpoint loads with ``torch.load(weights_only=True)`` and
    rebuilds the same architecture without the pretrained files (see :meth:`from_checkpoint`).
    """

    def __init__(self, vrm_config: dict[str, Any], model_cfg: dict[str, Any], optim_cfg: dict[str, Any],
                 tokenizer_path: str | None = None, frozen_encoder: bool = False,
                 test_split_names: list[str] | None = None, encoder: PreTrainedModel | None = None,
                 lora: dict[str, Any] | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        if encoder is None and lora is not None:  # rebuilding a LoRA run from its checkpoint
            encoder = apply_lora(build_encoder(vrm_config["encoder_config"]), lora)
        self.net = VRMForSequenceClassification(VRMConfig(**vrm_config), encoder=encoder)
        self.frozen_encoder = frozen_encoder
        self.objective = build_objective(self.net, model_cfg)
        self.test_split_names = test_split_names or ["test"]
        self.val_acc_best = MaxMetric()
        self._val_acc_sum = self._val_count = 0.0
        #: stage -> (metric names, pair-weighted sums, pairs) of the running epoch (see _accumulate).
        self._epoch_sums: dict[str, tuple[tuple[str, ...], torch.Tensor, int]] = {}
        #: "step S (epoch E, batch B)" of every batch skipped for a non-finite loss (model.max_nonfinite_batches).
        self.nonfinite_batches: list[str] = []
        self._restored_rng: dict[str, Any] | None = None
        self._restored_acc_best: torch.Tensor | None = None
        self.train()  # from_pretrained leaves encoders in eval mode; fine-tuning uses their dropout

    def train(self, mode: bool = True) -> RewardModule:
        """Like ``nn.Module.train``, but a frozen encoder always stays in eval mode (no dropout)."""
        super().train(mode)
        if self.frozen_encoder:
            self.net.encoder.eval()
        return self

    # -- loop -------------------------------------------------------------------------------------
    @property
    def kl_warmup_steps(self) -> int:
        """Steps of the linear KL warm-up; 0 = none (the KL terms at full weight from the first step)."""
        cfg = self.hparams.model_cfg
        if cfg.get("kl_warmup_steps") is not None:
            return int(cfg["kl_warmup_steps"])
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        if not math.isfinite(total) or total <= 0:
            return 1
        return max(1, math.ceil(cfg["kl_warmup_fraction"] * total))

    def _objective(self, h_x: torch.Tensor | None, h_chosen: torch.Tensor, h_rejected: torch.Tensor,
                   **kwargs) -> ObjectiveOutput:
        """The objective in float32 with autocast off: under bf16-mixed training the encoder runs in bf16, but the
        heads' Dirichlet sampling (no bf16 kernel) and KL terms need full precision."""
        with torch.autocast(h_chosen.device.type, enabled=False):
            return self.objective(None if h_x is None else h_x.float(), h_chosen.float(), h_rejected.float(),
                                  **kwargs)

    def pair_forward(self, batch: dict[str, torch.Tensor], progress: float = 1.0) -> ObjectiveOutput:
        aspects = (batch["aspects_chosen"], batch["aspects_rejected"]) if "aspects_chosen" in batch else None
        groups = batch.get(PROMPT_GROUP)
        if H_CHOSEN in batch:  # cached frozen-encoder features (vrm.training.feature_cache): heads only
            return self._objective(batch.get(H_PROMPT), batch[H_CHOSEN], batch[H_REJECTED], progress=progress,
                                   aspects=aspects, groups=groups)
        n = pair_count(batch)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_encoder):
            h_xy, h_x = self.net.representations(batch["input_ids"], batch["attention_mask"],
                                                 batch.get("token_type_ids"), batch["prompt_lengths"], num_prompts=n)
        return self._objective(h_x, h_xy[:n], h_xy[n:], progress=progress, aspects=aspects, groups=groups)

    def _stage_values(self, out: ObjectiveOutput) -> dict[str, torch.Tensor]:
        """The metrics of one batch (detached scalars): loss, accuracy, margin, reward mean and std, the terms."""
        margin = out.reward_chosen - out.reward_rejected
        rewards = torch.cat([out.reward_chosen, out.reward_rejected])
        values = {LOSS: out.loss, ACC: (margin > 0).float().mean(), MARGIN: margin.mean(),
                  REWARD_MEAN: rewards.mean(), REWARD_STD: rewards.std() if rewards.numel() > 1 else rewards.sum() * 0}
        values.update(out.terms)
        return {k: torch.as_tensor(v, device=margin.device).detach().float() for k, v in values.items()}

    def _accumulate(self, stage: str, values: dict[str, torch.Tensor], batch_size: int) -> None:
        """Add a batch's metrics, weighted by its pairs, to ``stage``'s running epoch sums (logged once an epoch by
        :meth:`_log_epoch_means`: a ``self.log`` call costs about a millisecond, most of a cached-feature step)."""
        names = tuple(values)
        stacked = torch.stack(list(values.values())) * batch_size
        sums = self._epoch_sums.get(stage)
        if sums is None or sums[0] != names:
            if sums is not None:
                raise RuntimeError(f"{stage} metrics changed within an epoch: {sums[0]} -> {names}")
            self._epoch_sums[stage] = (names, stacked, batch_size)
        else:
            self._epoch_sums[stage] = (names, sums[1] + stacked, sums[2] + batch_size)

    def _log_epoch_means(self, stage: str, suffix: str = "") -> None:
        """Log ``<stage>/<metric><suffix>``: the pair-weighted mean over the epoch, over all processes (DDP)."""
        sums = self._epoch_sums.pop(stage, None)
        if sums is None:
            return
        names, total, count = sums
        reduced = self.trainer.strategy.reduce(torch.cat([total, total.new_tensor([count])]), reduce_op="sum")
        means = reduced[:-1] / reduced[-1].clamp(min=1)
        for name, value in zip(names, means):
            self.log(f"{stage}/{name}{suffix}", value, on_step=False, on_epoch=True,
                     prog_bar=stage == VAL_STAGE and name in (LOSS, ACC), add_dataloader_idx=False)
            if suffix:  # and, as Lightning does for on_step + on_epoch values, unsuffixed for callbacks to monitor
                self.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, logger=False)

    def _log_train_step(self, values: dict[str, torch.Tensor]) -> None:
        """Per-step values ``train/<metric>_step``: all of them every ``trainer.log_every_n_steps`` steps (when
        Lightning writes to the loggers) and at the epoch's last batch (so the run's metrics end with them), the loss
        and accuracy every step while a progress bar shows them."""
        log_step = ((self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0
                    or self.trainer.is_last_batch)
        show = self.trainer.progress_bar_callback is not None
        for name, value in values.items():
            on_bar = name in (LOSS, ACC)
            if log_step or (show and on_bar):
                self.log(f"{TRAIN_STAGE}/{name}_step", value, on_step=True, on_epoch=False, prog_bar=on_bar)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        warmup = self.kl_warmup_steps
        progress = self.global_step / warmup if warmup > 0 else 1.0
        out = self.pair_forward(batch, progress=progress)
        if not torch.isfinite(out.loss):
            return self._skip_nonfinite(out, batch_idx)
        values = self._stage_values(out)
        self._accumulate(TRAIN_STAGE, values, pair_count(batch))
        self._log_train_step(values)
        return out.loss

    def _skip_nonfinite(self, out: ObjectiveOutput, batch_idx: int) -> None:
        """Skip a batch whose loss is NaN or Inf (None: Lightning skips it), at most ``model.max_nonfinite_batches``
        of them; past that, or with the default 0, stop with :class:`NonFiniteLossError`."""
        allowed = int(self.hparams.model_cfg.get(MAX_NONFINITE_KEY, 0))
        where = f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        message = (f"non-finite training loss {out.loss.item()} at {where}; terms: "
                   + ", ".join(f"{k}={float(v):.4g}" for k, v in out.terms.items()))
        self.nonfinite_batches.append(where)
        if len(self.nonfinite_batches) > allowed:
            raise NonFiniteLossError(f"{message} ({len(self.nonfinite_batches)} non-finite batches, "
                                     f"model.{MAX_NONFINITE_KEY}={allowed})")
        log.warning("skipping batch %d of %d allowed: %s", len(self.nonfinite_batches), allowed, message)
        return None

    def on_train_epoch_start(self) -> None:
        self._epoch_sums.pop(TRAIN_STAGE, None)

    def on_train_epoch_end(self) -> None:
        self._log_epoch_means(TRAIN_STAGE, suffix="_epoch")
        self.log(NONFINITE_METRIC, float(len(self.nonfinite_batches)))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """When ``trainer.max_steps`` ends training before any validation (a short sweep trial, a smoke run), ask
        the fit loop to stop here: Lightning then validates once before it stops (``should_stop`` is one of its
        reasons to validate), so the validation metrics, ``val/acc_best`` (what sweeps optimise) and the best
        checkpoint exist."""
        trainer = self.trainer
        if 0 < trainer.max_steps <= trainer.global_step and not self.val_acc_best.update_called \
                and trainer.enable_validation and not trainer.should_stop and not trainer.fast_dev_run:
            log.info("trainer.max_steps=%d is reached before any validation: validating once before stopping",
                     trainer.max_steps)
            trainer.should_stop = True

    def on_train_end(self) -> None:
        if self.nonfinite_batches:
            log.warning("%d training batches were skipped for a non-finite loss: %s", len(self.nonfinite_batches),
                        "; ".join(self.nonfinite_batches))

    def on_fit_start(self) -> None:
        """``weight_posterior=clusters``: fit the prompt clusters once on the training prompts' frozen features (a
        resumed run keeps its checkpoint's centres)."""
        head = self.net.head
        if self.net.config.weight_posterior != "clusters" or head.prompt_clusters_fitted():
            return
        features = getattr(self.trainer.datamodule, "features", None) if self.trainer is not None else None
        if not self.frozen_encoder or features is None or H_PROMPT not in features.get("train", {}):
            raise ValueError("model.weight_posterior=clusters needs encoder.train_mode=frozen with "
                             "encoder.feature_cache=true: the prompt clusters are fitted once on the training "
                             "prompts' frozen features")
        head.fit_prompt_clusters(features["train"][H_PROMPT])

    def on_train_start(self) -> None:
        self.val_acc_best.reset()
        if self._restored_acc_best is not None:  # resumed: the best accuracy of the epochs before the restart
            self.val_acc_best.update(self._restored_acc_best)
        if self._restored_rng is not None:  # here, after the sanity check, so training draws as it would have
            set_rng_state(self._restored_rng)
        apply_restored_loader_state(self.trainer)
        self._restored_rng = self._restored_acc_best = None

    # -- checkpoints (exact resume: vrm.training.resumable) ---------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_STATE_KEY] = rng_state()
        checkpoint[NONFINITE_KEY] = list(self.nonfinite_batches)
        if self.val_acc_best.update_called:
            checkpoint[ACC_BEST_KEY] = self.val_acc_best.compute().detach().cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored_rng = checkpoint.get(RNG_STATE_KEY)
        self._restored_acc_best = checkpoint.get(ACC_BEST_KEY)
        self.nonfinite_batches = list(checkpoint.get(NONFINITE_KEY, []))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.pair_forward(batch)
        n = pair_count(batch)
        self._accumulate(VAL_STAGE, self._stage_values(out), n)
        self._val_acc_sum += float((out.reward_chosen > out.reward_rejected).sum())
        self._val_count += n

    def on_validation_epoch_start(self) -> None:
        self._epoch_sums.pop(VAL_STAGE, None)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_means(VAL_STAGE)
        # Summed over processes (DDP), so every rank tracks the accuracy on the whole validation split.
        correct, count = self.trainer.strategy.reduce(
            torch.tensor([self._val_acc_sum, self._val_count], device=self.device), reduce_op="sum").tolist()
        if count:
            self.val_acc_best.update(torch.tensor(correct / count))
            self.log(ACC_BEST, self.val_acc_best.compute(), prog_bar=True)
        self._val_acc_sum = self._val_count = 0.0

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        out = self.pair_forward(batch)
        self._accumulate(self.test_split_names[dataloader_idx], self._stage_values(out), pair_count(batch))

    def on_test_epoch_start(self) -> None:
        for stage in self.test_split_names:
            self._epoch_sums.pop(stage, None)

    def on_test_epoch_end(self) -> None:
        for stage in self.test_split_names:
            self._log_epoch_means(stage)

    # -- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.hparams.optim_cfg
        encoder_params = [p for p in self.net.encoder.parameters() if p.requires_grad]
        head_params = [p for p in self.net.head.parameters() if p.requires_grad]
        head_lr = self.hparams.model_cfg.get("head_lr")
        groups = [{"params": head_params, "lr": cfg["head_lr"] if head_lr is None else head_lr}]
        if encoder_params and not self.frozen_encoder:
            groups.append({"params": encoder_params, "lr": cfg["lr"]})
        params = [p for group in groups for p in group["params"]]
        fused = cfg.get("fused")
        if fused is None:  # Lightning's mixed-precision plugin cannot clip the gradients of a fused optimizer
            fused = (bool(params) and all(p.device.type in FUSED_ADAMW_DEVICES for p in params)
                     and not isinstance(self.trainer.precision_plugin, MixedPrecision))
        optimizer = torch.optim.AdamW(groups, weight_decay=cfg["weight_decay"], fused=fused or None)
        total = self.trainer.estimated_stepping_batches
        total = int(total) if math.isfinite(total) and total > 0 else 1
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg["warmup_fraction"] * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> RewardModule:
        """Rebuild a module from a Lightning checkpoint, loading it with ``weights_only=True``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 - re-raised with the file named
            raise RuntimeError(f"cannot load checkpoint {path}: {err}") from err
        if "hyper_parameters" not in ckpt or "state_dict" not in ckpt:
            raise RuntimeError(f"{path} is not a vrm training checkpoint (no hyper_parameters/state_dict)")
        module = cls(**ckpt["hyper_parameters"])
        module.load_state_dict(ckpt["state_dict"])
        return module.eval()
