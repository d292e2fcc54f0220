"""What a training run prints: each line once, no notices the project understands, real warnings kept, and the
test results as one table with a column per split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import HANG_TIMEOUT, TINY_OVERRIDES
from torch import nn

from vrm.metric_names import METRICS_FILE
from vrm.training.console import eval_mode_notice, frozen_encoder_notice_silenced, split_table

ROOT = Path(__file__).resolve().parents[1]


def test_split_table_puts_each_value_once_under_its_split():
    metrics = {"test/acc": 0.6875, "shifted/acc": 0.5, "test/kl_w": 0.43549, "shifted/kl_w": 0.42195,
               "val/acc": 1.0, "test/only": 2.0}
    assert split_table(metrics, ["test", "shifted"]).splitlines() == [
        "Test metric    test  shifted",
        "-----------  ------  -------",
        "acc          0.6875   0.5000",
        "kl_w         0.4355   0.4219",
        "only         2.0000",
    ]


def warnings_from(model: nn.Module, encoder: nn.Module | None, count: int) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with frozen_encoder_notice_silenced(model, encoder):
            warnings.warn(eval_mode_notice(count) + " This may lead to unexpected behavior.", UserWarning,
                          stacklevel=1)
    return [str(w.message) for w in caught]


def test_the_eval_mode_notice_is_silenced_only_for_exactly_the_frozen_encoder():
    encoder = nn.Sequential(nn.Linear(2, 2), nn.Dropout())  # 3 modules
    head = nn.Linear(2, 1)
    model = nn.ModuleDict({"encoder": encoder, "head": head})
    encoder.eval()
    assert warnings_from(model, encoder, 3) == []
    assert len(warnings_from(model, None, 3)) == 1  # not a frozen encoder: the notice stays
    head.eval()  # a head in eval mode by mistake: 4 modules, a real warning
    assert len(warnings_from(model, encoder, 4)) == 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``vrm-train`` on the tiny BERT, frozen, logging every 10 steps of 4 (a real Lightning warning)."""
    tmp_path = tmp_path_factory.mktemp("console")
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VRM_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("logger=")] + [
        "encoder.train_mode=frozen", "trainer.log_every_n_steps=10", f"hydra.run.dir={run_dir}"]
    result = subprocess.run([sys.executable, "-c", "from vrm.cli.train import main; main()", *overrides],
                            capture_output=True, text=True, timeout=HANG_TIMEOUT, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, run_dir


def test_each_lightning_line_appears_once_and_its_tips_not_at_all(tiny_run):
    result, run_dir = tiny_run
    console = result.stdout + result.stderr
    job_log = next(run_dir.glob("*.log")).read_text()  # Hydra's job log
    for line in ("GPU available: False, used: False", "Seed set to 42", "`Trainer.fit` stopped"):
        assert console.count(line) == 1, console[-3000:]
        assert job_log.count(line) == 1
    assert "litlogger" not in console and "litmodels" not in console and "Tip:" not in job_log


def test_the_frozen_encoders_eval_mode_is_not_reported_but_a_real_warning_is(tiny_run):
    result, _ = tiny_run
    assert "in eval mode at the start of training" not in result.stderr
    assert result.stderr.count("is smaller than the logging interval Trainer(log_every_n_steps=10)") == 1


def test_the_test_table_has_a_column_per_split_and_no_dataloader_columns(tiny_run):
    result, run_dir = tiny_run
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    assert "DataLoader" not in result.stdout
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Test metric"))
    assert lines[header].split() == ["Test", "metric", "test", "shifted"]
    acc = next(line for line in lines[header:] if line.startswith("acc "))
    assert acc.split() == ["acc", f"{metrics['test/acc']:.4f}", f"{metrics['shifted/acc']:.4f}"]
