"""The evaluation runner: a tiny trained VRM (export and .ckpt), the proxy on RewardBench data, weight recovery and
best-of-N on hand-built cases, the vrm-eval CLI, and the VRM-vs-BT experiment script on a tiny budget."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import HANG_TIMEOUT, TINY_OVERRIDES, compose_train
from hydra.errors import ConfigCompositionException
from transformers import AutoTokenizer, BertConfig, BertModel

from vrm.cli.train import train_and_export as train
from vrm.config.eval import register_eval_configs
from vrm.data.loading import load_preference_data
from vrm.data.synthetic import ATTRIBUTES, CATEGORIES
from vrm.evaluation import metrics as m
from vrm.evaluation import rewardbench
from vrm.evaluation import synthetic_eval as se
from vrm.evaluation.evaluate import EVAL_JSON, evaluate
from vrm.proxy import ProxyRewardScorer, resolve_encoder
from vrm.scoring.base import Scorer
from vrm.scoring.scorer import RewardScorer

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
#: Small synthetic splits for evaluation (the test and shifted splits are what is scored).
EVAL_DATA = ["data.synthetic.num_train=8", "data.synthetic.num_validation=8", "data.synthetic.num_test=32",
             "data.synthetic.num_shifted=32"]
SMALL = ["best_of_n.num_prompts=4", "best_of_n.n_max=8", "scorer.uncertainty_samples=8"]


def compose_eval(overrides: list[str], out: Path):
    register_eval_configs()
    return compose_train(overrides, out, config_name="eval")


@pytest.fixture(scope="module")
def tiny_vrm(tmp_path_factory) -> Path:
    """A tiny VRM trained once for this module: its run folder, with the export under ``export/``."""
    out = tmp_path_factory.mktemp("tiny_vrm")
    train(compose_train(TINY_OVERRIDES + [f"export_dir={out / 'export'}"], out))
    return out


def words(text: str) -> int:
    return len(text.split())


def test_eval_of_an_export_writes_every_metric_and_plot(tiny_vrm, tmp_path):
    cfg = compose_eval([f"model_path={tiny_vrm / 'export'}"] + EVAL_DATA + SMALL, tmp_path)
    results = evaluate(cfg)
    assert json.loads((tmp_path / EVAL_JSON).read_text()) == results
    assert results["scorer"] == "vrm" and results["missing_splits"] == []
    assert set(results["splits"]) == {"test", "shifted"}

    # Accuracy, true-reward accuracy and the length-only baseline, recomputed independently of the runner.
    rows = load_preference_data(cfg.data).splits["test"].to_list()
    scorer = RewardScorer.from_pretrained(tiny_vrm / "export")
    prompts = [row["prompt"] for row in rows]
    chosen = np.array(scorer.score(prompts, [row["chosen"] for row in rows]))
    rejected = np.array(scorer.score(prompts, [row["rejected"] for row in rows]))
    test = results["splits"]["test"]
    assert test["n_pairs"] == len(rows) == 32
    assert test[m.ACCURACY] == pytest.approx(np.mean(chosen > rejected))
    assert test[m.MEAN_MARGIN] == pytest.approx(np.mean(chosen - rejected), abs=1e-5)
    longer = sum(words(r["chosen"]) > words(r["rejected"]) for r in rows)
    equal = sum(words(r["chosen"]) == words(r["rejected"]) for r in rows)
    assert test["length"][m.LENGTH_ONLY_ACCURACY] == pytest.approx((longer + equal / 2) / len(rows))
    assert test["length"][m.N_CHOSEN_LONGER] == longer
    true_chosen, true_rejected = (np.array([r[f"true_reward_{side}"] for r in rows]) for side in ("chosen", "rejected"))
    assert test["true_reward_accuracy"] == pytest.approx(
        np.mean(true_chosen > true_rejected) + np.mean(true_chosen == true_rejected) / 2)

    # VRM parts: weights per category on the simplex, uncertainty over every pair, weight recovery, plots.
    objectives = test["objectives"]
    assert set(objectives["weights_by_subset"]) == {r["subset"] for r in rows}
    for weights in objectives["weights_by_subset"].values():
        assert len(weights) == 5 and sum(weights) == pytest.approx(1.0)  # K = 5, the default
    assert len(objectives["score_mean"]) == 5
    for category, true_weights in objectives["true_weights_by_subset"].items():  # drawn beside them on one scale
        assert true_weights == pytest.approx(CATEGORIES[category])
    uncertainty = test["uncertainty"]
    assert uncertainty[m.N_CORRECT] + uncertainty[m.N_WRONG] == 32
    assert uncertainty[m.STD_CORRECT] is None or uncertainty[m.STD_CORRECT] > 0
    recovery = test[m.WEIGHT_RECOVERY]
    assert -1 <= recovery[m.WEIGHT_RECOVERY] <= 1
    assert sorted(recovery[se.MATCHED_OBJECTIVE]) == sorted(ATTRIBUTES)
    assert recovery[se.TRUE_SPREAD] == pytest.approx(se.weight_spread([r["true_weights"] for r in rows]))
    assert 0 <= recovery[se.SPREAD] <= 1 and 0 <= recovery[se.ENTROPY] <= np.log(5) + 1e-9
    shares = test["cue_variance"]  # the variance decomposition of the reward differences
    assert shares["cue_share"] + shares["truth_share"] + shares["unexplained"] == pytest.approx(1.0)
    assert sum(test["calibration"]["counts"]) == 32
    for split in ("test", "shifted"):
        for name in results["splits"][split]["plots"].values():
            assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / results["best_of_n"]["plots"]["best_of_n"]).exists()

    bon = results["best_of_n"]
    assert bon[se.BON_NS] == [1, 2, 4, 8]
    assert all(a <= b + 1e-12 for a, b in zip(bon[se.BON_ORACLE], bon[se.BON_ORACLE][1:]))
    assert all(t <= o + 1e-12 for t, o in zip(bon[se.BON_TRUE], bon[se.BON_ORACLE]))
    assert bon[se.BON_TRUE][0] == pytest.approx(bon[se.BON_ORACLE][0])  # n = 1: everyone takes the first


def test_a_vrm_export_on_rewardbench2_scores_each_completion_once(tiny_vrm, tmp_path):
    from vrm.evaluation import rewardbench2 as rb2

    hub = Path(__file__).resolve().parent / "fixtures" / "hub" / "reward-bench-2"
    cfg = compose_eval([f"model_path={tiny_vrm / 'export'}", "data=rewardbench2", f"data.path={hub}", "plots=false",
                        "splits=[test]"], tmp_path)
    test = evaluate(cfg)["splits"]["test"]
    data = load_preference_data(cfg.data)
    scorer = RewardScorer.from_pretrained(tiny_vrm / "export")
    items = data.items["test"]
    rewards = [scorer.score([item.prompt] * len(item.completions), list(item.completions)) for item in items]
    assert {k: test["rewardbench2"][k] for k in rb2.REWARDBENCH2_SUBSETS} == pytest.approx(
        rb2.rewardbench2_scores(items, rewards), abs=1e-6)
    rows = data.splits["test"].to_list()  # the pairs' rewards are the items' completion rewards
    chosen = np.array(scorer.score([r["prompt"] for r in rows], [r["chosen"] for r in rows]))
    rejected = np.array(scorer.score([r["prompt"] for r in rows], [r["rejected"] for r in rows]))
    assert test[m.ACCURACY] == pytest.approx(np.mean(chosen > rejected) + 0.5 * np.mean(chosen == rejected))
    assert set(test["objectives"]["weights_by_subset"]) == set(rb2.REWARDBENCH2_SUBSETS)


def test_a_checkpoint_evaluates_like_its_export(tiny_vrm, tmp_path):
    common = EVAL_DATA + ["splits=[test]", "best_of_n.enabled=false", "plots=false", "scorer.uncertainty_samples=0"]
    best = (tiny_vrm / "best_checkpoint.txt").read_text().strip()
    from_ckpt = evaluate(compose_eval([f"model_path={best}"] + common, tmp_path / "ckpt"))
    from_export = evaluate(compose_eval([f"model_path={tiny_vrm / 'export'}"] + common, tmp_path / "export"))
    a, b = from_ckpt["splits"]["test"], from_export["splits"]["test"]
    assert a[m.ACCURACY] == b[m.ACCURACY]
    assert a[m.MEAN_MARGIN] == pytest.approx(b[m.MEAN_MARGIN], abs=1e-6)
    assert "uncertainty" not in a and "best_of_n" not in from_ckpt


def tiny_proxy() -> ProxyRewardScorer:
    """The proxy with a tiny random BERT (MiniLM's tokenizer): fast, deterministic given the seed."""
    import torch

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("minilm"))
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64)).eval()
    return ProxyRewardScorer(model=model, tokenizer=tokenizer)


