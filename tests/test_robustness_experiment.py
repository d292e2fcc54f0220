"""The robustness experiment's pieces: per-split scores, checkpoint picks, BT feature sharing, one tiny cell."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES, compose_train

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    path = ROOT / "experiments" / "robustness" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"robustness_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_split_scores_by_hand():
    epoch_eval = load("epoch_eval")
    chosen, rejected = np.array([1.0, 0.0, 2.0, 0.0]), np.array([0.0, 1.0, 1.0, 0.0])
    cue = np.array([True, True, False, False])
    scores = epoch_eval.split_scores(chosen, rejected, cue, tau=1.0)
    assert scores["acc"] == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    assert scores["acc_cue_on_chosen"] == pytest.approx(0.5) and scores["acc_cue_on_rejected"] == pytest.approx(0.75)
    assert scores["acc_cue_balanced"] == pytest.approx(0.625)


def test_picks_are_the_first_epoch_of_the_best_criterion():
    run = load("run")
    def epoch(i, acc, balanced, test):
        split = {"acc": test, "ece": 0.1 * i}
        return {"epoch": i, "validation": {"acc": acc, "acc_cue_balanced": balanced}, "test": split, "shifted": split}
    record = {"epochs": [epoch(0, 0.6, 0.7, 0.50), epoch(1, 0.8, 0.5, 0.55), epoch(2, 0.8, 0.6, 0.60)]}
    assert run.selected(record, "acc")["epoch"] == 1 and run.selected(record, "acc")["test_acc"] == 0.55
    assert run.selected(record, "acc_cue_balanced")["epoch"] == 0


def test_a_tiny_grid_runs_and_bt_gets_the_response_features_vrm_cached(tmp_path, monkeypatch):
    run = load("run")
    from vrm.models.encoder import load_encoder
    from vrm.models.modeling_vrm import VRMConfig, VRMForSequenceClassification
    from vrm.training.build import architecture
    from vrm.training.datamodule import PreferenceDataModule
    from vrm.training.feature_cache import compute_features, feature_cache_dir

    tiny = tuple(o for o in TINY_OVERRIDES if not o.startswith(("data.synthetic", "logger")))
    grid = run.Grid("tiny", "tiny", ("bt", "vrm_aspects"), ((0.75, 24, (0,)),),
                    (*tiny, "encoder.train_mode=frozen", "trainer.max_epochs=2"), eval_sizes=(8, 12, 12))
    monkeypatch.setenv("VRM_CACHE", str(tmp_path / "cache"))  # its own cache: the session's holds other tests' files
    run.run_grid(grid, tmp_path / "results", tmp_path / "runs")
    cells = run.load_cells(tmp_path / "results")
    assert sorted(c["method"] for c in cells) == ["bt", "vrm_aspects"]
    for cell in cells:
        assert [e["epoch"] for e in cell["epochs"]] == [0, 1]
        assert cell["data"]["test"]["pairs"] == 12 and 0 <= cell["data"]["shifted"]["cue_rule_acc"] <= 1
    # the BT run read the file shared from the VRM run's cache: it equals BT's own encoding of the same split
    files = list(feature_cache_dir().glob("*.safetensors"))
    assert len(files) == 8  # 4 splits for VRM (with h(x)), their 4 BT twins, and nothing BT encoded itself
    cfg = compose_train(run.cell_overrides(grid, "bt", 0.75, 24, 0, tmp_path / "x.json"), tmp_path / "check")
    L.seed_everything(0)  # the tiny encoder's random weights, as train() draws them with seed=0
    enc = load_encoder(cfg.encoder)
    net = VRMForSequenceClassification(VRMConfig(**architecture(cfg, enc)), encoder=enc.model)
    dm = PreferenceDataModule(cfg.data, enc.tokenizer, enc.kind, net.config.use_token_types)
    dm.setup()
    own = compute_features(net, dm.token_loader(dm.splits["train"]))
    from safetensors.torch import load_file
    shared = [load_file(p) for p in files]
    twin = [f for f in shared if "h_prompt" not in f and f["h_chosen"].shape[0] == 24]
    assert len(twin) == 1 and torch.allclose(twin[0]["h_chosen"], own["h_chosen"], atol=1e-5)
    summary = run.summarise(tmp_path / "results", {"tiny": grid}, "pytest")
    assert set(summary["tiny"]["p0.75_n24"]) == {"bt", "vrm_aspects"}
    assert "| bt |" in (tmp_path / "results" / "results.md").read_text()
    assert json.loads((tmp_path / "results" / "results.json").read_text())["command"] == "pytest"


def test_the_latent_table_pairs_each_method_with_the_best_baseline_by_seed():
    """Issue 20's table: weights and cue share at the picked epoch, and the shifted difference to the BT method of the
    best mean shifted accuracy, paired by seed (by hand: VRM - bt_mlp = +0.1 and +0.3 -> 0.2 ± 0.141)."""
    sys.path.insert(0, str(ROOT))
    tables = importlib.import_module("experiments.robustness.latent_tables")

    def cell(method, seed, shifted, recovery=None):
        split = {"acc": 0.7, "cue_share": 0.1, "truth_share": 0.3}
        test = {**split, **({} if recovery is None else {"weight_recovery": recovery, "spread": 0.4, "entropy": 1.3,
                                                         "matched_to_own_objective": 1.0, "true_spread": 0.41,
                                                         "true_entropy": 1.33})}
        return {"cells": "latents", "method": method, "seed": seed, "strength": 0.75, "num_train": 400,
                "epochs": [{"validation": {"acc": 0.7}, "test": test, "shifted": {**split, "acc": shifted}}]}

    cells = [cell("bt", 0, 0.40), cell("bt", 1, 0.40), cell("bt_mlp", 0, 0.50), cell("bt_mlp", 1, 0.40),
             cell("vrm_rated_joint", 0, 0.60, 0.5), cell("vrm_rated_joint", 1, 0.70, 0.7)]
    lines = tables.latent_table(cells, "latents", ["bt", "bt_mlp", "vrm_rated_joint"])
    assert lines[0].startswith("Best fair baseline on shifted: `bt_mlp`.")
    row = next(line for line in lines if line.startswith("| vrm_rated_joint |"))
    assert "| 0.600 ± 0.141 |" in row  # weight recovery over the two seeds
    assert row.endswith("| 0.200 ± 0.141 | 2 |")
