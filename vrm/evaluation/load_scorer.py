"""The scorer a ``vrm-eval`` config names: the trained model at ``model_path`` (export or ``.ckpt``) or the proxy."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vrm.config.eval import MODEL_SCORER, MODEL_SCORER_RULES, PROXY_SCORER, ModelScorerConfig
from vrm.config.validation import check_rules
from vrm.scoring.base import Scorer
from vrm.scoring.scorer import RewardScorer


def load_model_scorer(path: str | Path, batch_size: int = 32, device: str = "cpu") -> RewardScorer:
    """A :class:`RewardScorer` from an export folder or a training checkpoint (``.ckpt``); it resolves ``device``
    (``auto``: CUDA when there is one)."""
    path = Path(path)
    if path.is_dir():
        return RewardScorer.from_pretrained(path, batch_size=batch_size, device=device)
    if not path.is_file():
        raise FileNotFoundError(f"model_path={path} does not exist (give an export folder or a .ckpt)")
    if path.suffix != ".ckpt":
        raise ValueError(f"model_path={path} is a file but not a .ckpt checkpoint; give an export folder or a .ckpt")
    from transformers import AutoTokenizer

    from vrm.training.module import RewardModule

    try:
        module = RewardModule.from_checkpoint(path)
    except RuntimeError as err:
        raise ValueError(f"model_path={path}: {err}") from err
    tokenizer_path = module.hparams.get("tokenizer_path")
    if not tokenizer_path or not Path(tokenizer_path).is_dir():
        raise FileNotFoundError(f"checkpoint {path} records tokenizer_path={tokenizer_path!r}, which is not a "
                                "folder; export the checkpoint with vrm-export and evaluate the export instead")
    return RewardScorer(module.net, AutoTokenizer.from_pretrained(tokenizer_path), batch_size=batch_size,
                        device=device)


def model_scorer_options(scorer_cfg: Mapping | DictConfig) -> DictConfig:
    """``scorer`` validated against :class:`ModelScorerConfig` (an unknown key is an error naming it)."""
    options = OmegaConf.merge(OmegaConf.structured(ModelScorerConfig), scorer_cfg)
    check_rules(options, MODEL_SCORER_RULES, prefix="scorer.")
    return options


def load_scorer(cfg: DictConfig) -> Scorer:
    """The scorer ``cfg.scorer`` names: the model at ``model_path`` or the white-box proxy."""
    name = cfg.scorer.get("name")
    if name == MODEL_SCORER:
        if OmegaConf.is_missing(cfg, "model_path"):
            raise ValueError("model_path is required: vrm-eval model_path=EXPORT_DIR_OR_CKPT (or scorer=proxy)")
        options = model_scorer_options(cfg.scorer)
        return load_model_scorer(cfg.model_path, batch_size=options.batch_size, device=options.device)
    if name == PROXY_SCORER:
        from vrm.proxy import ProxyRewardScorer

        return ProxyRewardScorer.from_config(cfg.scorer)
    raise ValueError(f"scorer.name={name!r} is not one of {(MODEL_SCORER, PROXY_SCORER)}")


def scorer_label(cfg: DictConfig, scorer: Scorer) -> str:
    """The model's name in tables: ``cfg.name``, else ``model_path`` for a model, else the scorer's name."""
    if cfg.name:
        return cfg.name
    if isinstance(scorer, RewardScorer) and not OmegaConf.is_missing(cfg, "model_path"):
        return str(cfg.model_path)
    return scorer.name
