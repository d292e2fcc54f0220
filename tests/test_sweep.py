"""Sweeps: the Optuna search config composes, and grid and Optuna multiruns end with a sweep summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml
from conftest import TINY_OVERRIDES, compose_train
from omegaconf import OmegaConf

from vrm.config.compose import CONFIG_DIR
from vrm.evaluation.sweep_summary import SUMMARY_JSON, SUMMARY_MD, summarize_sweep
from vrm.training.train import METRICS_FILE

#: Tiny trials: no checkpoints, no test stage (a sweep optimises a validation metric).
SWEEP_OVERRIDES = TINY_OVERRIDES + ["callbacks=none", "test=false", "data.synthetic.num_train=32"]
METRIC = "val/acc_best"


def run_sweep(tmp_path, overrides: list[str]) -> dict:
    """``vrm-train -m OVERRIDES`` in a subprocess (the real entry point); returns the summary it wrote."""
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-c", "from vrm.cli.train import main; main()", "-m", *overrides,
           f"hydra.sweep.dir={sweep_dir}"]
    env = dict(os.environ, HYDRA_FULL_ERROR="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep_dir / SUMMARY_MD).is_file()
    return json.loads((sweep_dir / SUMMARY_JSON).read_text()) | {"dir": sweep_dir}


def test_hparams_search_config_composes_with_a_frozen_cached_encoder(tmp_path):
    cfg = compose_train(["hparams_search=vrm_optuna"], tmp_path)
    assert cfg.encoder.train_mode == "frozen" and cfg.encoder.feature_cache
    assert cfg.optimized_metric == METRIC
    # Trials keep no checkpoints (each would hold the frozen encoder); Lightning refuses a ModelCheckpoint then.
    assert not cfg.trainer.enable_checkpointing and not cfg.callbacks
    search = yaml.safe_load((CONFIG_DIR / "hparams_search" / "vrm_optuna.yaml").read_text())
    sweeper = search["hydra"]["sweeper"]
    assert sweeper["direction"] == "maximize" and sweeper["n_trials"] == 20
    for key in sweeper["params"]:
        assert OmegaConf.select(cfg, key) is not None, f"swept key {key} is not in the config"


def test_summary_of_job_folders_names_the_best_trial_and_counts_failures(tmp_path):
    results = {0: (4, 0.6), 1: (8, 0.9), 2: (16, None)}  # trial 2 failed: no metrics.json
    for num, (k, acc) in results.items():
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model.num_objectives={k}", "seed=1"]))
        if acc is not None:
            (job / METRICS_FILE).write_text(json.dumps({METRIC: acc, "val/loss": 0.5}))
    summary = summarize_sweep(tmp_path, METRIC)
    assert summary["best"]["number"] == 1 and summary["best"]["params"] == {"model.num_objectives": 8, "seed": 1}
    assert summary["params"] == ["model.num_objectives"] and summary["num_failed"] == 1
    assert summary["plots"] == ["val_acc_best_vs_model.num_objectives.png"]
    assert (tmp_path / summary["plots"][0]).stat().st_size > 0
    table = (tmp_path / SUMMARY_MD).read_text()
    assert "| 2 | 16 | failed |" in table and "Best trial: **1**" in table
    assert summarize_sweep(tmp_path, METRIC, direction="minimize")["best"]["number"] == 0


def test_grid_sweep_writes_a_summary(tmp_path):
    summary = run_sweep(tmp_path, SWEEP_OVERRIDES + ["model.num_objectives=2,4"])
    assert summary["num_trials"] == 2 and summary["num_failed"] == 0
    assert summary["params"] == ["model.num_objectives"]
    assert {t["params"]["model.num_objectives"] for t in summary["trials"]} == {2, 4}
    assert summary["best"]["value"] == max(t["value"] for t in summary["trials"])
    assert (summary["dir"] / "val_acc_best_vs_model.num_objectives.png").is_file()


def test_optuna_sweep_writes_a_summary(tmp_path):
    summary = run_sweep(tmp_path, SWEEP_OVERRIDES + ["hparams_search=vrm_optuna", "hydra.sweeper.n_trials=2"])
    assert summary["num_trials"] == 2 and summary["num_failed"] == 0
    assert set(summary["params"]) == {"model.num_objectives", "model.feature_dim", "model.beta_w", "model.beta_z",
                                      "model.num_samples"}
    assert len(summary["plots"]) == 5
    assert (summary["dir"] / "optimization_results.yaml").is_file()
