"""One LightningModule for every reward model: BT and VRM share the loop and differ only in the model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torchmetrics import MaxMetric
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from vrm.models.modeling_vrm import VRMConfig, VRMForSequenceClassification
from vrm.models.objectives import BTObjective, ObjectiveOutput, VRMObjective

#: Metric names, defined once. Logged as "<stage>/<name>" with stage train, val, test or shifted.
LOSS, ACC, MARGIN = "loss", "acc", "margin"
REWARD_MEAN, REWARD_STD = "reward_mean", "reward_std"
ACC_BEST = "val/acc_best"
TRAIN_STAGE, VAL_STAGE = "train", "val"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; the message names the step and the batch."""


def build_objective(net: VRMForSequenceClassification, model_cfg: dict[str, Any]):
    """The training objective of the configured head (spec defaults live in ``vrm.config.ModelConfig``)."""
    if net.config.head == "bt":
        return BTObjective(net.head, center_coef=model_cfg["center_coef"], tau=model_cfg["tau"])
    return VRMObjective(net.head, num_samples=model_cfg["num_samples"], beta_w=model_cfg["beta_w"],
                        beta_z=model_cfg["beta_z"], tau=model_cfg["tau"], center_coef=model_cfg["center_coef"],
                        aspect_coef=model_cfg["aspect_coef"], aspect_loss=model_cfg["aspect_loss"])


class RewardModule(L.LightningModule):
    """Trains a :class:`VRMForSequenceClassification` (either head) on batches of preference pairs.

    Hyperparameters are plain dicts, so a checkpoint loads with ``torch.load(weights_only=True)`` and
    rebuilds the same architecture without the pretrained files (see :meth:`from_checkpoint`).
    """

    def __init__(self, vrm_config: dict[str, Any], model_cfg: dict[str, Any], optim_cfg: dict[str, Any],
                 tokenizer_path: str | None = None, frozen_encoder: bool = False,
                 test_split_names: list[str] | None = None, encoder: PreTrainedModel | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        self.net = VRMForSequenceClassification(VRMConfig(**vrm_config), encoder=encoder)
        self.frozen_encoder = frozen_encoder
        self.objective = build_objective(self.net, model_cfg)
        self.test_split_names = test_split_names or ["test"]
        self.val_acc_best = MaxMetric()
        self._val_acc_sum = self._val_count = 0.0
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
        cfg = self.hparams.model_cfg
        if cfg.get("kl_warmup_steps") is not None:
            return int(cfg["kl_warmup_steps"])
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        if not math.isfinite(total) or total <= 0:
            return 1
        return max(1, math.ceil(cfg["kl_warmup_fraction"] * total))

    def pair_forward(self, batch: dict[str, torch.Tensor], progress: float = 1.0) -> ObjectiveOutput:
        n = batch["input_ids"].shape[0] // 2
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_encoder):
            h_xy, h_x = self.net.representations(batch["input_ids"], batch["attention_mask"],
                                                 batch.get("token_type_ids"), batch["prompt_lengths"], num_prompts=n)
        aspects = (batch["aspects_chosen"], batch["aspects_rejected"]) if "aspects_chosen" in batch else None
        return self.objective(h_x, h_xy[:n], h_xy[n:], progress=progress, aspects=aspects)

    def _log_stage(self, stage: str, out: ObjectiveOutput, batch_size: int, on_step: bool) -> None:
        margin = out.reward_chosen - out.reward_rejected
        rewards = torch.cat([out.reward_chosen, out.reward_rejected])
        values = {LOSS: out.loss, ACC: (margin > 0).float().mean(), MARGIN: margin.mean(),
                  REWARD_MEAN: rewards.mean(), REWARD_STD: rewards.std() if rewards.numel() > 1 else rewards.sum() * 0}
        values.update(out.terms)
        for name, value in values.items():
            self.log(f"{stage}/{name}", value.detach() if torch.is_tensor(value) else value,
                     on_step=on_step, on_epoch=True, prog_bar=name in (LOSS, ACC), batch_size=batch_size,
                     add_dataloader_idx=False)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        progress = self.global_step / self.kl_warmup_steps
        out = self.pair_forward(batch, progress=progress)
        if not torch.isfinite(out.loss):
            raise NonFiniteLossError(
                f"non-finite training loss {out.loss.item()} at step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); terms: "
                + ", ".join(f"{k}={float(v):.4g}" for k, v in out.terms.items()))
        self._log_stage(TRAIN_STAGE, out, batch["input_ids"].shape[0] // 2, on_step=True)
        return out.loss

    def on_train_start(self) -> None:
        self.val_acc_best.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.pair_forward(batch)
        n = batch["input_ids"].shape[0] // 2
        self._log_stage(VAL_STAGE, out, n, on_step=False)
        self._val_acc_sum += float((out.reward_chosen > out.reward_rejected).sum())
        self._val_count += n

    def on_validation_epoch_end(self) -> None:
        if self._val_count:
            self.val_acc_best.update(torch.tensor(self._val_acc_sum / self._val_count))
            self.log(ACC_BEST, self.val_acc_best.compute(), prog_bar=True)
        self._val_acc_sum = self._val_count = 0.0

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        out = self.pair_forward(batch)
        self._log_stage(self.test_split_names[dataloader_idx], out, batch["input_ids"].shape[0] // 2,
                        on_step=False)

    # -- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.hparams.optim_cfg
        encoder_params = [p for p in self.net.encoder.parameters() if p.requires_grad]
        head_params = [p for p in self.net.head.parameters() if p.requires_grad]
        groups = [{"params": head_params, "lr": cfg["head_lr"]}]
        if encoder_params and not self.frozen_encoder:
            groups.append({"params": encoder_params, "lr": cfg["lr"]})
        optimizer = torch.optim.AdamW(groups, weight_decay=cfg["weight_decay"])
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
