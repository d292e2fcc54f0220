"""What caps the weight recovery of issue 20: the features, the head, or the amount of data?

The VRM's weights are read from ``r = c * w(x)^T g(x, y)``. This diagnostic fixes ``g`` and fits only the weights, by
maximum likelihood on the same training pairs the robustness cells use (benchmark v2, cue strength 0.75, frozen
MiniLM), then scores them as every cell is scored (:func:`~vrm.evaluation.synthetic_eval.weight_recovery_report` on
the test prompts). The aspect scores ``g`` of the training responses are, in turn:

- ``attributes``: the true binary attributes (the ceiling of the inference itself);
- ``ratings``: the noisy 1-5 ratings the model is trained on;
- ``linear``: ratings predicted from the frozen h(x, y) by ridge regression (5-fold out-of-fold predictions, so a
  response's score never saw its own rating);
- ``mlp``: the same with a one-hidden-layer MLP (sklearn ``MLPRegressor``, 128 units, early stopping).

and the weights are, in turn:

- ``category``: one softmax weight vector per prompt category (the true weights' own form: an oracle prompt map);
- ``clusters``: one weight vector per k-means cluster (k = 6, unsupervised) of the training prompts' frozen h(x), a
  test prompt taking its nearest cluster's (the category oracle without the categories);
- ``prompt``: ``softmax(A h(x) + b)`` from the frozen prompt features, as the VRM's posterior (a linear map; L2
  strength picked on the validation pairs' likelihood).

    python experiments/robustness/weight_ceiling.py                  # seeds 0-4 at 400, 1,200, 3,000 pairs
    python experiments/robustness/weight_ceiling.py --summarise      # the table from the cells present

Each (size, seed) cell is a JSON under ``experiments/results/robustness/cells/weight_ceiling/`` (resumable);
the summary is ``experiments/results/robustness/weight_ceiling.md``. Frozen MiniLM features come from the feature
cache the robustness cells filled (or are computed: a minute or two per new data draw on two CPU cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments import cells as cell_runner  # noqa: E402
from experiments.robustness.grids import DEFAULT_STRENGTH, FROZEN_EVAL_SIZES  # noqa: E402

RESULTS = ROOT / "experiments" / "results" / "robustness"
CELLS = "weight_ceiling"
SIZES, SEEDS = (400, 1200, 3000), (0, 1, 2, 3, 4)
G_SOURCES = ("attributes", "ratings", "linear", "mlp")
W_FORMS = ("category", "clusters", "prompt")
PROMPT_L2 = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def fit_weights(g_diff: np.ndarray, groups: np.ndarray, num_groups: int, steps: int = 300) -> np.ndarray:
    """Per-group softmax weights ``(G, K)`` and a global scale maximising ``sum log sigmoid(c * w_g^T (g+ - g-))``.

    ``g_diff`` is ``(N, K)`` (chosen minus rejected scores), ``groups`` ``(N,)`` the group of each pair."""
    x = torch.as_tensor(g_diff, dtype=torch.float64)
    idx = torch.as_tensor(groups, dtype=torch.long)
    logits = torch.zeros(num_groups, x.shape[1], dtype=torch.float64, requires_grad=True)
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([logits, log_scale], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        margin = log_scale.exp() * (torch.softmax(logits, -1)[idx] * x).sum(-1)
        loss = torch.nn.functional.softplus(-margin).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return torch.softmax(logits, -1).detach().numpy()


def fit_prompt_weights(g_diff: np.ndarray, h_x: np.ndarray, l2: float, steps: int = 300
                       ) -> Callable[[np.ndarray], np.ndarray]:
    """``softmax(A h + b)`` and a global scale fitted as :func:`fit_weights`, with ``l2 * |A|^2``; returns w(h)."""
    x = torch.as_tensor(g_diff, dtype=torch.float64)
    mean, std = h_x.mean(0), h_x.std(0) + 1e-8
    h = torch.as_tensor((h_x - mean) / std, dtype=torch.float64)
    a = torch.zeros(h.shape[1], x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([a, b, log_scale], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        margin = log_scale.exp() * (torch.softmax(h @ a + b, -1) * x).sum(-1)
        loss = torch.nn.functional.softplus(-margin).mean() + l2 * (a ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    a_np, b_np = a.detach().numpy(), b.detach().numpy()

    def weights(h_new: np.ndarray) -> np.ndarray:
        logits = ((h_new - mean) / std) @ a_np + b_np
        logits -= logits.max(-1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(-1, keepdims=True)

    return weights


def pair_log_likelihood(weights: np.ndarray, g_diff: np.ndarray) -> float:
    """Mean log sigmoid of ``w^T (g+ - g-)`` at the best global scale (a 1-d fit): how well weights explain labels."""
    margins = torch.as_tensor((weights * g_diff).sum(-1), dtype=torch.float64)
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_scale], max_iter=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-log_scale.exp() * margins).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return -float(closure().detach())


def out_of_fold(features: np.ndarray, targets: np.ndarray, kind: str, seed: int, folds: int = 5) -> np.ndarray:
    """Predictions of ``targets`` ``(M, K)`` from ``features`` ``(M, H)``, each from a model that did not see it."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = np.zeros_like(targets, dtype=np.float64)
    for train_idx, held_idx in KFold(folds, shuffle=True, random_state=seed).split(features):
        if kind == "linear":
            model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 4, 11)))
        else:
            model = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(128,), alpha=1e-2, early_stopping=True,
                                                                 max_iter=300, random_state=seed))
        model.fit(features[train_idx], targets[train_idx])
        out[held_idx] = model.predict(features[held_idx]).reshape(len(held_idx), -1)
    return out


