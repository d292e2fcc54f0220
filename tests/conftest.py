"""Shared fixtures: the real Hydra configs, shrunk to tiny encoders and tiny data."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from vrm.config.compose import compose_config as compose_train  # noqa: E402, F401

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


@pytest.fixture
def tiny_cfg(tmp_path) -> DictConfig:
    """The default training config, shrunk: tiny BERT, 64 training pairs, one epoch, no logger."""
    return compose_train(TINY_OVERRIDES, tmp_path)
