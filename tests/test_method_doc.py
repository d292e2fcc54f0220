"""docs/method.md's table of defaults says what the code does: each row equals the composed default config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import compose_train
from omegaconf import OmegaConf

from vrm.config.compose import CONFIG_DIR
from vrm.proxy.reward import ProxyScorerConfig

METHOD_DOC = Path(__file__).resolve().parents[1] / "docs" / "method.md"
#: Table keys with this prefix are the proxy scorer's (conf/scorer/proxy.yaml), not vrm-train's.
SCORER = "scorer."


def documented_defaults() -> dict[str, str]:
    """``key -> default`` cells of the table under the ``## Defaults`` heading (backticks stripped)."""
    section = METHOD_DOC.read_text().split("\n## Defaults\n", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    cells = [[cell.strip().strip("`") for cell in row.strip("|").split("|")] for row in rows]
    return {key: default for key, default, *_ in cells}


def as_documented(text: str, actual: Any) -> Any:
    """A table cell read as the type of the value it documents (YAML reads ``5e-05`` as a string)."""
    if isinstance(actual, float):
        return float(text)
    return yaml.safe_load(text)


def test_the_table_documents_the_main_options():
    keys = documented_defaults()
    assert len(keys) >= 40
    for key in ("model.num_objectives", "model.beta_w", "model.num_samples", "model.prompt_repr",
                "encoder.train_mode", "encoder.pooling", "scorer.encoder"):
        assert key in keys


@pytest.mark.parametrize("key, text", [(k, v) for k, v in documented_defaults().items()
                                        if not k.startswith(SCORER)])
def test_training_default_matches_the_composed_config(key, text, tmp_path):
    actual = OmegaConf.select(compose_train([], tmp_path), key, throw_on_missing=True)
    assert as_documented(text, actual) == actual, f"docs/method.md says {key} = {text}, the config has {actual!r}"


@pytest.mark.parametrize("key, text", [(k, v) for k, v in documented_defaults().items() if k.startswith(SCORER)])
def test_proxy_default_matches_its_config_and_dataclass(key, text):
    name = key.removeprefix(SCORER)
    yaml_value = OmegaConf.load(CONFIG_DIR / "scorer" / "proxy.yaml")[name]
    dataclass_value = {f.name: f.default for f in dataclasses.fields(ProxyScorerConfig)}[name]
    assert as_documented(text, yaml_value) == yaml_value == dataclass_value
