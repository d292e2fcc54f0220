"""A Lightning callback that scores every split at the end of each training epoch (the robustness experiment).

After each training epoch it computes the model's deterministic rewards (the head's, as an export scores) on the
validation, test and shifted splits, and keeps per split: accuracy, ECE, and the accuracy on the pairs whose cue sits
on the chosen and on the rejected response; at the end of training it writes them, with each split's oracle and
cue-rule accuracies, to ``out`` (JSON). Checkpoint selection is then a lookup: the epoch of best in-distribution
validation accuracy (what a user would pick), or of best cue-balanced validation accuracy (the mean of the two
cue-side accuracies, what a validation set without the shortcut would pick).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from vrm.evaluation import metrics as m
from vrm.evaluation.metrics import WEIGHT_RECOVERY
from vrm.evaluation.synthetic_eval import (
    ENTROPY,
    OWN_OBJECTIVE,
    OWN_RECOVERY,
    SPREAD,
    TRUE_ENTROPY,
    TRUE_SPREAD,
    weight_recovery_report,
)
from vrm.evaluation.variance import split_cue_variance
from vrm.training.feature_cache import H_CHOSEN, H_PROMPT, H_REJECTED

#: The splits scored after each epoch.
EVAL_SPLITS = ("validation", "test", "shifted")


def pair_rewards(module, batch: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(B,) deterministic rewards of the chosen and the rejected responses of a token or cached-feature batch, and
    the (B, K) weights E[w | x] of a VRM (None for BT)."""
    if H_CHOSEN in batch:
        h_x, h_chosen, h_rejected = batch.get(H_PROMPT), batch[H_CHOSEN], batch[H_REJECTED]
    else:
        n = batch["input_ids"].shape[0] // 2
        h_xy, h_x = module.net.representations(batch["input_ids"], batch["attention_mask"],
                                               batch.get("token_type_ids"), batch["prompt_lengths"], num_prompts=n)
        h_chosen, h_rejected = h_xy[:n], h_xy[n:]
    head = module.net.head
    out_chosen = head(h_chosen, h_x)
    return out_chosen.reward, head(h_rejected, h_x).reward, out_chosen.weights


def split_truth(split) -> dict[str, float]:
    """The oracle's (true reward, ties 1/2) and the cue rule's accuracy on a synthetic split."""
    diffs = np.subtract(split["true_reward_chosen"], split["true_reward_rejected"])
    return {"oracle_acc": float(np.mean(np.where(np.abs(diffs) > 1e-9, diffs > 0, 0.5))),
            "cue_rule_acc": float(np.mean(split["spurious_chosen"])), "pairs": len(split)}


def split_scores(chosen: np.ndarray, rejected: np.ndarray, cue_on_chosen: np.ndarray, tau: float) -> dict[str, Any]:
    """Accuracy, ECE and the accuracies by the cue's side (NaN where a side has no pairs), and their mean."""
    by_side = {}
    for name, rows in (("acc_cue_on_chosen", cue_on_chosen), ("acc_cue_on_rejected", ~cue_on_chosen)):
        by_side[name] = m.pairwise_accuracy(chosen[rows], rejected[rows]) if rows.any() else float("nan")
    sides = [v for v in by_side.values() if np.isfinite(v)]
    return {"acc": m.pairwise_accuracy(chosen, rejected),
            "ece": m.expected_calibration_error(chosen, rejected, temperature=tau),
            **by_side, "acc_cue_balanced": float(np.mean(sides)) if sides else float("nan")}


def latent_scores(chosen: np.ndarray, rejected: np.ndarray, weights: np.ndarray | None, split) -> dict[str, Any]:
    """The cue's and the truth's shares of the reward differences' variance (vrm.evaluation.variance) and, for a
    VRM, the weights' recovery of the true weights, their spread and entropy (vrm.evaluation.synthetic_eval)."""
    scores: dict[str, Any] = dict(split_cue_variance(chosen, rejected, split))
    if weights is not None:
        report = weight_recovery_report(weights, np.asarray(split["true_weights"], dtype=np.float64))
        scores.update({k: report[k] for k in (WEIGHT_RECOVERY, SPREAD, TRUE_SPREAD, ENTROPY, TRUE_ENTROPY,
                                              OWN_OBJECTIVE, OWN_RECOVERY)})
    return scores


class EpochEval(L.Callback):
    """Scores :data:`EVAL_SPLITS` after every training epoch and writes the history to ``out``."""

    def __init__(self, out: str):
        self.out = Path(out)
        self.epochs: list[dict[str, Any]] = []

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        datamodule = trainer.datamodule
        tau = float(pl_module.hparams.model_cfg.get("tau", 1.0))
        pl_module.eval()
        try:
            record: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
            loaders = {"validation": datamodule.val_dataloader(),
                       **dict(zip(datamodule.test_split_names, datamodule.test_dataloader()))}
            for name in EVAL_SPLITS:
                split = datamodule.splits.get(name)
                if split is None or len(split) == 0:
                    continue
                chosen, rejected, weights = [], [], []
                for batch in loaders[name]:
                    batch = {k: v.to(pl_module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                    r_pos, r_neg, w = pair_rewards(pl_module, batch)
                    chosen.append(r_pos.float().cpu())
                    rejected.append(r_neg.float().cpu())
                    if w is not None:
                        weights.append(w.float().cpu())
                chosen_np, rejected_np = torch.cat(chosen).numpy(), torch.cat(rejected).numpy()
                record[name] = split_scores(chosen_np, rejected_np,
                                            np.asarray(split["spurious_chosen"], dtype=bool), tau)
                record[name].update(latent_scores(chosen_np, rejected_np,
                                                  torch.cat(weights).numpy() if weights else None, split))
            self.epochs.append(record)
        finally:
            pl_module.train()

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        splits = trainer.datamodule.splits
        truth = {name: split_truth(splits[name]) for name in ("train", *EVAL_SPLITS) if name in splits}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"epochs": self.epochs, "data": truth}, indent=1) + "\n")
        tmp.replace(self.out)
