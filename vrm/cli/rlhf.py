"""``vrm-rlhf [reward=gold|export|conservative|proxy] [overrides]``: optimise a policy against a reward with TRL's
GRPOTrainer, tracking a gold reward (:func:`vrm.rlhf.run.run_rlhf`; schema :class:`vrm.config.rlhf.RLHFConfig`)."""

from __future__ import annotations

from omegaconf import DictConfig

from vrm.cli.app import hydra_command


def run(cfg: DictConfig) -> float | None:
    """Run; the final gold reward on the held-out prompts (what a sweeper would maximise)."""
    from vrm.rlhf.run import run_rlhf

    return run_rlhf(cfg).get("final_gold")


def main() -> None:
    hydra_command("rlhf", run)