def test_proxy_on_rewardbench_data_writes_rewardbench_results(tmp_path):
    scorer = tiny_proxy()
    cfg = compose_eval(["scorer=proxy", "data=rewardbench", f"data.path={FIXTURES / 'rewardbench.parquet'}",
                        "splits=[test,shifted]"], tmp_path)
    results = evaluate(cfg, scorer=scorer)
    assert results["scorer"] == "proxy" and results["missing_splits"] == ["shifted"]
    test = results["splits"]["test"]
    assert "objectives" not in test and "uncertainty" not in test and "best_of_n" not in results

    rows = load_preference_data(cfg.data).splits["test"].to_list()
    prompts = [r["prompt"] for r in rows]
    chosen = scorer.score(prompts, [r["chosen"] for r in rows])
    rejected = scorer.score(prompts, [r["rejected"] for r in rows])
    per_subset = {r["subset"]: float(c > x) for r, c, x in zip(rows, chosen, rejected)}
    rb = test["rewardbench"]
    assert rb[rewardbench.RB_MODEL] == "proxy" and rb[rewardbench.RB_MODEL_TYPE] == "Custom Classifier"
    for subset, accuracy in per_subset.items():
        assert rb[subset] == accuracy
    assert rb[rewardbench.RB_SAFETY] == per_subset["refusals-dangerous"]
    counts = rewardbench.REWARDBENCH_EXAMPLE_COUNTS  # the rewardbench package's weights: math-prm 984, hep-python 164
    assert rb[rewardbench.RB_REASONING] == pytest.approx(
        (per_subset["math-prm"] * counts["math-prm"] + per_subset["hep-python"] * counts["hep-python"])
        / (counts["math-prm"] + counts["hep-python"]))
    assert rewardbench.RB_SCORE not in rb  # only two of the four sections are present
    assert json.loads((tmp_path / "rewardbench_test.json").read_text()) == rb
    assert test["accuracy_by_subset"] == pytest.approx(per_subset)


