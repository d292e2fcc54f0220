"""Reward hacking under optimisation: a policy trained with TRL's GRPO against each reward, gold tracked.

Gao et al. (2022)'s protocol in the synthetic world: the gold is the world's true reward of the attributes a text
expresses (:mod:`vrm.data.synthetic_gold`); every learned reward is trained (frozen MiniLM, the project's own
``train()``, exported) on benchmark v2 pairs whose cue sits on the chosen response with probability 0.95; the synthetic
SFT policy is optimised against it by ``vrm-rlhf`` and its held-out gold, reward, KL, cue rate and unparseable
fraction are logged along the way. Best-of-N from the same SFT policy gives the same axes at KL = log N - (N-1)/N.

Cells (:mod:`experiments.cells`, one JSON each under ``experiments/results/rlhf/cells/``, skipped when present):
``rm/<model>/seed<S>`` (a reward model trained and exported), ``rl/<reward>/seed<S>`` (one GRPO run; a killed run
resumes from its own checkpoint), ``bon/<reward>/seed<S>``. A seed sets the reward model's data draw and training and
the RL run. Run folders go under ``runs/rlhf/``.

    python experiments/rlhf/run.py                  # the grid (resumes; seed 0 of every reward first)
    python experiments/rlhf/run.py --seeds 0        # only seed 0
    python experiments/rlhf/run.py --summarise      # results.json, results.md and plots from the cells present
    python experiments/rlhf/run.py --quick          # a smoke run (tiny budget; results under rlhf_quick/)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.cells import is_done, load_cells, run_cells  # noqa: E402
from experiments.rlhf.summary import summarise  # noqa: E402

#: Reward models trained on the cue-correlated data: name -> vrm-train overrides.
RM_METHODS: dict[str, tuple[str, ...]] = {
    "bt": ("model=bt",),
    # the pairwise aspect loss, as these rows were trained before h20 made "diff" the default
    "bt_aspects": ("model=bt", "model.bt_head=mlp", "model.bt_aspect_heads=5", "model.aspect_loss=bt"),
    # VRM's defaults before issue 20 (model=vrm_v1): what this grid's "vrm" rows were trained with
    "vrm": ("model=vrm_v1",),
}
#: VRM with weights that learn (issue 20): model=vrm's default since branch h20 at 9acae82 (merged here); before it,
#: the stand-in was model.weight_prior=learned model.aspect_loss=mse.
WEIGHTS_VARIANT = ("model=vrm",)
WEIGHTS_SOURCE = "issue 20's default (model=vrm, branch h20 at 9acae82)"
#: Rewards the policy is optimised against: name -> (reward kind, reward model, conservative lambda).
REWARDS: dict[str, tuple[str, str | None, float | None]] = {
    "gold": ("gold", None, None),
    "bt": ("export", "bt", None),
    "bt_aspects": ("export", "bt_aspects", None),
    "vrm": ("export", "vrm", None),
    "vrm_conservative_1": ("conservative", "vrm", 1.0),
    "vrm_conservative_4": ("conservative", "vrm", 4.0),
    "proxy": ("proxy", None, None),
    "vrm_learned_w": ("export", "vrm_learned_w", None),
}
#: Rewards whose rows come last (the weights variant: trained after everything else).
LAST = ("vrm_learned_w",)
SEEDS = (0, 1, 2)
#: The reward models' data and budget (frozen MiniLM heads; the feature cache encodes each data draw once).
RM_TRAIN = ("data=synthetic", "encoder=minilm", "encoder.train_mode=frozen", "trainer.max_epochs=6",
            "data.batch_size=16", "logger=none", "test=false", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "data.synthetic.cue_strength=0.95", "data.synthetic.num_train=1200",
            "data.synthetic.num_validation=200", "data.synthetic.num_test=16", "data.synthetic.num_shifted=16")
#: The RL budget (vrm-rlhf overrides) and best-of-N's largest N.
RL = ("progress=false",)
BON_N_MAX = 32
QUICK_RM = ("data.synthetic.num_train=200", "trainer.max_epochs=1")
QUICK_RL = ("grpo.steps=4", "eval.every=2", "prompts.num_eval=8", "eval.samples_per_prompt=1", "progress=false")


def rm_overrides(model: str) -> tuple[tuple[str, ...], str]:
    if model == "vrm_learned_w":
        return WEIGHTS_VARIANT, WEIGHTS_SOURCE
    return RM_METHODS[model], "RM_METHODS"


class Experiment:
    def __init__(self, quick: bool = False):
        name = "rlhf_quick" if quick else "rlhf"
        self.quick = quick
        self.results = ROOT / "experiments" / "results" / name
        self.cells = self.results / "cells"
        self.runs = ROOT / "runs" / name
        self.policies = ROOT / "runs" / "rlhf" / "policies"

    # ------------------------------------------------------------- cells
    def rm_cell(self, model: str, seed: int) -> dict[str, Any]:
        from vrm.cli.train import train_and_export
        from vrm.config.compose import compose_config

        overrides_of_model, source = rm_overrides(model)
        export = self.runs / "exports" / f"{model}_seed{seed}"
        overrides = [*RM_TRAIN, *(QUICK_RM if self.quick else ()), *overrides_of_model, f"seed={seed}",
                     f"data.synthetic.seed={seed}", f"export_dir={export}"]
        start = time.perf_counter()
        metrics = train_and_export(compose_config(overrides, self.runs / "rm" / f"{model}_seed{seed}"))
        return {"model": model, "seed": seed, "export": str(export), "overrides": overrides, "source": source,
                "metrics": {k: float(v) for k, v in metrics.items()}, "seconds": time.perf_counter() - start}

    def reward_overrides(self, reward: str, seed: int) -> list[str]:
        kind, model, lam = REWARDS[reward]
        overrides = [f"reward={kind}"]
        if model is not None:
            overrides.append(f"reward.path={self.runs / 'exports' / f'{model}_seed{seed}'}")
        if lam is not None:
            overrides.append(f"reward.conservative_lambda={lam}")
        return overrides

    def rl_overrides(self, reward: str, seed: int) -> list[str]:
        return [*(QUICK_RL if self.quick else RL), *self.reward_overrides(reward, seed), f"seed={seed}",
                f"cache_dir={self.policies}"]

    def rl_cell(self, reward: str, seed: int) -> dict[str, Any]:
        from vrm.config.compose import compose_config
        from vrm.rlhf.run import run_rlhf
        from vrm.rlhf.tracking import read_rows

        run_dir = self.runs / "rl" / f"{reward}_seed{seed}"
        overrides = self.rl_overrides(reward, seed)
        summary = run_rlhf(compose_config(overrides, run_dir, config_name="rlhf"), run_dir)
        summary.pop("config", None)
        return {"reward": reward, "seed": seed, "overrides": overrides, "summary": summary,
                "rows": [{k: v for k, v in r.items() if k != "example"} for r in read_rows(run_dir / "metrics.jsonl")],
                "examples": {r["step"]: r["example"] for r in read_rows(run_dir / "metrics.jsonl")}}

    def bon_cell(self, reward: str, seed: int) -> dict[str, Any]:
        from vrm.config.compose import compose_config
        from vrm.rlhf.best_of_n import best_of_n_curve, draw_candidates
        from vrm.rlhf.policy import load_policy, policy_path
        from vrm.rlhf.rewards import SyntheticGold, build_reward
        from vrm.rlhf.run import as_config, split_prompts

        cfg = as_config(compose_config(self.rl_overrides(reward, seed), self.runs / "bon", config_name="rlhf"))
        _, held_out = split_prompts(cfg)
        candidates_file = self.runs / "bon" / f"candidates_seed{seed}_n{BON_N_MAX}.json"
        if candidates_file.is_file():
            candidates = json.loads(candidates_file.read_text())
        else:
            model, tokenizer = load_policy(policy_path(cfg.policy, cfg.prompts.separator, cfg.cache_dir, False))
            candidates = draw_candidates(model, tokenizer, held_out, BON_N_MAX, cfg.grpo.max_completion_length, seed)
            candidates_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = candidates_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(candidates))
            os.replace(tmp, candidates_file)
        fn, _ = build_reward(cfg.reward, cfg.gold, "cpu")
        gold = SyntheticGold(cfg.gold.cue_cost)
        sep = cfg.prompts.separator
        prompts = [c["prompt"][:-len(sep)] for c in candidates for _ in c["texts"]]
        texts = [t for c in candidates for t in c["texts"]]
        start = time.perf_counter()
        flat = fn(prompts, texts)
        seconds = time.perf_counter() - start
        readings = [gold.read(p, t) for p, t in zip(prompts, texts)]
        n = BON_N_MAX

        def rows(values: Sequence[float]) -> list[list[float]]:
            return [list(values[i:i + n]) for i in range(0, len(values), n)]

        curve = best_of_n_curve(rows(flat), rows([r.gold for r in readings]),
                                {"cue_rate": rows([float(r.cue) for r in readings]),
                                 "unparseable": rows([r.unparseable_fraction for r in readings])})
        return {"reward": reward, "seed": seed, "n_max": n, "prompts": len(candidates), "curve": curve,
                "reward_seconds": seconds}

    # ------------------------------------------------------------- the grid
    def cells_for(self, seeds: Sequence[int], rewards: Sequence[str]) -> list[tuple[str, Any]]:
        """Seed by seed (seed 0 of every reward first); per seed the reward models, the RL runs, then best-of-N; the
        rows of :data:`LAST` after all others of the first seed and at the end of each later one."""
        plan: list[tuple[str, Any]] = []
        ordered = [r for r in rewards if r not in LAST] + [r for r in rewards if r in LAST]
        for seed in seeds:
            for reward in ordered:
                kind, model, _ = REWARDS[reward]
                if model is not None and not any(k == f"rm/{model}/seed{seed}" for k, _ in plan):
                    plan.append((f"rm/{model}/seed{seed}", lambda m=model, s=seed: self.rm_cell(m, s)))
                plan.append((f"rl/{reward}/seed{seed}", lambda r=reward, s=seed: self.rl_cell(r, s)))
                plan.append((f"bon/{reward}/seed{seed}", lambda r=reward, s=seed: self.bon_cell(r, s)))
        return plan

    def run(self, seeds: Sequence[int], rewards: Sequence[str], command: str) -> None:
        plan = self.cells_for(seeds, rewards)
        for i in range(len(plan)):  # one cell at a time, the summary refreshed after each
            key, compute = plan[i]
            if is_done(self.cells, key):
                continue
            run_cells([plan[i]], self.cells, label=f"rlhf {sum(is_done(self.cells, k) for k, _ in plan)}"
                                                   f"/{len(plan)}")
            summarise(load_cells(self.cells), self.results, command)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--rewards", nargs="+", choices=list(REWARDS), default=list(REWARDS))
    parser.add_argument("--quick", action="store_true", help="a smoke run of every cell kind at a tiny budget")
    parser.add_argument("--summarise", action="store_true", help="only rebuild the summary from the cells present")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    experiment = Experiment(args.quick)
    command = "python experiments/rlhf/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.summarise:
        experiment.run(args.seeds, args.rewards, command.strip())
    summarise(load_cells(experiment.cells), experiment.results, command.strip())
    print(f"results: {experiment.results / 'results.md'}")


if __name__ == "__main__":
    main()
