"""The frozen-encoder feature cache: keys, hits and misses, concurrent writers, cached == uncached training."""

from __future__ import annotations

import multiprocessing as mp
import time

import datasets
import pyro
import pytest
import torch
from conftest import TINY_OVERRIDES, compose_train

from vrm.cli.train import train_and_export as train
from vrm.models.encoder import load_encoder
from vrm.scoring.scorer import RewardScorer
from vrm.training import feature_cache
from vrm.training.build import architecture, as_container
from vrm.training.datamodule import VALIDATION, PreferenceDataModule, tokenizer_fingerprint
from vrm.training.feature_cache import (
    FEATURE_KEYS,
    FeatureDataset,
    attach_cached_features,
    cached_features,
    compute_features,
    encoder_identity,
    feature_cache_dir,
    feature_key,
    feature_key_parts,
    load_features,
    save_features,
    split_fingerprint,
)
from vrm.training.module import RewardModule

FROZEN = TINY_OVERRIDES + ["encoder.train_mode=frozen"]


def frozen_setup(tmp_path, overrides=(), seed=0):
    """(cfg, module, datamodule, encoder identity) for a frozen tiny encoder."""
    cfg = compose_train(FROZEN + list(overrides), tmp_path)
    torch.manual_seed(seed)
    enc = load_encoder(cfg.encoder)
    arch = architecture(cfg, enc)
    module = RewardModule(arch, as_container(cfg.model), as_container(cfg.optim), encoder=enc.model,
                          frozen_encoder=True)
    dm = PreferenceDataModule(cfg.data, enc.tokenizer, enc.kind, module.net.config.use_token_types,
                              cfg.encoder.use_chat_template)
    dm.setup()
    return cfg, module, dm, encoder_identity(cfg.encoder.path, enc.model)


def validation_key(tmp_path, overrides=(), seed=0, tokenizer_fp=None) -> str:
    _, module, dm, enc_id = frozen_setup(tmp_path, overrides, seed)
    split = dm.splits[VALIDATION]
    fp = tokenizer_fp or tokenizer_fingerprint(dm.tokenizer)
    return feature_key(feature_key_parts(module.net, enc_id, fp, split_fingerprint(split)))


def test_the_key_changes_with_every_part_and_only_then(tmp_path):
    base = validation_key(tmp_path)
    assert validation_key(tmp_path) == base
    variants = {
        "weights": validation_key(tmp_path, seed=1),
        "architecture": validation_key(tmp_path, ["encoder.architecture.intermediate_size=48"]),
        "pooling": validation_key(tmp_path, ["encoder.pooling=cls"]),
        "prompt_repr": validation_key(tmp_path, ["model=bt"]),
        "max_length": validation_key(tmp_path, ["data.max_length=48"]),
        "truncation": validation_key(tmp_path, ["data.truncation=truncate_response"]),
        "tokenizer": validation_key(tmp_path, tokenizer_fp="another-tokenizer"),
        "text": validation_key(tmp_path, ["data.synthetic.seed=1"]),
    }
    for part, key in variants.items():
        assert key != base, f"changing the {part} kept the cache key"
    assert len(set(variants.values())) == len(variants)


