"""vrm-demo: stage progress and its estimate, the checks at start, the exit on SIGTERM/Ctrl-C, the final report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HANG_TIMEOUT

from vrm.cli import demo

TINY = ["encoder=tiny_bert", "data.synthetic.num_train=32", "data.synthetic.num_validation=8",
        "data.synthetic.num_test=8", "data.synthetic.num_shifted=8", "data.batch_size=4", "data.eval_batch_size=16",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "logger=none", "eval.best_of_n.num_prompts=4", "eval.best_of_n.n_max=4"]


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_names_the_stage_and_estimates_what_is_left_from_the_finished_stages():
    clock = FakeClock()
    progress = demo.JobProgress([2.0, 1.0, 0.5, 0.5], clock=clock)
    assert progress.start_stage() == ("[vrm-demo] stage 1/4: train VRM (elapsed 0:00, estimate of the time left "
                                      "after stage 1)")
    clock.now += 60  # stage 1 (2 units) took 60 s: 30 s a unit, 2 units left
    assert progress.finish_stage() == "[vrm-demo] stage 1/4 train VRM done in 1:00"
    assert progress.start_stage() == "[vrm-demo] stage 2/4: train BT (elapsed 1:00, about 1:00 left (estimate))"
    clock.now += 20  # inside stage 2: 20 s of the 60 s left are spent
    assert progress.remaining() == pytest.approx(40.0)
    clock.now += 25  # stage 2 (1 unit) took 45 s: (60 + 45) / 3 = 35 s a unit, 1 unit left
    progress.finish_stage()
    assert progress.start_stage() == "[vrm-demo] stage 3/4: evaluate (elapsed 1:45, about 0:35 left (estimate))"


def test_overrides_go_to_training_evaluation_or_both():
    train, evaluation = demo.split_overrides(["model.beta_w=0.1", "data.synthetic.num_test=8",
                                              "eval.best_of_n.enabled=false", "data=jsonl"])
    assert train == ["model.beta_w=0.1", "data.synthetic.num_test=8", "data=jsonl"]
    assert evaluation == ["data.synthetic.num_test=8", "best_of_n.enabled=false", "data=jsonl"]


@pytest.mark.parametrize("extra, named", [
    (["trainer.enable_checkpointing=false"], "trainer.enable_checkpointing=false"),
    (["callbacks=none"], "no best checkpoint"),
    (["train=false"], "train=false"),
    (["encoder=minilm", "encoder.path=/nonexistent/encoder"], "/nonexistent/encoder"),
    (["model.beta_w=-1"], "model.beta_w"),
    (["eval.calibration_bins=0"], "calibration_bins"),
    (["model.num_objectivs=4"], "model.num_objectivs"),
])
def test_what_would_fail_at_the_end_fails_at_the_start(tmp_path, capsys, monkeypatch, extra, named):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--out", str(out), *TINY, *extra])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (out / "vrm").exists()  # nothing was trained


def test_an_unwritable_output_folder_fails_at_the_start(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--out", str(blocker / "demo"), *TINY])
    assert exit_info.value.code == 1
    assert f"--out {blocker / 'demo'} is not writable" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_demo_exits_non_zero_and_says_what_had_finished(tmp_path, signum):
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VRM_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    slow = ["+callbacks.slow._target_=test_resume.SlowDown", "+callbacks.slow.seconds=0.3"]
    proc = subprocess.Popen([sys.executable, "-c", "from vrm.cli.demo import main; main()", "--out", str(out),
                             *TINY, *slow], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    deadline = time.monotonic() + HANG_TIMEOUT
    for line in proc.stdout:
        lines.append(line)
        if "stage 2/4: train BT" in line:
            proc.send_signal(signum)
            break
        assert time.monotonic() < deadline, "stage 2 did not start in time"
    rest, _ = proc.communicate(timeout=HANG_TIMEOUT)
    output = "".join(lines) + rest
    assert proc.returncode == 128 + signum, output[-3000:]
    name = signal.Signals(signum).name
    assert f"vrm-demo: stopped by {name} during stage 2/4 (train BT)" in output
    assert "finished: train VRM\n" in output and f"files so far: {out}" in output
    summary = json.loads((out / demo.SUMMARY_JSON).read_text())
    assert summary["status"] == f"stopped by {name}" and summary["finished_stages"] == [demo.STAGE_TRAIN_VRM]
    assert Path(summary["checkpoints"]["vrm"]).is_file() and f"vrm best checkpoint: {summary['checkpoints']['vrm']}" \
        in output


@pytest.mark.slow
def test_the_demo_runs_four_stages_and_ends_with_the_paths_of_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "demo"
    demo.main(["--out", str(out), *TINY])
    printed = capsys.readouterr().out
    for i, stage in enumerate(demo.STAGES, start=1):
        assert f"[vrm-demo] stage {i}/4: {stage} (elapsed " in printed
    summary = json.loads((out / demo.SUMMARY_JSON).read_text())
    assert summary["status"] == "finished" and summary["finished_stages"] == list(demo.STAGES)
    export = Path(summary["export_dir"])
    assert (export / "config.json").is_file() and f"VRM export: {export}" in printed
    for model in demo.MODELS:
        eval_json = Path(summary["eval_files"][model])
        results = json.loads(eval_json.read_text())
        assert str(eval_json) in printed
        assert summary["results"][model][demo.TEST_ACC] == results["splits"]["test"]["accuracy"]
        assert summary["results"][model][demo.SHIFTED_ACC] == results["splits"]["shifted"]["accuracy"]
    assert summary["plots"] and all(Path(p).is_file() and f"  {p}\n" in printed for p in summary["plots"])
    assert "| vrm | " in (out / demo.SUMMARY_MD).read_text()
