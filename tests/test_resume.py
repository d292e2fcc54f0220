"""Exact resume: a vrm-train run SIGKILLed mid-epoch and restarted with ``ckpt_path=last`` ends like an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from vrm.training.module import NONFINITE_METRIC
from vrm.training.resumable import ResumableBatchSampler, ResumableDataLoader

STEPS_PER_EPOCH = 4  # 16 pairs, batch 4
RUN = ["encoder=tiny_bert", "model=vrm", "data.synthetic.num_train=16", "data.synthetic.num_validation=8",
       "data.synthetic.num_test=8", "data.synthetic.num_shifted=8", "data.batch_size=4", "data.eval_batch_size=16",
       "trainer.max_epochs=2", "trainer.deterministic=true", "trainer.enable_progress_bar=false",
       "trainer.enable_model_summary=false", "logger=none", "callbacks.step_checkpoint.every_n_train_steps=1"]


class SlowDown(L.Callback):
    """Sleeps after every training step, so the test can catch the run in the middle of an epoch."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


def start(run_dir: Path, cache: Path, extra: list[str] = ()) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VRM_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", "from vrm.cli.train import main; main()", *RUN, *extra,
                             f"hydra.run.dir={run_dir}", f"paths.log_dir={run_dir.parent / 'logs'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish(proc: subprocess.Popen, timeout: int = 240) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]


def checkpoint_step(path: Path) -> int | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["global_step"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return None


def final_state(run_dir: Path) -> tuple[dict, dict]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return json.loads((run_dir / "metrics.json").read_text()), ckpt["state_dict"]


def epoch_mean_of_train(key: str) -> bool:
    """Lightning does not checkpoint its running epoch means: after a mid-epoch restart ``train/<x>`` and
    ``train/<x>_epoch`` of that epoch average only the batches after the restart. Everything else must match."""
    return key.startswith("train/") and not key.endswith("_step") and key != NONFINITE_METRIC


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    cache = tmp_path / "cache"
    baseline = start(tmp_path / "baseline", cache)
    run_dir = tmp_path / "killed"
    killed = start(run_dir, cache, ["+callbacks.slow._target_=test_resume.SlowDown", "+callbacks.slow.seconds=0.5"])
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while (checkpoint_step(last) or 0) < STEPS_PER_EPOCH + 1:  # inside the second epoch
        assert killed.poll() is None, killed.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "no mid-epoch checkpoint in time"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    step = checkpoint_step(last)
    assert step is not None, "last.ckpt does not load after the SIGKILL"
    assert step % STEPS_PER_EPOCH != 0 and step < 2 * STEPS_PER_EPOCH, f"not killed mid-epoch (step {step})"
    assert not (run_dir / "metrics.json").exists()

    finish(start(run_dir, cache, ["ckpt_path=last"]))
    finish(baseline)

    expected_metrics, expected_weights = final_state(tmp_path / "baseline")
    metrics, weights = final_state(run_dir)
    assert metrics.keys() == expected_metrics.keys()
    compared = [key for key in expected_metrics if not epoch_mean_of_train(key)]
    assert {"val/acc_best", "val/loss", "test/loss", "shifted/loss", "train/loss_step"} <= set(compared)
    assert {key: metrics[key] for key in compared} == {key: expected_metrics[key] for key in compared}
    assert weights.keys() == expected_weights.keys()
    for key, value in expected_weights.items():
        assert torch.equal(weights[key], value), key


def test_loader_resumes_after_the_batches_already_consumed():
    data = list(range(20))

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(data, ResumableBatchSampler(len(data), 3, seed=7), collate_fn=list)

    first = loader()
    first.batch_sampler.set_epoch(1)
    batches = list(first)
    it = iter(first)
    consumed = [next(it), next(it)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches_done": 2, "seed": 7}

    resumed = loader()
    resumed.load_state_dict(state)
    resumed.batch_sampler.set_epoch(1)  # Lightning calls set_epoch before the first batch
    assert consumed + list(resumed) == batches
    assert list(resumed) == batches  # the skip applies to the restored epoch only
    assert sorted(sum(batches, [])) == data

    resumed.batch_sampler.set_epoch(2)
    assert list(resumed) != batches  # a new order every epoch, from (seed, epoch) alone
    finished = loader()
    finished.load_state_dict({"epoch": 1, "batches_done": len(batches), "seed": 7})
    assert finished.batch_sampler.epoch == 2


def test_a_truncated_last_checkpoint_is_named_not_loaded(tmp_path):
    from vrm.training.train import resolve_ckpt_path

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="last.ckpt"):
        resolve_ckpt_path("last", tmp_path)
    assert resolve_ckpt_path("last", tmp_path / "elsewhere") is None