@pytest.mark.parametrize("option", sorted(p.stem for p in (ROOT / "conf" / "scorer").glob("*.yaml")))
def test_every_scorer_option_composes_into_the_eval_config(tmp_path, option):
    cfg = compose_eval([f"scorer={option}", "model_path=x"], tmp_path)
    assert cfg.scorer.name == option and cfg.splits == ["test", "shifted"] and cfg.data.format == "synthetic"


def test_bad_eval_configs_fail_at_start_naming_the_key(tmp_path):
    with pytest.raises(ConfigCompositionException):
        compose_eval(["splitz=[test]"], tmp_path)
    with pytest.raises(ValueError, match="model_path"):
        evaluate(compose_eval([], tmp_path))
    with pytest.raises(ValueError, match="length_unit"):
        evaluate(compose_eval(["model_path=x", "length_unit=bytes"], tmp_path))
    with pytest.raises(FileNotFoundError, match="model_path"):
        evaluate(compose_eval([f"model_path={tmp_path / 'nowhere'}"], tmp_path))
    with pytest.raises(Exception, match="uncertainty_sample"):
        evaluate(compose_eval(["model_path=x", "+scorer.uncertainty_sample=3"], tmp_path))


def test_weight_recovery_of_permuted_weights_is_one():
    true = np.array([list(w) for w in CATEGORIES.values()])  # (6, 5)
    perm = [3, 0, 4, 1, 2]  # learned column j holds true column perm[j]
    learned = np.concatenate([true[:, perm], np.full((6, 2), 0.5)], axis=1)  # two dead objectives
    report = se.weight_recovery_report(learned, true)
    assert report[m.WEIGHT_RECOVERY] == pytest.approx(1.0)
    assert report[se.MATCHED_OBJECTIVE] == {name: perm.index(k) for k, name in enumerate(ATTRIBUTES)}
    # Uniform weights (the ablation without the weight latent) recover nothing.
    assert se.weight_recovery_report(np.full((6, 8), 1 / 8), true)[m.WEIGHT_RECOVERY] == 0.0


