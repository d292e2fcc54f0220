"""Compose the real Hydra training config from Python (tests, the demo, notebooks)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from vrm.config import register_configs

#: The Hydra config tree shipped with the repository (editable install).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def config_dir() -> Path:
    """:data:`CONFIG_DIR`, or FileNotFoundError saying how to get it (an install that is not the repository's)."""
    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(f"config folder {CONFIG_DIR} not found; install the repository with "
                                "'pip install -e .'")
    return CONFIG_DIR


def compose_config(overrides: list[str], output_dir: str | Path, config_name: str = "train") -> DictConfig:
    """``conf/<config_name>.yaml`` with command-line style overrides, writing into ``output_dir``."""
    conf = config_dir()
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    GlobalHydra.instance().clear()
    output_dir = Path(output_dir)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
    return cfg
