"""The house keeps its shape: floors import only downwards, no import circles, no oversized files, and the yaml
files hold only what differs from the dataclass defaults (so each default is written once)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from vrm.config import (
    DataConfig,
    EncoderConfig,
    EvalConfig,
    ModelConfig,
    ModelScorerConfig,
    TrainConfig,
    TrainerConfig,
)
from vrm.proxy import ProxyScorerConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vrm"
#: The floors, bottom first: a module may import its own floor and the floors below, never one above.
FLOORS = [
    # vrm.models.pooling: tensor operations on ids and masks that import nothing but torch (the exported modeling
    # file's sibling, and the input contract's boundary rule, which the data floor shares)
    ("vrm.config", "vrm.errors", "vrm.metric_names", "vrm.models.pooling"),
    ("vrm.data",),
    ("vrm.models",),
    ("vrm.training",),
    ("vrm.scoring",),
    ("vrm.proxy",),
    ("vrm.evaluation",),
    ("vrm.integrations",),  # adapters for other libraries' APIs (TRL's reward functions)
    ("vrm.rlhf",),  # a policy optimised against a reward with TRL (it uses the adapters above)
    ("vrm.cli",),
    ("vrm",),  # the package's front (vrm/__init__.py): registers the Auto classes, names RewardScorer
]
MAX_LINES = 410
#: Keys a config group's file names its option by (kept even when equal to the default).
IDENTITY_KEYS = {"format", "name", "path", "type"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """Every ``vrm`` module ``name`` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def floor(name: str) -> int:
    """The floor of a module: that of the longest room name it starts with."""
    matches = [(len(room), i) for i, rooms in enumerate(FLOORS) for room in rooms
               if name == room or name.startswith(room + ".")]
    assert matches, f"{name} is on no floor: add its room to FLOORS"
    return max(matches)[1]


def test_no_module_imports_a_floor_above_its_own():
    upward = [f"{a} (floor {floor(a)}) -> {b} (floor {floor(b)})"
              for a, targets in GRAPH.items() for b in targets if floor(b) > floor(a)]
    assert not upward, upward


def test_there_are_no_import_circles():
    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), list(GRAPH[start])
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo += GRAPH[node]
        return False

    circles = sorted({tuple(sorted((a, b))) for a, targets in GRAPH.items() for b in targets if reaches(b, a)})
    assert not circles, circles


def test_the_layout_checks_see_the_imports():
    """The checks above would catch an arrow: they see lazy and relative imports."""
    assert "vrm.scoring.export" in GRAPH["vrm.cli.train"]  # imported inside a function
    assert "vrm.models.pooling" in GRAPH["vrm.models.modeling_vrm"]  # a relative import
    assert floor("vrm.errors") == 0 and floor("vrm.cli.train") == 9 and floor("vrm") == 10


def test_no_file_is_oversized():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert not {name: n for name, n in sizes.items() if n > MAX_LINES}


def test_no_two_library_modules_share_a_file_name():
    """(The command modules of vrm.cli and the schemas of vrm.config are named after what they serve.)"""
    names = [path.name for name, path in MODULES.items()
             if path.name != "__init__.py" and not name.startswith(("vrm.cli.", "vrm.config."))]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def defaults_repeated(values: dict, defaults: dict, prefix: str = "") -> list[str]:
    """The keys of a yaml file whose value equals the schema's default."""
    repeated = []
    for key, value in values.items():
        if key == "defaults" or key not in defaults or (not prefix and key in IDENTITY_KEYS):
            continue
        if isinstance(value, dict) and isinstance(defaults[key], dict):
            repeated += defaults_repeated(value, defaults[key], f"{prefix}{key}.")
        elif value == defaults[key]:
            repeated.append(f"{prefix}{key}={value!r}")
    return repeated


SCHEMAS = {"data": DataConfig, "encoder": EncoderConfig, "model": ModelConfig, "trainer": TrainerConfig}
YAML_FILES = [(p, SCHEMAS[group]) for group in SCHEMAS for p in sorted((ROOT / "conf" / group).glob("*.yaml"))]
YAML_FILES += [(ROOT / "conf" / "eval.yaml", EvalConfig), (ROOT / "conf" / "train.yaml", TrainConfig)]
#: Untyped groups (``scorer`` is a plain dict under EvalConfig, read by the command-line tools too): a key must be in
#: the file to be overridable, so the file mirrors its dataclass, and must equal its defaults.
MIRRORS = [(ROOT / "conf" / "scorer" / "model.yaml", ModelScorerConfig), (ROOT / "conf" / "scorer" / "proxy.yaml",
                                                                           ProxyScorerConfig)]


@pytest.mark.parametrize("path, schema", YAML_FILES, ids=lambda v: v.stem if isinstance(v, Path) else "")
def test_yaml_files_hold_only_what_differs_from_the_defaults(path, schema):
    values = yaml.safe_load(path.read_text()) or {}
    defaults = OmegaConf.structured(schema)
    for parent in values.get("defaults", []):  # a file that extends another differs from that one
        if isinstance(parent, str) and (path.parent / f"{parent}.yaml").is_file():
            defaults = OmegaConf.merge(defaults, OmegaConf.load(path.parent / f"{parent}.yaml"))
    assert defaults_repeated(values, OmegaConf.to_container(defaults)) == []


@pytest.mark.parametrize("path, schema", MIRRORS, ids=lambda v: v.stem if isinstance(v, Path) else "")
def test_untyped_group_files_mirror_their_dataclass_defaults(path, schema):
    assert yaml.safe_load(path.read_text()) == OmegaConf.to_container(OmegaConf.structured(schema))


def test_the_defaults_check_catches_a_repeated_default():
    assert defaults_repeated({"type": "vrm", "num_objectives": 8, "tau": 2.0}, {"type": "vrm", "num_objectives": 8,
                                                                                "tau": 1.0}) == ["num_objectives=8"]
