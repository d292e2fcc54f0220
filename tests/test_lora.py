"""LoRA (peft), gradient checkpointing and bf16-mixed on tiny stand-ins of the real LLM encoder configs."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import TINY_OVERRIDES, compose_train

from vrm.cli.train import train_and_export as train
from vrm.models.encoder import load_encoder
from vrm.scoring.scorer import RewardScorer
from vrm.training.module import RewardModule

PROMPTS = ["How do I sort a list in Python?", "Write a short poem about the sea."]
RESPONSES = ["Use the built-in sorted() function; it returns a new list.", "Waves roll in and out."]


class RecordInitialState(L.Callback):
    """Keeps a copy of the module's weights as training starts (instantiated by name from the config)."""

    state: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        RecordInitialState.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_lora_trains_only_adapters_and_heads_and_the_checkpoint_reloads(tmp_path):
    cfg = compose_train(TINY_OVERRIDES + [
        "encoder=tiny_llama", "encoder.train_mode=lora", f"export_dir={tmp_path / 'export'}",
        "+callbacks.initial_state._target_=test_lora.RecordInitialState"], tmp_path)
    train(cfg)
    best = (tmp_path / "best_checkpoint.txt").read_text().strip()
    module = RewardModule.from_checkpoint(best)
    assert module.net.encoder.__class__.__name__.startswith("PeftModel")
    assert module.net._takes_position_ids  # read through the peft wrapper
    before, after = RecordInitialState.state, module.state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    adapters = {k for k in after if "lora_" in k}
    assert adapters and adapters <= changed, "every LoRA weight trained"
    assert any(k.startswith("net.head.") for k in changed)
    frozen = {k for k in after if k.startswith("net.encoder.") and "lora_" not in k}
    assert frozen and not frozen & changed, f"base encoder weights changed: {sorted(frozen & changed)[:3]}"

    # The export merges the adapters into plain weights and scores exactly as the LoRA-wrapped checkpoint.
    exported = RewardScorer.from_pretrained(tmp_path / "export")
    expected = RewardScorer(module.net, exported.tokenizer).score(PROMPTS, RESPONSES)
    assert exported.score(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_qwen2_stand_in_trains_two_steps_with_lora_and_checkpointing(tmp_path, precision):
    """encoder=tiny_qwen2 mirrors encoder=qwen2_5_0_5b: LoRA, gradient checkpointing, decoder-only."""
    cfg = compose_train(TINY_OVERRIDES + ["encoder=tiny_qwen2", "trainer.max_steps=2", "callbacks=none",
                                          f"trainer.precision={precision}"], tmp_path)
    assert cfg.encoder.train_mode == "lora" and cfg.encoder.gradient_checkpointing
    metrics = train(cfg)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert "test/acc" in metrics


def test_lora_adapters_get_gradients_through_gradient_checkpointing(tmp_path):
    cfg = compose_train(TINY_OVERRIDES + ["encoder=tiny_qwen2"], tmp_path)
    enc = load_encoder(cfg.encoder)
    enc.model.train()
    trainable = {n for n, p in enc.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.randint(5, 100, (2, 12))
    enc.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.sum().backward()
    missing = [n for n, p in enc.model.named_parameters() if p.requires_grad and "lora_B" in n and p.grad is None]
    assert not missing, f"no gradient reached {missing[:3]}"


@pytest.mark.parametrize("option, bad", [("train_mode", "adapters"), ("lora.r", "0"), ("dtype", "int8")])
def test_bad_lora_options_fail_with_the_key_named(tmp_path, option, bad):
    cfg = compose_train(TINY_OVERRIDES + ["encoder=tiny_qwen2", f"encoder.{option}={bad}"], tmp_path)
    with pytest.raises(ValueError, match=option.split(".")[-1]):
        load_encoder(cfg.encoder)
