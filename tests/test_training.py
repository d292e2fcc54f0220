"""Training end to end on tiny encoders: the loss falls, runs repeat exactly, exports reload identically."""

from __future__ import annotations

import pyro
import pytest
import torch
from conftest import TINY_OVERRIDES, compose_train
from transformers import AutoModelForSequenceClassification

from vrm.cli.train import train_and_export as train
from vrm.models.encoder import load_encoder
from vrm.scoring.export import export_checkpoint
from vrm.scoring.export_folder import EXPORT_INFO
from vrm.scoring.scorer import RewardScorer
from vrm.training.build import architecture, as_container
from vrm.training.datamodule import PreferenceDataModule
from vrm.training.module import ACC_BEST, RewardModule

PROMPTS = ["How do I sort a list in Python?", "Write a short poem about the sea."]
RESPONSES = ["Use the built-in sorted() function; it returns a new list.", "Waves roll in and out."]


def module_and_batch(cfg):
    torch.manual_seed(0)
    enc = load_encoder(cfg.encoder)
    arch = architecture(cfg, enc)
    dm = PreferenceDataModule(cfg.data, enc.tokenizer, enc.kind, use_token_types=True)
    dm.setup()
    module = RewardModule(arch, as_container(cfg.model), as_container(cfg.optim), encoder=enc.model)
    return module, next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("model_type", ["bt", "vrm"])
@pytest.mark.parametrize("encoder", ["tiny_bert", "tiny_llama"])
def test_a_few_steps_lower_the_loss_and_move_every_head_parameter(tmp_path, model_type, encoder):
    cfg = compose_train(TINY_OVERRIDES + [f"model={model_type}", f"encoder={encoder}"], tmp_path)
    module, batch = module_and_batch(cfg)
    before = {n: p.detach().clone() for n, p in module.net.head.named_parameters()}

    def loss() -> float:
        pyro.set_rng_seed(0)
        with torch.no_grad():
            return float(module.pair_forward(batch).loss)

    start = loss()
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    for _ in range(15):
        optimizer.zero_grad()
        module.pair_forward(batch).loss.backward()
        optimizer.step()
    assert loss() < 0.9 * start
    for name, param in module.net.head.named_parameters():
        if name == "score_head.bias":
            continue  # w^T b cancels in r+ - r- (w is shared by the pair): only an aspect MSE loss moves it
        assert not torch.equal(before[name], param), f"{name} did not change"


def test_same_seed_same_metrics(tmp_path):
    overrides = TINY_OVERRIDES + ["trainer.deterministic=true", "callbacks=none"]
    first = train(compose_train(overrides, tmp_path / "a"))
    second = train(compose_train(overrides, tmp_path / "b"))
    assert ACC_BEST in first and "test/acc" in first and "shifted/acc" in first
    assert first == second


@pytest.mark.parametrize("model_type, encoder, extra", [
    ("vrm", "tiny_bert", []), ("vrm", "tiny_bert", ["model.prompt_repr=prefix"]), ("bt", "tiny_llama", []),
    ("vrm", "tiny_llama", [])])
def test_export_then_reload_gives_identical_scores(tmp_path, model_type, encoder, extra):
    cfg = compose_train(TINY_OVERRIDES + [f"model={model_type}", f"encoder={encoder}", *extra,
                                          f"export_dir={tmp_path / 'export'}"], tmp_path)
    metrics = train(cfg)
    best = (tmp_path / "best_checkpoint.txt").read_text().strip()
    trained = RewardModule.from_checkpoint(best)
    tokenizer = RewardScorer.from_pretrained(tmp_path / "export").tokenizer
    expected = RewardScorer(trained.net, tokenizer).score(PROMPTS, RESPONSES)

    exported = RewardScorer.from_pretrained(tmp_path / "export")
    assert exported.score(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-6)
    assert (tmp_path / "export" / EXPORT_INFO).exists()
    assert "test/acc" in metrics

    # The same folder through transformers' Auto class (registered by `import vrm`).
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path / "export").eval()
    encoded = exported.encoder.encode(PROMPTS[0], RESPONSES[0])
    with torch.no_grad():
        out = auto(torch.tensor([encoded.input_ids]), prompt_lengths=torch.tensor([encoded.prompt_length]),
                   token_type_ids=None if encoded.token_type_ids is None else torch.tensor([encoded.token_type_ids]))
    assert out.logits.shape == (1, 1)
    assert float(out.logits[0, 0]) == pytest.approx(expected[0], abs=1e-5)

    # Re-exporting over an existing folder replaces it atomically.
    export_checkpoint(best, tmp_path / "export")
    assert RewardScorer.from_pretrained(tmp_path / "export").score(PROMPTS, RESPONSES) == pytest.approx(expected)


def test_epoch_metrics_are_pair_weighted_means_of_the_batches(tmp_path):
    """Validation metrics are summed per batch and logged once an epoch: with unequal batches (6, 6, 4 pairs) the
    logged val/loss and val/acc must be the pair-weighted means of the batches' own values."""
    import lightning as L

    cfg = compose_train(TINY_OVERRIDES + ["model=bt", "data.eval_batch_size=6"], tmp_path)
    torch.manual_seed(0)
    enc = load_encoder(cfg.encoder)
    dm = PreferenceDataModule(cfg.data, enc.tokenizer, enc.kind, use_token_types=True)
    dm.setup()
    module = RewardModule(architecture(cfg, enc), as_container(cfg.model), as_container(cfg.optim),
                          encoder=enc.model).eval()
    losses, correct, sizes = [], [], []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            out = module.pair_forward(batch)
            losses.append(float(out.loss))
            correct.append(float((out.reward_chosen > out.reward_rejected).sum()))
            sizes.append(len(out.reward_chosen))
    assert sorted(sizes) == [4, 6, 6]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    (logged,) = trainer.validate(module, datamodule=dm, verbose=False)
    assert logged["val/loss"] == pytest.approx(sum(loss * n for loss, n in zip(losses, sizes)) / sum(sizes), rel=1e-5)
    assert logged["val/acc"] == pytest.approx(sum(correct) / sum(sizes), rel=1e-6)


@pytest.mark.parametrize("fused, precision, expected", [(None, "32-true", True), (None, "bf16-mixed", False),
                                                        (False, "32-true", False)])
def test_adamw_is_fused_where_lightning_allows_it(tmp_path, fused, precision, expected):
    import lightning as L

    cfg = compose_train(TINY_OVERRIDES + [f"optim.fused={'null' if fused is None else str(fused).lower()}"],
                        tmp_path)
    module, _ = module_and_batch(cfg)
    module.trainer = L.Trainer(accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False,
                               max_steps=10)
    optimizer = module.configure_optimizers()["optimizer"]
    assert bool(optimizer.defaults["fused"]) is expected
