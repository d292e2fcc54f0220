"""experiments/rlhf/run.py: every reward's vrm-rlhf overrides and every reward model's vrm-train overrides compose
and pass the checks; the plan puts seed 0 of every reward first and the weights variant last; the summary computes its
table and plot from cells (hand-made trajectories)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from vrm.config.compose import compose_config
from vrm.rlhf.run import as_config, check_config

ROOT = Path(__file__).resolve().parents[1]


def load(name: str, path: Path):
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


run = load("rlhf_experiment", ROOT / "experiments" / "rlhf" / "run.py")


@pytest.mark.parametrize("reward", list(run.REWARDS))
def test_every_reward_composes(reward, tmp_path):
    experiment = run.Experiment()
    cfg = as_config(compose_config(experiment.rl_overrides(reward, 0), tmp_path, config_name="rlhf"))
    check_config(cfg)
    kind, model, lam = run.REWARDS[reward]
    assert cfg.reward.kind == kind and (lam is None or cfg.reward.conservative_lambda == lam)
    if model is not None:
        train = compose_config([*run.RM_TRAIN, *run.rm_overrides(model)[0]], tmp_path / "rm")
        assert train.encoder.train_mode == "frozen" and train.data.synthetic.cue_strength == 0.95


def test_plan_order():
    keys = [key for key, _ in run.Experiment().cells_for([0, 1], list(run.REWARDS))]
    assert len(keys) == len(set(keys))
    first_seed1 = next(i for i, k in enumerate(keys) if k.endswith("seed1"))
    assert all(k.endswith("seed0") for k in keys[:first_seed1])
    seed0 = keys[:first_seed1]
    assert seed0[-3:] == ["rm/vrm_learned_w/seed0", "rl/vrm_learned_w/seed0", "bon/vrm_learned_w/seed0"]
    assert seed0.index("rm/vrm/seed0") < seed0.index("rl/vrm_conservative_1/seed0")


def test_summary_from_cells(tmp_path):
    summary = load("rlhf_summary", ROOT / "experiments" / "rlhf" / "summary.py")
    rows = [{"step": s, "gold": g, "proxy": p, "sqrt_kl": k, "cue_rate": c} for s, g, p, k, c in
            [(0, 0.4, 0.0, 0.0, 0.5), (10, 0.6, 1.0, 1.0, 0.8), (20, 0.5, 2.0, 2.0, 1.0)]]
    cells = [{"cell": f"rl/bt/seed{s}", "reward": "bt", "seed": s, "rows": rows,
              "summary": {"peak_gold": 0.6 + s / 10, "final_gold": 0.5}} for s in (0, 1)]
    cells.append({"cell": "bon/bt/seed0", "reward": "bt", "seed": 0,
                  "curve": [{"n": 1, "sqrt_kl": 0.0, "gold": 0.4, "reward": 0.0, "cue_rate": 0.5},
                            {"n": 2, "sqrt_kl": 0.55, "gold": 0.45, "reward": 0.3, "cue_rate": 0.7}]})
    out = summary.summarise(cells, tmp_path, "pytest")
    assert out["rl"]["bt"]["peak_gold"]["mean"] == pytest.approx(0.65)
    assert out["rl"]["bt"]["peak_gold"]["std"] == pytest.approx(0.0707107, abs=1e-6)
    assert out["best_of_n"]["bt"]["peak_n"] == 2 and out["best_of_n"]["bt"]["peak_gold"] == 0.45
    assert json.loads((tmp_path / "results.json").read_text())["command"] == "pytest"
    assert "| bt | [0, 1] |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "gold_vs_kl.png").stat().st_size > 0
