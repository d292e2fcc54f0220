"""Shared fixtures: the real Hydra configs, shrunk to tiny encoders and tiny data."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from vrm.cli import CONFIG_DIR  # noqa: E402
from vrm.config import register_configs  # noqa: E402

#: Overrides that make any training config tiny and fast.
TINY_OVERRIDES = [
    "encoder=tiny_bert",
    "data.synthetic.num_train=64",
    "data.synthetic.num_validation=16",
    "data.synthetic.num_test=16",
    "data.synthetic.num_shifted=16",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=none",
]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tokenisation cache in a temporary folder, never the user's."""
    os.environ["VRM_CACHE"] = str(tmp_path_factory.mktemp("vrm_cache"))


def compose_train(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose the real ``conf/train.yaml`` with overrides, writing into ``output_dir``."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
    return cfg


@pytest.fixture
def tiny_cfg(tmp_path) -> DictConfig:
    """The default training config, shrunk: tiny BERT, 64 training pairs, one epoch, no logger."""
    return compose_train(TINY_OVERRIDES, tmp_path)
