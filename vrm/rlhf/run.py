"""``vrm-rlhf``: optimise a policy against a reward with TRL's GRPOTrainer while tracking a gold reward.

The run folder holds ``metrics.jsonl`` (one row of held-out metrics every ``eval.every`` steps: :mod:`.tracking`),
``checkpoints/`` (TRL's, every ``grpo.save_steps`` steps; a rerun with the same folder resumes from the newest),
``policy/`` (the final policy, an HF folder) and ``summary.json``.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vrm.config.rlhf import RLHFConfig
from vrm.rlhf.policy import load_policy, policy_path
from vrm.rlhf.rewards import TimedReward, build_gold, build_reward, check_gold_config, check_reward_config
from vrm.rlhf.tracking import HeldOutTracker, keep_rows_up_to, read_rows


def as_config(cfg: DictConfig | RLHFConfig) -> RLHFConfig:
    if isinstance(cfg, RLHFConfig):
        return cfg
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RLHFConfig), cfg))


def split_prompts(cfg: RLHFConfig) -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts), each ending with the separator."""
    p = cfg.prompts
    if p.path is None:
        from vrm.data.synthetic_text import TEXT

        prompts = sorted({template.format(topic=topic) for text in TEXT.values() for template in text.templates
                          for topic in text.topics})
    else:
        from vrm.data.textio import json_lines

        prompts = []
        for line, _, row in json_lines(Path(p.path)):
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
                raise ValueError(f"{p.path}, line {line}: field 'prompt' must be a non-empty string")
            prompts.append(row["prompt"])
    if not 0 < p.num_eval < len(prompts):
        raise ValueError(f"prompts.num_eval={p.num_eval} must lie in [1, {len(prompts) - 1}] ({len(prompts)} prompts)")
    random.Random(p.seed).shuffle(prompts)
    held_out, train = prompts[:p.num_eval], prompts[p.num_eval:]
    return [t + p.separator for t in train], [t + p.separator for t in held_out]


def check_config(cfg: RLHFConfig) -> None:
    check_reward_config(cfg.reward)
    check_gold_config(cfg.gold)
    g = cfg.grpo
    for key in ("steps", "num_generations", "prompts_per_step", "max_completion_length", "save_steps"):
        if getattr(g, key) < 1:
            raise ValueError(f"grpo.{key}={getattr(g, key)} must be >= 1")
    if g.num_generations < 2:
        raise ValueError(f"grpo.num_generations={g.num_generations} must be >= 2 (GRPO compares a prompt's samples)")
    if not g.beta >= 0:
        raise ValueError(f"grpo.beta={g.beta} must be >= 0")
    if cfg.eval.every < 1 or cfg.eval.samples_per_prompt < 1:
        raise ValueError("eval.every and eval.samples_per_prompt must be >= 1")
    if cfg.gold.kind == "synthetic" and cfg.prompts.path is not None:
        raise ValueError("gold.kind=synthetic reads the benchmark's prompts only: with prompts.path, set "
                         "gold.kind=export gold.path=EXPORT")


def last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def run_rlhf(cfg: DictConfig | RLHFConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Optimise, track, save; returns the summary (also written to ``summary.json``)."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    cfg = as_config(cfg)
    check_config(cfg)
    out = Path(output_dir or cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_prompts, held_out = split_prompts(cfg)
    start = policy_path(cfg.policy, cfg.prompts.separator, cfg.cache_dir, cfg.progress)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    fn, name = build_reward(cfg.reward, cfg.gold, device)
    reward = TimedReward(fn, name, cfg.prompts.separator)
    gold = build_gold(cfg.gold, device)
    g = cfg.grpo
    args = GRPOConfig(
        output_dir=str(out / "checkpoints"), max_steps=g.steps, beta=g.beta, num_generations=g.num_generations,
        per_device_train_batch_size=g.prompts_per_step * g.num_generations,
        max_completion_length=g.max_completion_length, learning_rate=g.learning_rate, temperature=g.temperature,
        top_k=0, logging_steps=1, save_strategy="steps", save_steps=g.save_steps, save_total_limit=1,
        report_to=[], seed=cfg.seed, use_cpu=device == "cpu", disable_tqdm=not cfg.progress,
        trust_remote_code=cfg.policy.trust_remote_code, lr_scheduler_type="constant", warmup_steps=0,
        dataloader_num_workers=0)
    model, tokenizer = load_policy(start, cfg.policy.trust_remote_code)
    reference, _ = load_policy(start, cfg.policy.trust_remote_code)
    reference.to(device).eval()
    dataset = Dataset.from_dict({"prompt": train_prompts})
    resume = last_checkpoint(out / "checkpoints") if cfg.resume else None
    metrics = out / "metrics.jsonl"
    if resume is not None:
        keep_rows_up_to(metrics, int(Path(resume).name.split("-")[-1]))
    elif metrics.exists():
        metrics.unlink()
    tracker = HeldOutTracker(metrics, held_out, reference, tokenizer, reward, gold, cfg.eval.every,
                             cfg.eval.samples_per_prompt, g.max_completion_length, g.temperature, cfg.seed,
                             cfg.prompts.separator)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[tracker])
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(out / "policy"))
    rows = read_rows(metrics)
    summary = {"reward": name, "policy": start, "steps": g.steps, "resumed_from": resume,
               "config": OmegaConf.to_container(OmegaConf.structured(cfg)), **summarise_rows(rows)}
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, out / "summary.json")
    return summary


def summarise_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Peak and final gold, sqrt(KL) at the peak, final cue rate, Spearman of proxy vs gold along the trajectory,
    and the share of the training steps' time spent in the reward call."""
    if not rows:
        return {}
    from scipy.stats import spearmanr

    peak = max(rows, key=lambda r: r["gold"])
    final = rows[-1]
    rho = spearmanr([r["proxy"] for r in rows], [r["gold"] for r in rows]).statistic if len(rows) > 2 else None
    return {"start_gold": rows[0]["gold"], "peak_gold": peak["gold"], "peak_step": peak["step"],
            "sqrt_kl_at_peak": peak["sqrt_kl"], "final_gold": final["gold"], "final_proxy": final["proxy"],
            "final_sqrt_kl": final["sqrt_kl"], "final_cue_rate": final["cue_rate"],
            "final_unparseable": final["unparseable"], "final_length": final["length"],
            "spearman_proxy_gold": None if rho is None or rho != rho else float(rho),
            "reward_share": (final["reward_seconds"] / final["step_seconds"]) if final["step_seconds"] else None}
