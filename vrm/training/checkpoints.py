"""``checkpoints/last.ckpt``: the run's newest state, whatever the monitored metric did.

Lightning's ``ModelCheckpoint(save_last=True)`` (2.6) writes ``last.ckpt`` after a validation only when a top-k
checkpoint was saved at that step, and at the end of ``fit`` only when it never wrote one: a run whose final
validation did not improve, or that ended between validations (``trainer.max_steps``), kept the state of the last
periodic save, and its final optimizer steps were saved nowhere. :class:`LastCheckpoint` is the one writer of
``last.ckpt`` (``conf/callbacks/default.yaml``).
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` optimizer steps, after every validation, at the end of every
    training epoch and when ``fit`` ends (each at most once per step); no top-k checkpoints."""

    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "save_top_k": 0, "save_last": True})

    def _save_last_now(self, trainer: L.Trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_last_now(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_last_now(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_last_now(trainer)
