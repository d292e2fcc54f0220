"""The console scripts in a subprocess: a fast_dev_run end to end, and one clear line for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_TIMEOUT

TINY = ["encoder=tiny_bert", "data.synthetic.num_train=32", "data.synthetic.num_validation=8",
        "data.synthetic.num_test=8", "data.synthetic.num_shifted=8", "data.batch_size=4", "logger=none"]


def run(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VRM_CACHE": str(tmp_path / "cache")}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-c", "from vrm.cli.train import main; main()", *args,
                           f"hydra.run.dir={tmp_path / 'run'}", f"paths.log_dir={tmp_path / 'logs'}"],
                          capture_output=True, text=True, timeout=HANG_TIMEOUT, env=env)


def test_fast_dev_run_end_to_end(tmp_path):
    result = run(TINY + ["trainer.fast_dev_run=true"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    header = [line.split() for line in result.stdout.splitlines() if line.startswith("Test metric")]
    assert header == [["Test", "metric", "test", "shifted"]], result.stdout[-3000:]  # the test table, a split a column


@pytest.mark.parametrize("override, named", [
    ("model.num_objectivs=4", "num_objectivs"),
    ("model.num_objectives=many", "num_objectives"),
    ("encoder.path=/nonexistent/encoder", "/nonexistent/encoder"),
    ("model.beta_w=-1", "model.beta_w"),
    ("model.num_objectives=0", "model.num_objectives"),
    ("encoder.length_chunks=0", "encoder.length_chunks"),
])
def test_bad_input_gets_one_clear_line(tmp_path, override, named):
    args = ["trainer.fast_dev_run=true", "logger=none", override]
    if "encoder.path" in override:
        args.append("encoder.tokenizer=minilm")
    result = run(args, tmp_path)
    assert result.returncode != 0
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 10, result.stderr  # a short message, not a wall


def test_train_on_a_users_jsonl_file(tmp_path):
    """`vrm-train data=jsonl data.train=... data.validation=...` on the fixture files (issue: own data)."""
    fixtures = Path(__file__).parent / "fixtures"
    result = run(["data=jsonl", f"data.train={fixtures / 'explicit.jsonl'}",
                  f"data.validation={fixtures / 'conversational.jsonl'}", "data.test_fraction=0",
                  "data.batch_size=2", "encoder=tiny_bert", "logger=none", "trainer.max_steps=2",
                  "trainer.enable_progress_bar=false"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["val/acc"] <= 1.0 and "train/loss" in metrics
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
