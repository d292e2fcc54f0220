"""``vrm-eval model_path=DIR_OR_CKPT [data=...] [scorer=proxy] [overrides]``: the entry point of
:func:`vrm.evaluation.evaluate.evaluate` (its schema: :class:`vrm.config.eval.EvalConfig`)."""

from __future__ import annotations

from omegaconf import DictConfig

from vrm.cli.app import hydra_command


def run(cfg: DictConfig) -> None:
    from vrm.evaluation.evaluate import evaluate

    evaluate(cfg)


def main() -> None:
    hydra_command("eval", run)
