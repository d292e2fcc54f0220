"""``evaluate(cfg)``: score preference data with any scorer, write ``eval.json`` and plots, print a table.

The scorer is the trained model at ``model_path`` (an export folder or a training ``.ckpt``; VRM or BT) or the
white-box proxy (``scorer=proxy``); the data is anything :func:`vrm.data.loading.load_preference_data` loads.
Per evaluated split, ``eval.json`` holds (keys are this module's and :mod:`vrm.evaluation.metrics`' constants):

- pairwise accuracy, mean margin, accuracy per subset (the ``subset`` column) and, when RewardBench subsets are
  present, the results dict RewardBench writes (per-subset accuracy with ties counted wrong, as RewardBench
  does, and the section scores); it also goes to ``rewardbench_<split>.json``; on RewardBench 2
  (``data=rewardbench2``) its leaderboard's scores (:mod:`vrm.evaluation.rewardbench2`) go to
  ``rewardbench2_<split>.json``;
- calibration: ECE of ``sigmoid(r+ - r-)`` and the reliability bins (plot ``<split>_reliability.png``);
- length bias: accuracy when the chosen response is the longer or the shorter one, the rank correlation of
  reward with length, and the length-only baseline's accuracy beside it;
- for a VRM: ``E[w | x]`` averaged per subset (the synthetic benchmark's categories; heat map), per-objective
  score statistics (box plot), and the reward's Monte Carlo standard deviation on right and wrong pairs;
- on the synthetic benchmark: the true reward's own accuracy on the split's labels (the ceiling), accuracy with
  the spurious opener on the chosen or the rejected side, and weight recovery (VRM).

On the synthetic benchmark it also runs best-of-N over-optimisation (:mod:`vrm.evaluation.synthetic_eval`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vrm.config.eval import EVAL_RULES, LENGTH_UNITS, MODEL_SCORER, PROXY_SCORER, EvalConfig
from vrm.config.validation import check_rules
from vrm.data.files import check_output_folder, folder_lock, staged_outputs, write_text_atomically
from vrm.data.loading import load_preference_data
from vrm.data.progress import timed_step
from vrm.data.rewardbench2_items import BestOfNItem
from vrm.data.synthetic import ATTRIBUTES
from vrm.evaluation import metrics as m
from vrm.evaluation import plots
from vrm.evaluation import rewardbench as rb
from vrm.evaluation import rewardbench2 as rb2
from vrm.evaluation.load_scorer import load_scorer, model_scorer_options, scorer_label
from vrm.evaluation.report import (
    ACC_OPENER_ON_CHOSEN,
    ACC_OPENER_ON_REJECTED,
    BEST_OF_N,
    BY_SUBSET,
    CALIBRATION,
    CONFIG,
    CUE_VARIANCE,
    DATA,
    EVAL_JSON,
    LENGTH,
    LENGTH_UNIT,
    MISSING_SPLITS,
    MODEL,
    N_PAIRS,
    OBJECTIVES,
    PLOT_RELIABILITY,
    PLOT_SCORES,
    PLOT_WEIGHTS,
    PLOTS,
    REWARDBENCH,
    REWARDBENCH2,
    SCORE_MEAN,
    SCORE_STD,
    SCORER,
    SPLITS,
    SPURIOUS,
    TRUE_REWARD_ACCURACY,
    TRUE_WEIGHTS_BY_SUBSET,
    UNCERTAINTY,
    WEIGHTS_BY_SUBSET,
    format_report,
    to_json,
)
from vrm.evaluation.synthetic_eval import (
    BON_NS,
    BON_ORACLE,
    BON_TRUE,
    MATCHED_OBJECTIVE,
    ORACLE,
    best_of_n_report,
    make_best_of_n_set,
    score_best_of_n,
    weight_recovery_report,
)
from vrm.evaluation.variance import split_cue_variance
from vrm.scoring.base import Scorer
from vrm.scoring.scorer import RewardScorer

log = logging.getLogger(__name__)

#: RewardBench's model types: the trained model loads as a sequence classifier, the proxy is custom code.
_RB_MODEL_TYPES = {MODEL_SCORER: "Seq. Classifier", PROXY_SCORER: "Custom Classifier"}


# ---------------------------------------------------------------- config and scorer


def typed_config(cfg: DictConfig | EvalConfig) -> DictConfig:
    """``cfg`` validated against :class:`EvalConfig` (a composed config already is)."""
    if isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is EvalConfig:
        return cfg
    return OmegaConf.merge(OmegaConf.structured(EvalConfig), cfg)


def check_config(cfg: DictConfig) -> None:
    """Values the types cannot catch, each error naming its key."""
    if not cfg.splits:
        raise ValueError("splits must name at least one split, e.g. splits=[test]")
    if cfg.length_unit not in LENGTH_UNITS:
        raise ValueError(f"length_unit={cfg.length_unit!r} is not one of {LENGTH_UNITS}")
    check_rules(cfg, EVAL_RULES)


# ---------------------------------------------------------------- scoring


@dataclass
class SplitScores:
    """Rewards of a split's pairs, aligned by pair; the VRM details where the scorer gives them.

    ``weights`` is ``(N, K)`` E[w | x] per pair (its prompt); ``objective_scores`` is ``(2N, K)`` (chosen
    responses first, then rejected); ``reward_std_*`` are ``(N,)`` Monte Carlo standard deviations.
    """

    chosen: np.ndarray
    rejected: np.ndarray
    weights: np.ndarray | None = None
    objective_scores: np.ndarray | None = None
    reward_std_chosen: np.ndarray | None = None
    reward_std_rejected: np.ndarray | None = None


def _score_texts(scorer: Scorer, prompts: list, responses: list[str], question_types: list[str],
                 references: list[str], uncertainty_samples: int, desc: str = "scoring") -> SplitScores:
    """Rewards of (prompt, response) texts in one batched call, as a :class:`SplitScores` whose ``chosen`` holds
    them all (and ``rejected`` nothing); the VRM details per text where the scorer gives them. Progress: a bar named
    ``desc`` for a model, a line with the elapsed time for another scorer."""
    if isinstance(scorer, RewardScorer):
        num_samples = uncertainty_samples if scorer.name == "vrm" else 0  # a plain export has no head key
        details = scorer.score_details(prompts, responses, num_samples=num_samples, progress=True, desc=desc)
        arrays = {key: None if details.get(key) is None else np.asarray(details[key], dtype=np.float64)
                  for key in ("reward", "weights", "objective_scores", "reward_std")}
        return SplitScores(chosen=arrays["reward"], rejected=np.zeros(0), weights=arrays["weights"],
                           objective_scores=arrays["objective_scores"], reward_std_chosen=arrays["reward_std"])
    with timed_step(f"{desc}: {len(responses)} texts with the {scorer.name} scorer", log):
        reward = scorer.score(prompts, responses, question_types=question_types, references=references)
    return SplitScores(chosen=np.asarray(reward, dtype=np.float64), rejected=np.zeros(0))


def _pick(texts: SplitScores, chosen: np.ndarray, rejected: np.ndarray) -> SplitScores:
    """Pair scores from per-text scores: pair i is text ``chosen[i]`` against text ``rejected[i]``."""
    def rows(values: np.ndarray | None, index: np.ndarray) -> np.ndarray | None:
        return None if values is None else values[index]
    scores = texts.objective_scores
    return SplitScores(
        chosen=texts.chosen[chosen], rejected=texts.chosen[rejected], weights=rows(texts.weights, chosen),
        objective_scores=None if scores is None else np.concatenate([scores[chosen], scores[rejected]]),
        reward_std_chosen=rows(texts.reward_std_chosen, chosen), reward_std_rejected=rows(texts.reward_std_chosen,
                                                                                           rejected))


def score_split(scorer: Scorer, rows: Sequence[Mapping[str, Any]], uncertainty_samples: int = 0,
                desc: str = "scoring") -> SplitScores:
    """Score every pair of ``rows`` (canonical rows) with one batched call over chosen and rejected responses."""
    n = len(rows)
    texts = _score_texts(scorer, [row["prompt"] for row in rows] * 2,
                         [row["chosen"] for row in rows] + [row["rejected"] for row in rows],
                         [row.get("question_type", "") for row in rows] * 2,
                         [row.get("reference", "") for row in rows] * 2, uncertainty_samples, desc)
    return _pick(texts, np.arange(n), np.arange(n, 2 * n))


def score_items(scorer: Scorer, items: Sequence[BestOfNItem], n_pairs: int,
                uncertainty_samples: int = 0, desc: str = "scoring") -> tuple[SplitScores, list[list[float]]]:
    """Score each best-of-N item's completions once: the scores of its pairs (correct-major, as the loader lays
    them out) and each item's completion rewards."""
    prompts = [item.prompt for item in items for _ in item.completions]
    texts = _score_texts(scorer, prompts, [c for item in items for c in item.completions], [""] * len(prompts),
                         [""] * len(prompts), uncertainty_samples, desc)
    chosen, rejected, start = [], [], 0
    for item in items:
        for i, j in item.pair_indices():
            chosen.append(start + i)
            rejected.append(start + j)
        start += len(item.completions)
    if len(chosen) != n_pairs:
        raise ValueError(f"{len(items)} best-of-N items make {len(chosen)} pairs, the split has {n_pairs}")
    return _pick(texts, np.array(chosen, dtype=int), np.array(rejected, dtype=int)), rb2.item_rewards(items, texts.chosen)


