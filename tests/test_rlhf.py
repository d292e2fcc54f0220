"""vrm-rlhf: its configs compose (the CPU default and the GPU recipes: any HF causal LM as policy, any export as gold)
and a tiny run goes end to end through TRL's GRPOTrainer (tiny SFT policy, tiny VRM export, a few steps), writes its
held-out metrics, and resumes from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_experiment

from vrm.config.compose import compose_config
from vrm.rlhf.run import as_config, check_config, split_prompts

METRICS = {"step", "gold", "proxy", "kl", "sqrt_kl", "cue_rate", "length", "unparseable", "reward_seconds",
           "step_seconds"}


def compose(overrides: list[str], tmp_path: Path):
    return as_config(compose_config(overrides, tmp_path, config_name="rlhf"))


@pytest.mark.parametrize("overrides", [
    [],
    ["reward=proxy"],
    ["reward=export", "reward.path=exports/bt"],
    ["reward=conservative", "reward.path=exports/vrm", "reward.conservative_lambda=2"],
    # the GPU protocol: a hub causal LM as policy, an export as gold, another as the optimised reward
    ["policy=qwen2_5_0_5b", "gold=export", "gold.path=exports/gold_rm", "reward=export", "reward.path=exports/bt",
     "prompts.path=prompts.jsonl", "device=cuda"],
])
def test_configs_compose_and_check(overrides, tmp_path):
    cfg = compose(overrides, tmp_path)
    check_config(cfg)
    assert cfg.grpo.beta > 0  # TRL's default is no KL term: ours sets one


def test_a_missing_export_or_bad_combination_is_named(tmp_path):
    with pytest.raises(ValueError, match="reward.kind=export needs reward.path"):
        check_config(compose(["reward=export"], tmp_path))
    with pytest.raises(ValueError, match="gold.kind=export needs gold.path"):
        check_config(compose(["gold=export"], tmp_path))
    with pytest.raises(ValueError, match="gold.kind=synthetic reads the benchmark's prompts only"):
        check_config(compose(["prompts.path=p.jsonl"], tmp_path))
    with pytest.raises(ValueError, match="reward.kind='bogus'"):
        check_config(compose(["reward.kind=bogus"], tmp_path))


def test_held_out_prompts_are_never_trained_on(tmp_path):
    train, held_out = split_prompts(compose(["prompts.num_eval=40"], tmp_path))
    assert len(held_out) == 40 and len(train) == 6 * 12 * 4 - 40
    assert not set(train) & set(held_out)
    assert all(p.endswith("\n") for p in train + held_out)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    return load_experiment("client_conformance").build_export(tmp_path_factory.mktemp("vrm"), "vrm", "tiny_bert", {})


TINY_RUN = ["policy.sft.num_examples=256", "policy.sft.n_layer=1", "policy.sft.n_embd=32", "policy.sft.n_head=2",
            "policy.sft.vocab_size=400", "policy.sft.epochs=1", "policy.sft.batch_size=32", "grpo.num_generations=2",
            "grpo.prompts_per_step=2", "grpo.max_completion_length=12", "grpo.save_steps=1", "eval.every=1",
            "eval.samples_per_prompt=1", "prompts.num_eval=4", "progress=false", "device=cpu"]


def test_a_tiny_run_through_trl_tracks_the_gold_and_resumes(tiny_export, tmp_path):
    from vrm.rlhf.run import run_rlhf

    overrides = [*TINY_RUN, "reward=conservative", f"reward.path={tiny_export}", "reward.conservative_samples=4",
                 f"cache_dir={tmp_path / 'policies'}"]
    out = tmp_path / "run"
    summary = run_rlhf(compose([*overrides, "grpo.steps=2"], out), out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert METRICS <= set(rows[0])
    assert rows[0]["kl"] == pytest.approx(0.0, abs=0.05)  # the policy starts as the reference
    assert all(0.0 <= r["unparseable"] <= 1.0 and 0.0 <= r["cue_rate"] <= 1.0 for r in rows)
    assert rows[-1]["reward_calls"] == 2 and rows[-1]["reward_seconds"] > 0  # one reward call per GRPO step
    assert summary["reward"] == "vrm_vrm_conservative1"
    assert (out / "policy" / "model.safetensors").is_file()
    assert list((out / "checkpoints").glob("checkpoint-2"))

    resumed = run_rlhf(compose([*overrides, "grpo.steps=3"], out), out)
    assert resumed["resumed_from"].endswith("checkpoint-2")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