def test_own_objective_recovery_needs_no_matching_and_sees_a_swap():
    """Objective i against true column i, no matching: 1 for the truth itself; with two columns swapped the matched
    recovery stays 1 while the own one averages in their cross-correlations, by hand."""
    true = np.array([list(w) for w in CATEGORIES.values()])  # (6, 5)
    assert se.weight_recovery_report(true, true)[se.OWN_RECOVERY] == pytest.approx(1.0)
    swapped = true[:, [1, 0, 2, 3, 4]]
    report = se.weight_recovery_report(swapped, true)
    cross = np.corrcoef(true[:, 0], true[:, 1])[0, 1]
    assert report[m.WEIGHT_RECOVERY] == pytest.approx(1.0)
    assert report[se.OWN_OBJECTIVE] == pytest.approx(0.6)
    assert report[se.OWN_RECOVERY] == pytest.approx((2 * cross + 3) / 5)


class LookupScorer(Scorer):
    """Scores each response by a fixed table (a stand-in for a reward model)."""

    name = "lookup"

    def __init__(self, table: dict[str, float]):
        self.table = table

    def score(self, prompts, responses, *, question_types=None, references=None):
        return [self.table[r] for r in responses]


def test_best_of_n_runner_on_a_fixed_set():
    responses = [["a0", "a1", "a2", "a3"], ["b0", "b1", "b2", "b3"]]
    true = np.array([[0.1, 0.9, 0.2, 0.3], [0.4, 0.3, 0.8, 0.0]])
    spurious = np.array([[False, True, False, True], [False, False, True, True]])
    bon = se.BestOfNSet(prompts=[{"prompt": "p"}, {"prompt": "q"}], responses=responses, true_rewards=true,
                        spurious=spurious)
    # The scorer loves a3 and b3 (the opener carriers), else it agrees with the truth.
    table = {"a0": 0.1, "a1": 0.9, "a2": 0.2, "a3": 5.0, "b0": 0.4, "b1": 0.3, "b2": 0.8, "b3": 5.0}
    scores = se.score_best_of_n(LookupScorer(table), bon)
    assert scores.tolist() == [[0.1, 0.9, 0.2, 5.0], [0.4, 0.3, 0.8, 5.0]]
    report = se.best_of_n_report(scores, bon)
    assert report[se.BON_NS] == [1, 2, 4]
    # n=1: a0, b0; n=2: a1, b0; n=4: a3, b3.
    assert report[se.BON_TRUE] == pytest.approx([(0.1 + 0.4) / 2, (0.9 + 0.4) / 2, (0.3 + 0.0) / 2])
    assert report[se.BON_OWN] == pytest.approx([(0.1 + 0.4) / 2, (0.9 + 0.4) / 2, 5.0])
    assert report[se.BON_SPURIOUS] == pytest.approx([0.0, 0.5, 1.0])
    assert report[se.BON_ORACLE] == pytest.approx([0.25, 0.65, 0.85])
    # Own score ranks the n as 1, 2, 3; the true reward as 2, 3, 1: rho = 1 - 6 * (1 + 1 + 4) / (3 * 8).
    assert report[se.BON_SPEARMAN] == pytest.approx(-0.5)


def test_best_of_n_set_is_seeded_and_varies_across_prompts():
    first, again = se.make_best_of_n_set(3, 4, seed=7), se.make_best_of_n_set(3, 4, seed=7)
    assert first.responses == again.responses and np.array_equal(first.true_rewards, again.true_rewards)
    assert first.shape == (3, 4)
    assert first.responses[0] != first.responses[1]
    assert se.make_best_of_n_set(3, 4, seed=8).responses != first.responses
    for info, row in zip(first.prompts, first.true_rewards):
        assert all(0.0 <= r <= 1.0 for r in row) and info["category"] in CATEGORIES


