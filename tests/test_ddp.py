"""Past one machine: DDP on 2 CPU processes (gloo) matches one process; the FSDP and SLURM configs compose.

The DDP run goes through the real ``vrm-train`` entry point (Lightning relaunches it once per rank).
Setup where the two must agree: the BT head (no Monte Carlo draws, which differ per rank under VRM),
no dropout, and full-batch steps (one process: batch 64 of 64 pairs; two processes: 32 each), so the
all-reduced gradient is the same mean over the same 64 pairs whatever order each sampler draws them in.
Validation and test metrics are averaged over both ranks' halves of each split (sync_dist). What is
left is float summation order: losses agree to 1e-4, accuracies exactly (TOLERANCE below).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from conftest import TINY_OVERRIDES, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from vrm.config import register_configs
from vrm.config.compose import CONFIG_DIR
from vrm.training.train import train

#: Absolute tolerance of DDP-vs-single-process agreement, per metric kind.
TOLERANCE = {"acc": 0.0, "default": 1e-4}
COMPARED = ("val/acc_best", "val/loss", "test/acc", "test/loss", "shifted/acc", "shifted/loss")
COMMON = [o for o in TINY_OVERRIDES if not o.startswith(("data.batch_size", "logger"))] + [
    "model=bt", "trainer.max_epochs=3", "callbacks=none", "trainer.enable_checkpointing=false",
    "++encoder.architecture.hidden_dropout_prob=0.0", "++encoder.architecture.attention_probs_dropout_prob=0.0",
]


def last_values(metrics_csv: Path) -> dict[str, float]:
    """The last logged value of every column of a Lightning CSVLogger file."""
    values: dict[str, float] = {}
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    single = train(compose_train(COMMON + ["data.batch_size=64", "logger=none"], tmp_path / "single"))

    run_dir = tmp_path / "ddp"
    root = str(Path(__file__).resolve().parents[1])  # this checkout's vrm, whichever copy is pip-installed
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    script = Path(sys.executable).parent / "vrm-train"  # the console script; Lightning relaunches it per rank
    command = [sys.executable, str(script if script.exists() else shutil.which("vrm-train")), "trainer=ddp", "trainer.devices=2", "data.batch_size=32",
               "logger=csv", f"hydra.run.dir={run_dir}", *COMMON]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = last_values(next(run_dir.glob("csv/**/metrics.csv")))

    for name in COMPARED:
        tol = TOLERANCE["acc" if name.endswith(("acc", "acc_best")) else "default"]
        assert ddp[name] == pytest.approx(single[name], abs=tol), f"{name}: ddp {ddp[name]} vs {single[name]}"


def test_fsdp_config_builds_its_strategy(tmp_path):
    cfg = compose_train(["trainer=fsdp"], tmp_path)
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    assert type(strategy).__name__ == "FSDPStrategy"
    assert cfg.trainer.precision == "bf16-mixed"


def test_slurm_launcher_config_composes_with_the_submitit_plugin():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 240)
