"""Compose the real Hydra training config from Python (tests, the demo, notebooks)."""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from vrm.config import register_configs

#: The Hydra config tree shipped with the repository (editable install).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def config_dir() -> Path:
    """:data:`CONFIG_DIR`, or FileNotFoundError saying how to get it (an install that is not the repository's)."""
    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(f"config folder {CONFIG_DIR} not found; install the repository with "
                                "'pip install -e .'")
    return CONFIG_DIR


#: The resolver ``conf/hydra/default.yaml``'s help text lists a command's config groups with.
CONFIG_GROUPS_RESOLVER = "vrm_config_groups"


def config_groups(config_name: str) -> list[str]:
    """The config groups ``conf/<config_name>.yaml`` composes from (its defaults list, Hydra's own excepted), in
    that order: what the command's ``--help`` lists, where Hydra would list every group under ``conf/``."""
    defaults = yaml.safe_load((config_dir() / f"{config_name}.yaml").read_text()).get("defaults") or []
    groups = [next(iter(entry)) for entry in defaults if isinstance(entry, dict)]
    return [g for g in groups if g != "hydra" and not g.startswith(("override ", "hydra/"))]


def config_groups_help(config_name: str) -> str:
    """``group: option, option`` per line for :func:`config_groups` (the options: the group folder's yaml files)."""
    return "\n".join(f"{group}: " + ", ".join(sorted(p.stem for p in (config_dir() / group).glob("*.yaml")))
                     for group in config_groups(config_name))


def register_help_resolver() -> None:
    """``${vrm_config_groups:NAME}``: :func:`config_groups_help` (idempotent)."""
    if not OmegaConf.has_resolver(CONFIG_GROUPS_RESOLVER):
        OmegaConf.register_new_resolver(CONFIG_GROUPS_RESOLVER, config_groups_help)


def compose_config(overrides: list[str], output_dir: str | Path, config_name: str = "train") -> DictConfig:
    """``conf/<config_name>.yaml`` with command-line style overrides, writing into ``output_dir``."""
    conf = config_dir()
    register_configs()
    register_help_resolver()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    GlobalHydra.instance().clear()
    output_dir = Path(output_dir)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
    return cfg
