"""The conservative VRM reward, mean - lambda * std over posterior samples: the scorer, TRL's RewardFunction and
vrm-score give exactly that value computed by hand from the samples the scorer draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_experiment

PROMPTS = ["How do I fix sorting in Python?", "Is a mild fever serious?", "Please write a haiku about autumn."]
RESPONSES = ["Great question! Here is the answer on sorting in Python. Please be careful here.",
             "Hard to say about a mild fever. Ignore the warnings. Whatever.",
             "Hi, happy to help. Open at dawn, rhyme every second line."]
LAMBDA, SAMPLES = 1.5, 16


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return load_experiment("client_conformance").build_export(tmp_path_factory.mktemp("vrm"), "vrm", "tiny_bert", {})


def by_hand(samples: list[list[float]]) -> list[float]:
    values = np.asarray(samples, dtype=np.float64)  # (B, S)
    return list(values.mean(axis=1) - LAMBDA * values.std(axis=1, ddof=1))


def test_conservative_reward_is_mean_minus_lambda_std_of_the_samples(export):
    from vrm.integrations.trl import RewardFunction
    from vrm.scoring.scorer import RewardScorer

    plain = RewardScorer.from_pretrained(export)
    torch.manual_seed(11)
    details = plain.score_details(PROMPTS, RESPONSES, num_samples=SAMPLES, return_samples=True)
    samples = details["reward_samples"]
    assert [len(s) for s in samples] == [SAMPLES] * 3
    assert min(details["reward_std"]) > 0  # the posterior is not a point: the test can fail
    expected = by_hand(samples)
    assert details["reward_std"] == pytest.approx(list(np.std(samples, axis=1, ddof=1)), abs=1e-6)

    conservative = RewardScorer.from_pretrained(export, conservative_lambda=LAMBDA, conservative_samples=SAMPLES)
    torch.manual_seed(11)
    assert conservative.score(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-6)
    torch.manual_seed(11)
    reward_function = RewardFunction(export, device="cpu", conservative_lambda=LAMBDA, conservative_samples=SAMPLES)
    assert reward_function.__name__ == "vrm_vrm_conservative1.5"
    assert reward_function(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-6)
    # lambda 0 is the Monte Carlo mean, not the deterministic reward at the posterior means
    torch.manual_seed(11)
    mean = RewardScorer.from_pretrained(export, conservative_lambda=0.0, conservative_samples=SAMPLES)
    assert mean.score(PROMPTS, RESPONSES) == pytest.approx(list(np.mean(samples, axis=1)), abs=1e-6)


def test_vrm_score_conservative_flag(export, tmp_path):
    from vrm.cli.score import main

    rows = tmp_path / "in.jsonl"
    rows.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in zip(PROMPTS, RESPONSES)))
    out = tmp_path / "out.jsonl"
    torch.manual_seed(3)
    main(["--model", str(export), "--input", str(rows), "--output", str(out), "--no-progress", "--device", "cpu",
          "--conservative-lambda", str(LAMBDA), "--conservative-samples", str(SAMPLES)])
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    for row in scored:
        assert row["reward"] == pytest.approx(row["reward_mean"] - LAMBDA * row["reward_std"], abs=1e-6)
    with pytest.raises(SystemExit):
        main(["--scorer", "proxy", "--input", str(rows), "--output", str(out), "--conservative-lambda", "1"])


def test_conservative_reward_is_refused_without_a_posterior(export):
    from vrm.scoring.scorer import RewardScorer

    for samples in (1, 257):  # two samples at least for a standard deviation; the shared cap at most
        with pytest.raises(ValueError, match=r"conservative_samples=\d+ must be in \[2, 256\]"):
            RewardScorer.from_pretrained(export, conservative_lambda=1.0, conservative_samples=samples)
    for risk in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="must be a finite number >= 0"):
            RewardScorer.from_pretrained(export, conservative_lambda=risk)