def test_miss_then_hit_then_recompute_when_the_file_is_damaged(tmp_path, monkeypatch):
    _, module, dm, enc_id = frozen_setup(tmp_path)
    split = dm.splits[VALIDATION]
    fp = tokenizer_fingerprint(dm.tokenizer)
    calls = []
    real = feature_cache.compute_features
    monkeypatch.setattr(feature_cache, "compute_features", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setenv("VRM_CACHE", str(tmp_path / "cache"))

    first = cached_features(module.net, split, dm.token_loader(split), enc_id, fp)
    second = cached_features(module.net, split, dm.token_loader(split), enc_id, fp)
    assert len(calls) == 1
    assert set(first) == set(FEATURE_KEYS) and first["h_chosen"].shape == (len(split), 32)
    for k in first:
        assert torch.equal(first[k], second[k])

    (path,) = feature_cache_dir().glob("*.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    third = cached_features(module.net, split, dm.token_loader(split), enc_id, fp)
    assert len(calls) == 2 and torch.equal(third["h_prompt"], first["h_prompt"])


def _write_many(path: str, value: float, times: int) -> None:
    for _ in range(times):
        save_features(path, {"h_chosen": torch.full((256, 64), value)})


def test_two_processes_writing_the_same_key_leave_a_complete_file(tmp_path):
    path = tmp_path / "features" / "same-key.safetensors"
    ctx = mp.get_context("fork")  # no re-import in the children: the writes overlap, not the start-up
    writers = [ctx.Process(target=_write_many, args=(str(path), float(v), 40)) for v in (1, 2)]
    for w in writers:
        w.start()
    while any(w.is_alive() for w in writers):
        features = load_features(path)  # never a partial file: None (not yet written) or one writer's tensor
        if features is not None:
            values = features["h_chosen"].unique().tolist()
            assert len(values) == 1 and features["h_chosen"].shape == (256, 64)
        time.sleep(0.002)
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert load_features(path)["h_chosen"].unique().tolist()[0] in (1.0, 2.0)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left behind


@pytest.mark.parametrize("model_type", ["vrm", "bt"])
def test_cached_features_give_the_same_loss_and_rewards(tmp_path, model_type):
    _, module, dm, _ = frozen_setup(tmp_path, [f"model={model_type}"])
    batch = next(iter(dm.token_loader(dm.splits[VALIDATION])))
    cached = compute_features(module.net, [batch])
    module.train()
    outs = []
    for b in (batch, cached):
        pyro.set_rng_seed(0)
        outs.append(module.pair_forward(b))
    uncached, from_cache = outs
    for name in ("loss", "reward_chosen", "reward_rejected"):
        torch.testing.assert_close(getattr(from_cache, name), getattr(uncached, name), atol=1e-5, rtol=0)


def test_frozen_training_from_the_cache_exports_a_scorer_that_agrees(tmp_path):
    export = tmp_path / "export"
    cfg = compose_train(FROZEN + [f"export_dir={export}"], tmp_path)
    metrics = train(cfg)
    assert "val/acc_best" in metrics and "test/acc" in metrics
    assert any(feature_cache_dir().glob("*.safetensors"))

    trained = RewardModule.from_checkpoint((tmp_path / "best_checkpoint.txt").read_text().strip())
    scorer = RewardScorer.from_pretrained(export)
    dm = PreferenceDataModule(cfg.data, scorer.tokenizer, trained.net.config.encoder_kind,
                              trained.net.config.use_token_types, cfg.encoder.use_chat_template)
    attach_cached_features(dm, trained.net, encoder_identity(cfg.encoder.path, trained.net.encoder))
    features = dm.features[VALIDATION]
    texts = dm.data.splits[VALIDATION]
    with torch.no_grad():
        from_cache = trained.net.head(features["h_chosen"], features["h_prompt"]).reward
    from_text = scorer.score(texts["prompt"], texts["chosen"])
    assert from_text == pytest.approx(from_cache.tolist(), abs=1e-5)


def test_feature_batches_carry_aspect_ratings_like_token_batches():
    split = datasets.Dataset.from_dict({"aspects_chosen": [[1.0, None], [3.0, 4.0]],
                                        "aspects_rejected": [[0.5, 2.0], [None, None]]})
    features = {k: torch.arange(4.0).view(2, 2) + i for i, k in enumerate(FEATURE_KEYS)}
    batch = FeatureDataset(features, split).collate([1, 0])
    torch.testing.assert_close(batch["h_chosen"], features["h_chosen"][[1, 0]])
    expected = PreferenceDataModule._aspects([split[1], split[0]], "aspects_chosen")
    torch.testing.assert_close(batch["aspects_chosen"], expected, equal_nan=True)
    assert torch.isnan(batch["aspects_rejected"][0]).all()
    with pytest.raises(ValueError, match="rows"):
        FeatureDataset(features, split.select([0]))


def test_tokenizer_fingerprint_is_kept_but_follows_special_token_changes():
    """Computed once per tokenizer object, yet a later change of what decides the ids (an eos token set after
    loading, as for TRL with a BERT tokenizer; an added token) gives a new fingerprint, so no stale cache key."""
    from vrm.models.encoder import load_tokenizer

    tok = load_tokenizer("minilm")
    first = tokenizer_fingerprint(tok)
    assert tokenizer_fingerprint(tok) == first == tokenizer_fingerprint(load_tokenizer("minilm"))
    tok.eos_token = tok.sep_token
    with_eos = tokenizer_fingerprint(tok)
    assert with_eos != first
    tok.add_tokens(["<new-token>"])
    assert tokenizer_fingerprint(tok) not in (first, with_eos)