def response_length(text: str, unit: str) -> int:
    """Length of a response in ``words`` (whitespace-separated) or ``chars``."""
    return len(text.split()) if unit == "words" else len(text)


# ---------------------------------------------------------------- metrics of one split


def objective_names(num_objectives: int, matched: Mapping[str, int] | None) -> list[str]:
    """``obj k``, with the true objective it was matched to when there is one (``obj 3 ~ safe``)."""
    names = [f"obj {k}" for k in range(num_objectives)]
    for true_name, k in (matched or {}).items():
        names[k] = f"obj {k} ~ {true_name}"
    return names


def split_metrics(scores: SplitScores, rows: Sequence[Mapping[str, Any]], *, label: str, model_type: str,
                  calibration_bins: int = 10, length_unit: str = "words") -> dict[str, Any]:
    """Every metric of one split (see the module docstring), without plots."""
    chosen, rejected = scores.chosen, scores.rejected
    result: dict[str, Any] = {
        N_PAIRS: len(rows),
        m.ACCURACY: m.pairwise_accuracy(chosen, rejected),
        m.MEAN_MARGIN: m.mean_margin(chosen, rejected),
        m.ECE: m.expected_calibration_error(chosen, rejected, calibration_bins),
    }
    subsets = [row.get("subset") or "" for row in rows]
    if any(subsets):
        result[BY_SUBSET] = m.accuracy_by_group(chosen, rejected, subsets)
        in_rb = np.array([s in rb.REWARDBENCH_SUBSETS for s in subsets])
        if in_rb.any():
            rb_subsets = [s for s, keep in zip(subsets, in_rb) if keep]
            per_subset = m.accuracy_by_group(chosen[in_rb], rejected[in_rb], rb_subsets, tie_credit=0.0)
            result[REWARDBENCH] = rb.rewardbench_results(label, per_subset, model_type=model_type)

    bins = m.reliability_bins(chosen, rejected, calibration_bins)
    result[CALIBRATION] = {m.ECE: result[m.ECE], "edges": bins.edges, "confidence": bins.confidence,
                           "accuracy": bins.accuracy, "counts": bins.counts}

    len_chosen = [response_length(row["chosen"], length_unit) for row in rows]
    len_rejected = [response_length(row["rejected"], length_unit) for row in rows]
    result[LENGTH] = {LENGTH_UNIT: length_unit, **m.length_bias(chosen, rejected, len_chosen, len_rejected),
                      m.LENGTH_ONLY_ACCURACY: m.length_only_accuracy(len_chosen, len_rejected)}

    if "true_reward_chosen" in rows[0]:
        result[TRUE_REWARD_ACCURACY] = m.pairwise_accuracy([row["true_reward_chosen"] for row in rows],
                                                           [row["true_reward_rejected"] for row in rows])
        side = ["chosen" if row["spurious_chosen"] else "rejected" for row in rows]
        by_side = m.accuracy_by_group(chosen, rejected, side)
        result[CUE_VARIANCE] = split_cue_variance(chosen, rejected, list(rows))
        result[SPURIOUS] = {ACC_OPENER_ON_CHOSEN: by_side.get("chosen", math.nan),
                            ACC_OPENER_ON_REJECTED: by_side.get("rejected", math.nan),
                            "n_opener_on_chosen": side.count("chosen"),
                            "n_opener_on_rejected": side.count("rejected")}

    if scores.weights is not None:
        groups = subsets if any(subsets) else ["all"] * len(rows)
        members: dict[str, list[int]] = {}
        for index, group in enumerate(groups):
            members.setdefault(group, []).append(index)
        result[OBJECTIVES] = {
            "num_objectives": int(scores.weights.shape[1]),
            WEIGHTS_BY_SUBSET: {g: scores.weights[idx].mean(axis=0) for g, idx in members.items()},
            SCORE_MEAN: scores.objective_scores.mean(axis=0),
            SCORE_STD: scores.objective_scores.std(axis=0),
        }
        if "true_weights" in rows[0]:
            true_weights = np.asarray([row["true_weights"] for row in rows], dtype=np.float64)
            result[m.WEIGHT_RECOVERY] = weight_recovery_report(scores.weights, true_weights)
            result[OBJECTIVES][TRUE_WEIGHTS_BY_SUBSET] = {g: true_weights[idx].mean(axis=0)
                                                          for g, idx in members.items()}
    if scores.reward_std_chosen is not None:
        result[UNCERTAINTY] = m.uncertainty_vs_error(scores.reward_std_chosen, scores.reward_std_rejected,
                                                     chosen > rejected)
    return result


