"""Shared fixtures: the real Hydra configs, shrunk to tiny encoders and tiny data."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from vrm.config.compose import compose_config as compose_train  # noqa: E402, F401

#: Seconds a subprocess, a server start or a notebook cell may take before a test calls it hung. Only a guard
#: against hangs, never a speed check: a CLI takes about 20 s to start on a loaded 2-core machine.
HANG_TIMEOUT = 600

# Property tests: no per-example deadline and no "too slow" health check, so a loaded machine cannot fail them.
settings.register_profile("vrm", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("vrm")

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


def load_experiment(name: str):
    """The script ``experiments/<name>.py`` as a module (its folder first on ``sys.path``, for its own imports)."""
    import importlib.util
    import sys
    from pathlib import Path

    experiments = Path(__file__).resolve().parents[1] / "experiments"
    if str(experiments) not in sys.path:
        sys.path.insert(0, str(experiments))
    spec = importlib.util.spec_from_file_location(name, experiments / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_model(overrides, root, *, seed: int = 0, tokenizer=None, prompt_groups=None):
    """``(net, enc)``: the model of the training config ``TINY_OVERRIDES + overrides``, randomly initialised under
    ``torch.manual_seed(seed)``, with its loaded encoder (``enc.tokenizer`` is the tokenizer: ``tokenizer`` when
    given, which the model's architecture then reads, as training would). ``prompt_groups``: the training data's
    prompt groups, as the data module finds them (None: built without data, so ``weight_posterior=auto`` is
    ``prompt``)."""
    import torch

    from vrm.models.encoder import load_encoder
    from vrm.models.modeling_vrm import VRMConfig, VRMForSequenceClassification
    from vrm.training.build import architecture

    cfg = compose_train(TINY_OVERRIDES + list(overrides), root)
    torch.manual_seed(seed)
    enc = load_encoder(cfg.encoder)
    if tokenizer is not None:
        enc.tokenizer = tokenizer
    return VRMForSequenceClassification(VRMConfig(**architecture(cfg, enc, prompt_groups)), encoder=enc.model), enc


def random_export(root, overrides=("model=vrm",), prompt_groups=None, **export_options):
    """:func:`random_model` (a VRM on the tiny BERT by default) exported to ``root / "export"``."""
    from vrm.scoring.export import export_model

    net, enc = random_model(overrides, root, prompt_groups=prompt_groups)
    return export_model(net, enc.tokenizer, root / "export", **export_options)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tokenisation cache in a temporary folder, never the user's; so are the trackers' own folders (Trackio reads
    TRACKIO_DIR once, when it is first imported)."""
    os.environ["VRM_CACHE"] = str(tmp_path_factory.mktemp("vrm_cache"))
    trackers = tmp_path_factory.mktemp("trackers")
    for name in ("TRACKIO_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        os.environ[name] = str(trackers / name.lower())


@pytest.fixture
def tiny_cfg(tmp_path) -> DictConfig:
    """The default training config, shrunk: tiny BERT, 64 training pairs, one epoch, no logger."""
    return compose_train(TINY_OVERRIDES, tmp_path)
