"""Sweeps: the Optuna search config composes, and grid and Optuna multiruns end with a sweep summary."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import HANG_TIMEOUT, TINY_OVERRIDES, compose_train
from omegaconf import OmegaConf

from vrm.config.compose import CONFIG_DIR
from vrm.evaluation.sweep_summary import SUMMARY_JSON, SUMMARY_MD, summarize_sweep
from vrm.metric_names import METRICS_FILE

#: Tiny trials: no checkpoints, no test stage (a sweep optimises a validation metric).
SWEEP_OVERRIDES = TINY_OVERRIDES + ["callbacks=none", "test=false", "data.synthetic.num_train=32"]
METRIC = "val/acc_best"


def console_script(name: str) -> str:
    """The installed console script ``name`` beside this interpreter (a venv's or the system's ``bin``)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"console script {name!r} is not installed: pip install -e '.[dev]' first")
    return found


def run_sweep(tmp_path, overrides: list[str]) -> dict:
    """``vrm-train -m OVERRIDES``, the installed console script, in a subprocess; returns the summary it wrote."""
    sweep_dir = tmp_path / "sweep"
    cmd = [console_script("vrm-train"), "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    env = dict(os.environ, HYDRA_FULL_ERROR="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_TIMEOUT)
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


@pytest.mark.slow
def test_optuna_sweep_writes_a_summary(tmp_path):
    """The README's ``vrm-train -m hparams_search=vrm_optuna``, shrunk to 2 trials: needs the Optuna plugin installed
    by the package's own dependencies (a fresh venv without it fails with "Could not find 'hydra/sweeper/optuna'")."""
    summary = run_sweep(tmp_path, SWEEP_OVERRIDES + ["hparams_search=vrm_optuna", "hydra.sweeper.n_trials=2"])
    assert summary["num_trials"] == 2 and summary["num_failed"] == 0
    assert summary["metric"] == METRIC and summary["direction"] == "maximize"
    search = yaml.safe_load((CONFIG_DIR / "hparams_search" / "vrm_optuna.yaml").read_text())["hydra"]["sweeper"]
    assert summary["params"] == list(search["params"])  # the declared order
    for trial in summary["trials"]:
        assert 0.0 <= trial["value"] <= 1.0
        params = trial["params"]
        assert params["model.num_objectives"] in (4, 8, 16) and params["model.feature_dim"] in (8, 16, 32)
        assert params["model.num_samples"] in (1, 2, 4, 8)
        assert 0.001 <= params["model.beta_w"] <= 0.2 and 0.001 <= params["model.beta_z"] <= 0.2
    assert summary["best"]["value"] == max(t["value"] for t in summary["trials"])
    # The summary's best trial is the one Optuna itself reports.
    optuna_result = yaml.safe_load((summary["dir"] / "optimization_results.yaml").read_text())
    assert math.isclose(optuna_result["best_value"], summary["best"]["value"])
    assert len(summary["plots"]) == 5 and all((summary["dir"] / plot).is_file() for plot in summary["plots"])
    table = (summary["dir"] / SUMMARY_MD).read_text()
    assert f"Best trial: **{summary['best']['number']}**, {METRIC} = {summary['best']['value']:.4f}" in table


SHORT_TRIALS = SWEEP_OVERRIDES + ["hparams_search=vrm_optuna", "hydra.sweeper.n_trials=2", "trainer.max_steps=2"]


def run_sweep_process(tmp_path, overrides: list[str]) -> subprocess.CompletedProcess:
    """``vrm-train -m OVERRIDES`` as a user runs it (HYDRA_FULL_ERROR unset), in a subprocess."""
    cmd = [console_script("vrm-train"), "-m", *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_TIMEOUT)


@pytest.mark.slow
def test_an_optuna_sweep_of_trials_that_stop_before_any_validation_completes(tmp_path):
    """Issue 25's ``vrm-train -m hparams_search=vrm_optuna hydra.sweeper.n_trials=2 trainer.max_steps=2``: 2 steps end
    every trial before its first validation (4 batches an epoch); each validates once before stopping, so each reports
    val/acc_best, which was None ("Return value must be float-castable", then "No trials are completed yet")."""
    summary = run_sweep(tmp_path, SHORT_TRIALS)
    assert summary["num_trials"] == 2 and summary["num_failed"] == 0
    for trial in summary["trials"]:
        assert 0.0 <= trial["value"] <= 1.0 and trial["failure"] is None
        assert trial["metrics"]["val/acc"] == trial["value"]  # one validation: the best is the only one
    optuna_result = yaml.safe_load((summary["dir"] / "optimization_results.yaml").read_text())
    assert math.isclose(optuna_result["best_value"], summary["best"]["value"])