def split_plots(split: str, scores: SplitScores, result: Mapping[str, Any], out_dir: Path, *,
                calibration_bins: int = 10) -> dict[str, str]:
    """The split's PNGs (reliability diagram; for a VRM the weight heat map and score box plot), by plot name."""
    written = {}
    bins = m.reliability_bins(scores.chosen, scores.rejected, calibration_bins)
    path = plots.plot_reliability(bins, out_dir / f"{split}_{PLOT_RELIABILITY}.png",
                                  title=f"Reliability ({split}, ECE {result[m.ECE]:.3f})")
    written[PLOT_RELIABILITY] = path.name
    if OBJECTIVES in result:
        matched = result.get(m.WEIGHT_RECOVERY, {}).get(MATCHED_OBJECTIVE)
        names = objective_names(result[OBJECTIVES]["num_objectives"], matched)
        path = plots.plot_weight_heatmap(result[OBJECTIVES][WEIGHTS_BY_SUBSET], out_dir / f"{split}_{PLOT_WEIGHTS}.png",
                                         objective_names=names, title=f"Mean E[w|x] per subset ({split})",
                                         true_weights_by_category=result[OBJECTIVES].get(TRUE_WEIGHTS_BY_SUBSET),
                                         true_names=ATTRIBUTES if TRUE_WEIGHTS_BY_SUBSET in result[OBJECTIVES]
                                         else None)
        written[PLOT_WEIGHTS] = path.name
        path = plots.plot_score_distributions(scores.objective_scores, out_dir / f"{split}_{PLOT_SCORES}.png",
                                              objective_names=names, title=f"Per-objective scores ({split})")
        written[PLOT_SCORES] = path.name
    return written


