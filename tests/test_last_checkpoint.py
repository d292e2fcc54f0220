"""``checkpoints/last.ckpt`` after a finished run holds the final state: the final optimizer step and weights, also
when the last validation did not save a top-k checkpoint or the run ended between validations (issue 15 item 7)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_OVERRIDES, compose_train

from vrm.training.module import RewardModule
from vrm.training.train import train

#: 56 pairs in batches of 8: 7 optimizer steps an epoch; a periodic save every 5 steps never falls on the end.
RUN = TINY_OVERRIDES + ["model=bt", "data.synthetic.num_train=56", "callbacks=default", "test=false",
                        "callbacks.step_checkpoint.every_n_train_steps=5", "callbacks.model_summary=null"]


@pytest.fixture
def final_state(monkeypatch) -> dict:
    """The module's global step and weights when ``fit`` ends."""
    final: dict = {}
    original = RewardModule.on_train_end

    def on_train_end(self):
        final.update(step=self.trainer.global_step,
                     weights={k: v.detach().clone() for k, v in self.state_dict().items()})
        original(self)

    monkeypatch.setattr(RewardModule, "on_train_end", on_train_end)
    return final


@pytest.mark.parametrize("overrides, steps", [
    (["trainer.max_epochs=3"], 21),
    (["trainer.max_epochs=3", "+callbacks.model_checkpoint.every_n_epochs=2"], 21),  # no top-k save at the end
    (["trainer.max_epochs=3", "trainer.max_steps=13"], 13),  # ends mid-epoch, between validations
])
def test_last_checkpoint_holds_the_final_step_and_weights(tmp_path, final_state, overrides, steps):
    train(compose_train(RUN + overrides, tmp_path))
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final_state["step"] == steps
    assert saved["global_step"] == steps
    assert saved["state_dict"].keys() == final_state["weights"].keys()
    for name, value in final_state["weights"].items():
        assert torch.equal(saved["state_dict"][name], value), name
