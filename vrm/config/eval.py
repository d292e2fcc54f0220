"""The typed configuration of ``vrm-eval`` (:class:`EvalConfig`) and of its scorers.

``conf/eval.yaml`` starts its defaults list with ``eval_schema`` (:class:`EvalConfig`), so an unknown key or a
wrong type fails at start with the key named, as for ``vrm-train``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from vrm.config.data import DataConfig
from vrm.config.train import PathsConfig
from vrm.config.validation import count, fraction, seed_rule

#: ``scorer.name`` of the trained reward model at ``model_path`` (``conf/scorer/model.yaml``).
MODEL_SCORER = "model"
#: ``scorer.name`` of the white-box proxy reward (``conf/scorer/proxy.yaml``).
PROXY_SCORER = "proxy"
#: The most Monte Carlo samples of (w, z) one scoring call may ask for (``scorer.uncertainty_samples`` of vrm-eval,
#: ``vrm-score --num-samples``, the default of ``vrm-serve --max-num-samples``): each sample is a pass of the heads
#: over the batch, held at once ((S, B, K) weights and (S, B, d) features), so 10**6 samples of a 32-pair batch take
#: gigabytes; a standard deviation from 256 samples is within about 5% of its value.
MAX_UNCERTAINTY_SAMPLES = 256
#: How a response's length is measured for the length-bias analysis.
LENGTH_UNITS = ("words", "chars")


@dataclass
class ModelScorerConfig:
    """The trained reward model (VRM or BT) at ``model_path`` (the ``scorer/model.yaml`` file mirrors these)."""

    name: str = MODEL_SCORER
    batch_size: int = 32
    #: ``cpu``, ``cuda``, ... or ``auto`` (CUDA when available).
    device: str = "cpu"
    #: Monte Carlo samples of (w, z) for a VRM's reward standard deviation; 0 skips the uncertainty analysis.
    uncertainty_samples: int = 32


@dataclass
class BestOfNConfig:
    """Best-of-N over-optimisation on prompts of the synthetic benchmark (:mod:`vrm.evaluation.synthetic_eval`)."""

    #: None: run it when the data is the synthetic benchmark.
    enabled: bool | None = None
    num_prompts: int = 64
    #: Candidates per prompt; the curve is drawn at n = 1, 2, 4, ... up to this.
    n_max: int = 64
    seed: int = 0
    #: Probability that a candidate carries the spurious opener.
    spurious_prob: float = 0.5


@dataclass
class EvalConfig:
    task_name: str = "eval"
    #: An export folder (``vrm-export`` or train's ``export_dir``) or a Lightning ``.ckpt``; unused by ``scorer=proxy``.
    model_path: str = MISSING
    #: The model's name in tables and RewardBench results (default: ``model_path``, or the scorer's name).
    name: str | None = None
    #: Seeds the Monte Carlo uncertainty (None: unseeded).
    seed: int | None = 0
    data: DataConfig = field(default_factory=DataConfig)
    #: One of ``conf/scorer/``: keys of :class:`ModelScorerConfig` or of ``vrm.proxy.ProxyScorerConfig``.
    scorer: dict[str, Any] = field(default_factory=lambda: {"name": MODEL_SCORER})
    #: Splits to evaluate, those the data has (a missing one is reported, not an error unless none is left).
    splits: list[str] = field(default_factory=lambda: ["test", "shifted"])
    calibration_bins: int = 10
    #: ``words`` (whitespace-separated) or ``chars``.
    length_unit: str = "words"
    best_of_n: BestOfNConfig = field(default_factory=BestOfNConfig)
    #: Write the PNG plots beside eval.json.
    plots: bool = True
    #: Where eval.json and the plots go (None: the Hydra run folder, ``paths.output_dir``).
    output_dir: str | None = None
    paths: PathsConfig = field(default_factory=PathsConfig)


#: The numeric rules of :class:`ModelScorerConfig` (keys relative to ``scorer``) and of :class:`EvalConfig`.
MODEL_SCORER_RULES = (
    count("batch_size", 1),
    count("uncertainty_samples", 0, MAX_UNCERTAINTY_SAMPLES, note="0: no uncertainty analysis; the cap is "
          "vrm.config.eval.MAX_UNCERTAINTY_SAMPLES"),
)
EVAL_RULES = (
    seed_rule("seed"),
    count("calibration_bins", 1),
    count("best_of_n.num_prompts", 1),
    count("best_of_n.n_max", 1),
    seed_rule("best_of_n.seed", optional=False),
    fraction("best_of_n.spurious_prob"),
    count("data.max_length", 4, note="room for a prompt, a response and their special tokens"),
    count("data.eval_batch_size", 1),
    count("data.max_rows", 1, optional=True, note="null: every row"),
    count("data.batch_size", 1),
)


def register_eval_configs() -> None:
    """Register the evaluation schema with Hydra (idempotent)."""
    ConfigStore.instance().store(name="eval_schema", node=EvalConfig)