@pytest.mark.slow
def test_an_optuna_trial_without_validation_fails_with_its_reason_and_the_sweep_goes_on(tmp_path):
    """A trial that cannot validate (trainer.limit_val_batches=0, swept on the command line) is a failed Optuna trial
    with a one-line reason naming the setting; the next trial still runs, and the summary lists the failure. The
    sampler's seed 1 draws limit_val_batches 2, then 0."""
    result = run_sweep_process(tmp_path, SHORT_TRIALS + ["hydra.sweeper.sampler.seed=1",
                                                         "trainer.limit_val_batches=choice(0,2)"])
    assert result.returncode == 0, result.stderr[-3000:]
    reason = ("no val/acc_best (optimized_metric) to report: trainer.limit_val_batches=0 turns validation off; "
              "set it > 0")
    assert f"Failed experiment: {reason}" in result.stdout
    summary = json.loads((tmp_path / "sweep" / SUMMARY_JSON).read_text())
    ok, failed = summary["trials"]
    assert ok["params"]["trainer.limit_val_batches"] == 2 and 0.0 <= ok["value"] <= 1.0
    assert failed["params"]["trainer.limit_val_batches"] == 0 and failed["value"] is None
    assert failed["failure"] == f"TrialFailedError: {reason}"
    assert summary["num_failed"] == 1 and summary["best"]["number"] == ok["number"]
    assert "trainer.limit_val_batches" in summary["params"]  # swept on the command line, so a column
    assert f"| failed: TrialFailedError: {reason} |" in (tmp_path / "sweep" / SUMMARY_MD).read_text()


@pytest.mark.slow
def test_an_optuna_sweep_whose_every_trial_fails_ends_in_one_line_with_a_summary(tmp_path):
    """No trial completes: Optuna's sweeper ends the sweep ("No trials are completed yet"), reported in one line;
    the summary written after each job still lists every trial as failed, with its reason."""
    result = run_sweep_process(tmp_path, SHORT_TRIALS + ["trainer.limit_val_batches=0"])
    assert result.returncode == 1
    assert "error: ValueError: No trials are completed yet." in result.stderr and "Traceback" not in result.stderr
    summary = json.loads((tmp_path / "sweep" / SUMMARY_JSON).read_text())
    assert summary["num_trials"] == summary["num_failed"] == 2 and summary["best"] is None
    assert all("trainer.limit_val_batches=0 turns validation off" in t["failure"] for t in summary["trials"])


@pytest.mark.parametrize("overrides, metrics, named", [
    (["train=false"], {}, "train=false: nothing was fitted or validated; set train=true"),
    (["optimized_metric=val/acc_bset"], {"val/acc": 0.5, "val/acc_best": 0.5},
     "the run logs no such metric; set optimized_metric to one of val/acc, val/acc_best"),
    ([], {"val/acc": float("nan"), "val/acc_best": float("nan")}, "it is nan; the run diverged: lower optim.lr"),
    (["trainer.limit_val_batches=0"], {"train/loss": 0.7}, "trainer.limit_val_batches=0 turns validation off"),
    (["trainer.check_val_every_n_epoch=3", "trainer.max_epochs=2"], {},
     "trainer.check_val_every_n_epoch=3 is more than trainer.max_epochs=2; set it <= trainer.max_epochs"),
    ([], {"train/loss": 0.7}, "validation never ran (is there a validation split?"),
])
def test_a_missing_objective_is_explained_naming_the_setting(tmp_path, overrides, metrics, named):
    from vrm.training.train import missing_objective_reason

    cfg = compose_train(TINY_OVERRIDES + overrides, tmp_path)
    reason = missing_objective_reason(cfg, metrics)
    assert reason.startswith(f"no {cfg.optimized_metric} (optimized_metric) to report: ") and named in reason
    assert "\n" not in reason