def load_split_arrays(seed: int, num_train: int) -> dict[str, dict[str, np.ndarray]]:
    """Per split (train, validation, test): frozen features, categories, true weights, attributes, ratings."""
    from vrm.config.compose import compose_config
    from vrm.data.synthetic import CATEGORIES
    from vrm.training.build import build
    from vrm.training.feature_cache import H_CHOSEN, H_PROMPT, H_REJECTED

    val, test, shifted = FROZEN_EVAL_SIZES
    overrides = ["data=synthetic", "logger=none", "callbacks=none", "encoder=minilm", "encoder.train_mode=frozen",
                 "data.batch_size=16", f"data.synthetic.seed={seed}", f"data.synthetic.cue_strength={DEFAULT_STRENGTH}",
                 f"data.synthetic.num_train={num_train}", f"data.synthetic.num_validation={val}",
                 f"data.synthetic.num_test={test}", f"data.synthetic.num_shifted={shifted}", f"seed={seed}"]
    names = list(CATEGORIES)
    with tempfile.TemporaryDirectory() as tmp:
        run = build(compose_config(overrides, tmp), Path(tmp))
        arrays = {}
        for split in ("train", "validation", "test"):
            feats, rows = run.datamodule.features[split], run.datamodule.data.splits[split]
            arrays[split] = {
                "h_x": feats[H_PROMPT].numpy(), "h_chosen": feats[H_CHOSEN].numpy(),
                "h_rejected": feats[H_REJECTED].numpy(),
                "category": np.array([names.index(c) for c in rows["category"]]),
                "true_weights": np.array(rows["true_weights"]),
                "attr_chosen": np.array(rows["attributes_chosen"]), "attr_rejected": np.array(rows["attributes_rejected"]),
                "rate_chosen": np.array(rows["aspects_chosen"]), "rate_rejected": np.array(rows["aspects_rejected"]),
            }
    return arrays