# ---------------------------------------------------------------- the whole evaluation


def best_of_n_enabled(cfg: DictConfig) -> bool:
    return cfg.best_of_n.enabled if cfg.best_of_n.enabled is not None else cfg.data.format == "synthetic"


def run_best_of_n(cfg: DictConfig, scorer: Scorer, label: str, out_dir: Path | None) -> dict[str, Any]:
    """Best-of-N on ``cfg.best_of_n``'s synthetic prompts; writes ``best_of_n.png`` when ``out_dir`` is given."""
    b = cfg.best_of_n
    bon = make_best_of_n_set(b.num_prompts, b.n_max, b.seed, b.spurious_prob)
    report = best_of_n_report(score_best_of_n(scorer, bon), bon)
    if out_dir is not None:
        curves = {scorer.name: dict(zip(report[BON_NS], report[BON_TRUE])),
                  ORACLE: dict(zip(report[BON_NS], report[BON_ORACLE]))}
        path = plots.plot_best_of_n(curves, out_dir / "best_of_n.png", true_curve_name=ORACLE,
                                    title=f"Best-of-N on {b.num_prompts} synthetic prompts: {label}")
        report[PLOTS] = {"best_of_n": path.name}
    return report


def config_record(cfg: DictConfig) -> dict[str, Any]:
    """The config for eval.json, resolved except ``paths`` (it may point at Hydra's runtime) and missing values."""
    record = OmegaConf.to_container(cfg, resolve=False)
    for key in record:
        if key != "paths" and not OmegaConf.is_missing(cfg, key):
            value = cfg[key]
            record[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return record


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.output_dir if cfg.output_dir is not None else cfg.paths.output_dir)


