"""The GPU check's CPU mode (experiments/gpu_check.py --cpu --tiny: the same code paths on a tiny shape) and the
list of wheels it carries (experiments/gpu_wheels.py). Whether those wheels install where only the GPU machine's
packages are is ``python experiments/gpu_wheels.py simulate`` (it needs the wheels, made from the registry)."""

from __future__ import annotations

import re

import pytest
from conftest import load_experiment

load = load_experiment


def test_carried_wheels_are_what_the_gpu_machine_lacks():
    wheels = load("gpu_wheels")
    names = {wheels.canonical(pin.split("==")[0]) for pin in wheels.carried()}
    assert {"pyro-ppl", "hydra-core", "omegaconf", "datasets", "trl", "antlr4-python3-runtime", "pyarrow"} <= names
    base = wheels.closure(wheels.BASE)
    assert {"torch", "transformers", "lightning", "peft", "accelerate", "numpy"} <= base
    assert not names & base  # nothing the GPU machine already has
    assert not any(re.fullmatch("nvidia-.*|triton|matplotlib|optuna", n) for n in names)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+", pin) for pin in wheels.carried())


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_with_a_tiny_shape(tmp_path):
    from vrm.models.encoder import load_tokenizer

    load_tokenizer("minilm").save_pretrained(tmp_path / "tokenizer")
    check = load("gpu_check")
    text = check.main(["--cpu", "--tiny", "--skip-serving", "--out", str(tmp_path / "gpu_check.md"),
                       "--tokenizer", str(tmp_path / "tokenizer")])
    assert (tmp_path / "gpu_check.md").read_text() == text
    rows = dict(re.findall(r"^\| ([^|]+) \| ([^|]+) \|$", text, re.M))
    assert "failed" not in text, text
    assert re.match(r"\d+\.\d\d \(", rows["VRM step / BT step (LoRA, gradient checkpointing, as qwen2_5_0_5b.yaml)"])
    assert re.match(r"\d+\.\d\d \(", rows["BT step, encoder.length_chunks=2 / 1 (two length-sorted passes vs one "
                                         "padded pass)"])
    assert re.match(r"\d+\.\d\d \(", rows["our BT step / TRL RewardTrainer step (full fine-tuning, bf16)"])
    for head in ("BT", "VRM"):
        value = rows[f"RewardScorer / raw forward, {head} export (pairs/s)"]
        # bfloat16 weights: scorer and raw forward agree to bf16 rounding of a tiny model's rewards.
        assert float(re.search(r"max reward difference ([0-9.e+-]+);", value).group(1)) < 0.05