def aspect_scores(split: dict[str, np.ndarray], source: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(g_chosen, g_rejected)`` of a split's pairs under one :data:`G_SOURCES` entry."""
    if source == "attributes":
        return split["attr_chosen"], split["attr_rejected"]
    if source == "ratings":
        return split["rate_chosen"], split["rate_rejected"]
    n = len(split["category"])
    features = np.concatenate([split["h_chosen"], split["h_rejected"]])
    predicted = out_of_fold(features, np.concatenate([split["rate_chosen"], split["rate_rejected"]]), source, seed)
    return predicted[:n], predicted[n:]


def column_correlations(a: np.ndarray, b: np.ndarray) -> list[float]:
    return [float(np.corrcoef(a[:, k], b[:, k])[0, 1]) for k in range(a.shape[1])]


def prompt_clusters(train_h: np.ndarray, test_h: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means clusters of the training prompts' features: ``(train labels, test labels)`` (test by nearest centre)."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import normalize

    kmeans = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(normalize(train_h))
    return kmeans.labels_, kmeans.predict(normalize(test_h))


def category_probe(train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> float:
    """Test accuracy of a logistic regression of the prompt's category on the frozen h(x) (train prompts only)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    probe.fit(train["h_x"], train["category"])
    return float(probe.score(test["h_x"], test["category"]))


def ceiling_cell(seed: int, num_train: int) -> dict[str, Any]:
    """Recovery, spread and entropy of every (g source, w form) on one data draw, and how well g tracks the truth."""
    from vrm.evaluation.synthetic_eval import weight_recovery_report

    data = load_split_arrays(seed, num_train)
    train, val, test = data["train"], data["validation"], data["test"]
    from sklearn.metrics import adjusted_rand_score

    clusters_train, clusters_test = prompt_clusters(train["h_x"], test["h_x"], k=6, seed=seed)
    record: dict[str, Any] = {"seed": seed, "num_train": num_train, "fits": {}, "g_vs_attributes": {},
                              "category_from_prompt_acc": category_probe(train, test),
                              "clusters_vs_categories_ari": float(adjusted_rand_score(test["category"], clusters_test))}
    for source in G_SOURCES:
        g_pos, g_neg = aspect_scores(train, source, seed)
        record["g_vs_attributes"][source] = column_correlations(
            np.concatenate([g_pos, g_neg]), np.concatenate([train["attr_chosen"], train["attr_rejected"]]))
        per_category = fit_weights(g_pos - g_neg, train["category"], len(np.unique(test["category"])))
        record["fits"][f"{source}/category"] = weight_recovery_report(per_category[test["category"]],
                                                                      test["true_weights"])
        per_cluster = fit_weights(g_pos - g_neg, clusters_train, 6)
        record["fits"][f"{source}/clusters"] = weight_recovery_report(per_cluster[clusters_test], test["true_weights"])
        val_pos, val_neg = aspect_scores(val, source if source == "attributes" else "ratings", seed)
        best = max(PROMPT_L2, key=lambda l2: pair_log_likelihood(
            fit_prompt_weights(g_pos - g_neg, train["h_x"], l2)(val["h_x"]), val_pos - val_neg))
        w_of = fit_prompt_weights(g_pos - g_neg, train["h_x"], best)
        record["fits"][f"{source}/prompt"] = {**weight_recovery_report(w_of(test["h_x"]), test["true_weights"]),
                                              "l2": best}
    return record


def summarise(results: Path = RESULTS) -> str:
    """The markdown table of every (size, g source, w form): mean ± sd over the seeds present."""
    from vrm.evaluation.metrics import WEIGHT_RECOVERY
    from vrm.evaluation.synthetic_eval import ENTROPY, OWN_OBJECTIVE, SPREAD, TRUE_SPREAD

    cells = cell_runner.load_cells(results / "cells", CELLS)

    def stat(values: list[float]) -> str:
        return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    lines = ["# What caps the weight recovery (issue 20)", "",
             "Command: `python experiments/robustness/weight_ceiling.py` (the module docstring says what each row "
             "fixes). Weights fitted by maximum likelihood on the training pairs with the aspect scores g fixed; "
             "recovery, spread and entropy on the test prompts, as in every robustness cell (true weights: spread "
             f"{np.mean([c['fits']['attributes/category'][TRUE_SPREAD] for c in cells]):.3f}). Last column: the "
             "correlation of g with the true attributes on the training responses, per aspect (on_topic, answers, "
             "polite, safe, detail). A logistic regression of the prompt's category on the frozen h(x) scores "
             f"{np.mean([c['category_from_prompt_acc'] for c in cells]):.3f} on the test prompts (mean over cells); "
             "the k-means clusters agree with the categories at an adjusted Rand index of "
             f"{np.mean([c['clusters_vs_categories_ari'] for c in cells]):.3f}.",
             "",
             "| pairs | g | w | weight recovery | spread | entropy | aspects on own objective | corr(g, attributes) "
             "| seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for n in sorted({c["num_train"] for c in cells}):
        group = [c for c in cells if c["num_train"] == n]
        for source in G_SOURCES:
            corr = np.mean([c["g_vs_attributes"][source] for c in group], axis=0)
            for form in W_FORMS:
                fits = [c["fits"][f"{source}/{form}"] for c in group]
                lines.append(f"| {n} | {source} | {form} | {stat([f[WEIGHT_RECOVERY] for f in fits])} | "
                             f"{stat([f[SPREAD] for f in fits])} | {stat([f[ENTROPY] for f in fits])} | "
                             f"{np.mean([f[OWN_OBJECTIVE] for f in fits]):.2f} | "
                             f"{' / '.join(f'{v:.2f}' for v in corr)} | {len(group)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--summarise", action="store_true", help="only rebuild the table from the cells present")
    args = parser.parse_args(argv)
    if not args.summarise:
        plan = [(f"{CELLS}/p{DEFAULT_STRENGTH:g}_n{n}_seed{s}", lambda n=n, s=s: ceiling_cell(s, n))
                for n in args.sizes for s in args.seeds]
        cell_runner.run_cells(plan, RESULTS / "cells", label=CELLS)
    table = summarise()
    out = RESULTS / f"{CELLS}.md"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(table)
    tmp.replace(out)
    print(table)


if __name__ == "__main__":
    main()
