"""Every config in conf/ composes with Hydra's compose API, and bad configs fail at start with the key named."""

from __future__ import annotations

import pytest
from conftest import compose_train
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from vrm.config import TrainConfig
from vrm.config.compose import CONFIG_DIR

#: Groups of conf/train.yaml, each option of which must compose.
TRAIN_GROUPS = ("data", "model", "encoder", "trainer", "callbacks", "logger", "experiment", "debug")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group, option", [(g, o) for g in TRAIN_GROUPS for o in options(g)])
def test_every_group_option_composes(tmp_path, group, option):
    cfg = compose_train([f"{group}={option}"], tmp_path)
    # The structured schema typed the whole tree: resolving and re-validating must succeed.
    typed = OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.to_container(cfg, resolve=True))
    assert typed.model.type in ("vrm", "bt")


def test_every_group_has_options():
    for group in TRAIN_GROUPS:
        assert options(group), f"conf/{group}/ is empty"


def test_spec_defaults():
    cfg = compose_train([], CONFIG_DIR)
    m = cfg.model
    assert (m.type, m.num_objectives, m.feature_dim, m.num_samples) == ("vrm", 5, 16, 4)
    assert (m.beta_w, m.beta_z, m.tau, m.center_coef, m.prior_concentration) == (0.001, 0.05, 1.0, 0.0, 1.0)
    assert (m.weight_posterior, m.weight_prior, m.score_head, m.kl_warmup_fraction) == ("auto", "fixed", "linear", 0.1)
    assert m.group_coef == 1.0
    assert (m.aspect_loss, m.reward_scale, m.score_training, m.head_lr) == ("diff", "learned", "joint", 0.01)
    assert cfg.encoder.path == "minilm" and cfg.data.format == "synthetic"


def test_the_old_vrm_defaults_stay_reachable_and_bt_keeps_its_learning_rate():
    old = compose_train(["model=vrm_v1"], CONFIG_DIR).model
    assert (old.num_objectives, old.aspect_loss, old.reward_scale, old.beta_w, old.head_lr) == (8, "bt", "fixed", 0.05,
                                                                                                None)
    assert old.weight_posterior == "prompt"
    assert compose_train(["model=bt"], CONFIG_DIR).model.head_lr is None


def test_unknown_key_fails_with_its_name(tmp_path):
    with pytest.raises(ConfigCompositionException) as err:
        compose_train(["model.num_objectivs=4"], tmp_path)
    assert "num_objectivs" in str(err.value) or isinstance(err.value.__cause__, ConfigKeyError)


def test_wrong_type_fails_with_its_name(tmp_path):
    with pytest.raises(ConfigCompositionException) as err:
        compose_train(["model.num_objectives=many"], tmp_path)
    assert isinstance(err.value.__cause__, ValidationError)
    assert "num_objectives" in str(err.value.__cause__)
