"""The bottom floor: every typed (structured) config of the project, registered with Hydra's ConfigStore.

Nothing here imports a ``vrm`` module outside ``vrm.config`` (tests/test_layout.py checks it), so every room
above can read its schema from here.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from vrm.config.data import DataConfig, SyntheticConfig
from vrm.config.eval import BestOfNConfig, EvalConfig, ModelScorerConfig, register_eval_configs
from vrm.config.rlhf import RLHFConfig, register_rlhf_configs
from vrm.config.train import (
    DEFAULT_OPTIMIZED_METRIC,
    EncoderConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    PathsConfig,
    TrainConfig,
    TrainerConfig,
)


def register_configs() -> None:
    """Register the training and evaluation schemas with Hydra (idempotent)."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    register_eval_configs()
    register_rlhf_configs()


__all__ = ["DataConfig", "SyntheticConfig", "EncoderConfig", "LoraConfig", "ModelConfig", "OptimConfig", "TrainerConfig",
           "PathsConfig", "TrainConfig", "EvalConfig", "ModelScorerConfig", "BestOfNConfig", "register_configs",
           "register_eval_configs", "DEFAULT_OPTIMIZED_METRIC", "RLHFConfig", "register_rlhf_configs"]