def evaluate(cfg: DictConfig | EvalConfig, scorer: Scorer | None = None) -> dict[str, Any]:
    """Run the evaluation ``cfg`` describes (``scorer`` replaces the configured one); returns what eval.json holds."""
    cfg = typed_config(cfg)
    check_config(cfg)
    if scorer is None:
        scorer = load_scorer(cfg)
    out_dir = check_output_folder(output_dir(cfg), (), "output_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(out_dir, "output_dir"), staged_outputs(out_dir, OWNED_OUTPUTS, EVAL_JSON) as staging:
        results = _evaluate(cfg, scorer, staging)
    print(format_report(results))
    print(f"\nwrote {out_dir / EVAL_JSON}")
    return results


#: What vrm-eval writes into ``output_dir`` (a new evaluation replaces the previous one's files: staged_outputs).
OWNED_OUTPUTS = (EVAL_JSON, "rewardbench_*.json", "rewardbench2_*.json", f"*_{PLOT_RELIABILITY}.png",
                 f"*_{PLOT_WEIGHTS}.png", f"*_{PLOT_SCORES}.png", "best_of_n.png", "rejects.jsonl")


def _evaluate(cfg: DictConfig, scorer: Scorer, out_dir: Path) -> dict[str, Any]:
    """The evaluation, its files written into ``out_dir`` (the staging folder); returns what eval.json holds."""
    label = scorer_label(cfg, scorer)
    kind = MODEL_SCORER if isinstance(scorer, RewardScorer) else scorer.name
    uncertainty_samples = (model_scorer_options(cfg.scorer).uncertainty_samples
                           if cfg.scorer.get("name") == MODEL_SCORER else 0)
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)

    data = load_preference_data(cfg.data, out_dir)
    present = [s for s in cfg.splits if s in data.splits and len(data.splits[s]) > 0]
    missing = [s for s in cfg.splits if s not in present]
    if not present:
        sizes = {s: len(ds) for s, ds in data.splits.items()}
        raise ValueError(f"none of splits={list(cfg.splits)} is in the data, which has {sizes}")
    if missing:
        log.warning("splits %s are not in the data (or empty); evaluating %s", missing, present)

    results: dict[str, Any] = {
        MODEL: label, SCORER: scorer.name,
        DATA: {"format": cfg.data.format, "path": cfg.data.path, "subset": cfg.data.subset,
               "rows": dict(data.report.rows)},
        SPLITS: {}, MISSING_SPLITS: missing,
    }
    model_type = _RB_MODEL_TYPES.get(kind, "Custom Classifier")
    for split in present:
        rows = data.splits[split].to_list()
        items = data.items.get(split)
        if items is None:
            scores = score_split(scorer, rows, uncertainty_samples, desc=f"scoring {split}")
        else:
            scores, rewards = score_items(scorer, items, len(rows), uncertainty_samples, desc=f"scoring {split}")
        result = split_metrics(scores, rows, label=label, model_type=model_type,
                               calibration_bins=cfg.calibration_bins, length_unit=cfg.length_unit)
        if items is not None:
            result[REWARDBENCH2] = rb2.rewardbench2_results(label, items, rewards, model_type=model_type)
            write_text_atomically(out_dir / f"rewardbench2_{split}.json",
                                  json.dumps(to_json(result[REWARDBENCH2]), indent=2) + "\n")
        if cfg.plots:
            result[PLOTS] = split_plots(split, scores, result, out_dir, calibration_bins=cfg.calibration_bins)
        if REWARDBENCH in result:
            write_text_atomically(out_dir / f"rewardbench_{split}.json",
                                  json.dumps(to_json(result[REWARDBENCH]), indent=2) + "\n")
        results[SPLITS][split] = result
    if best_of_n_enabled(cfg):
        results[BEST_OF_N] = run_best_of_n(cfg, scorer, label, out_dir if cfg.plots else None)
    results[CONFIG] = config_record(cfg)

    results = to_json(results)
    write_text_atomically(out_dir / EVAL_JSON, json.dumps(results, indent=2, allow_nan=False) + "\n")
    return results