def test_vrm_eval_without_model_path_fails_in_one_line(tmp_path, monkeypatch, capsys):
    from vrm.cli.eval import main

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["vrm-eval", f"hydra.run.dir={tmp_path}", "hydra/job_logging=none",
                                      "hydra/hydra_logging=none"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "model_path" in err and "Traceback" not in err


def test_vrm_eval_cli_end_to_end(tiny_vrm, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VRM_CACHE": str(tmp_path / "cache")}
    args = [f"model_path={tiny_vrm / 'export'}", *EVAL_DATA, *SMALL, "data.synthetic.num_shifted=0",
            f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run([sys.executable, "-c", "from vrm.cli.eval import main; main()", *args],
                          capture_output=True, text=True, timeout=HANG_TIMEOUT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "run" / EVAL_JSON).read_text())
    assert results["missing_splits"] == ["shifted"]
    assert f"| test | 32 | {results['splits']['test'][m.ACCURACY]:.3f} |" in done.stdout


def load_experiment():
    spec = importlib.util.spec_from_file_location("vrm_vs_bt_run", ROOT / "experiments" / "vrm_vs_bt" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_experiment_variant_and_budget_composes(tmp_path):
    run = load_experiment()
    default = compose_train([], tmp_path)
    full = compose_train(run.train_overrides(run.BUDGETS["full"], "vrm", 0, [], tmp_path / "export"), tmp_path)
    assert full.data == default.data and full.encoder == default.encoder  # the full budget is the default run
    assert full.trainer.max_epochs == default.trainer.max_epochs and full.model == default.model
    for budget in run.BUDGETS.values():
        for variant in run.VARIANTS:
            cfg = compose_train(run.train_overrides(budget, variant, 0, [], tmp_path / "export"), tmp_path)
            assert cfg.model.type == ("bt" if variant == "bt" else "vrm")
        cfg = compose_eval(run.eval_overrides(budget, ["data.max_rows=5"], ["model_path=x"]), tmp_path)
        assert cfg.data.max_rows == 5 and f"best_of_n.n_max={cfg.best_of_n.n_max}" in budget.eval


def test_experiment_runs_end_to_end_on_a_tiny_budget(tmp_path, monkeypatch):
    run = load_experiment()
    tiny = run.Budget(name="tiny", seeds=(0,), data=tuple(EVAL_DATA[:2] + ["data.synthetic.num_test=16",
                                                                           "data.synthetic.num_shifted=16"]),
                      train=tuple(o for o in TINY_OVERRIDES if not o.startswith("data.synthetic")),
                      eval=("best_of_n.num_prompts=2", "best_of_n.n_max=4"))
    # --jobs runs each (variant, seed) as a child process of the script: run the child's exact command line
    # in this process instead (one at a time), which saves starting Python twice.
    lock = threading.Lock()
    children = []

    def child(command, stdout, stderr, env):
        assert command[:2] == [sys.executable, str(ROOT / "experiments" / "vrm_vs_bt" / "run.py")]
        children.append(command)
        with lock:
            run.main(command[2:])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(run.subprocess, "run", child)
    results = run.run_experiment(tiny, ["bt", "vrm"], [], tmp_path / "results", tmp_path / "runs", "pytest", jobs=2)
    assert len(children) == 2 and (tmp_path / "runs" / "vrm" / "seed0" / "run.json").exists()
    saved = json.loads((tmp_path / "results" / "results.json").read_text())
    assert saved["command"] == "pytest" and set(saved["summary"]) == {"bt", "vrm", "proxy"}
    vrm_acc = saved["summary"]["vrm"]["test_accuracy"]
    assert vrm_acc["n"] == 1 and vrm_acc["values"] == [saved["runs"][1]["metrics"]["test_accuracy"]]
    assert saved["summary"]["bt"]["weight_recovery"]["mean"] is None  # BT has no weights
    assert not math.isnan(saved["summary"]["vrm"]["weight_recovery"]["mean"])
    table = (tmp_path / "results" / "results.md").read_text()
    assert "Command: `pytest`" in table and "| accuracy, test (in-distribution) |" in table
    for name in results["plots"]:
        assert (tmp_path / "results" / name).stat().st_size > 0
    assert "accuracy.png" in results["plots"] and "best_of_n.png" in results["plots"]
    # The same command again reuses the finished runs: no child is started.
    again = run.run_experiment(tiny, ["bt", "vrm"], [], tmp_path / "results", tmp_path / "runs", "pytest", jobs=2)
    assert again["runs"] == results["runs"] and len(children) == 2
