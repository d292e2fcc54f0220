"""Start-up: ``vrm-train --help`` and config errors answer without importing torch or transformers (seconds of
start-up on a loaded machine), and ``import vrm`` still registers the Auto classes whenever transformers is used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_TIMEOUT

HEAVY = ("torch", "transformers", "lightning", "pyro")

#: Runs vrm-train's entry point with the given arguments and prints which heavy modules it imported.
RUN_TRAIN = f"""
import json, sys
HEAVY = {HEAVY!r}
sys.argv = ["vrm-train", *sys.argv[1:]]
from vrm.cli.train import main
try:
    main()
except SystemExit as exit:
    code = exit.code
else:
    code = 0
print(json.dumps({{"code": code, "imported": [m for m in HEAVY if m in sys.modules]}}))
"""


def python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=HANG_TIMEOUT,
                          env=env)


@pytest.mark.parametrize("args, code, named", [
    (["--help"], 0, "num_objectives: 5"),
    (["model.num_objectivs=4"], 1, "num_objectivs"),
    (["model.beta_w=-1"], 1, "model.beta_w"),
])
def test_help_and_config_errors_import_neither_torch_nor_transformers(args, code, named):
    done = python(RUN_TRAIN, *args)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": code, "imported": []}, done.stderr[-2000:]
    assert named in done.stdout + done.stderr


@pytest.mark.parametrize("imports", ["import vrm\nimport transformers\n", "import transformers\nimport vrm\n",
                                     "import vrm.models.modeling_vrm\n"])
def test_import_vrm_registers_the_auto_classes_whatever_comes_first(imports):
    done = python(imports + """
import vrm
import sys
from pathlib import Path
from transformers import AutoConfig, AutoModelForSequenceClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
config = AutoConfig.for_model("vrm", head="bt", encoder_config={"model_type": "bert", "hidden_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8, "vocab_size": 10})
model = AutoModelForSequenceClassification.from_config(config)
print(type(config).__name__, type(model).__name__, vrm.VRMConfig is type(config))
""")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["VRMConfig", "VRMForSequenceClassification", "True"]


def test_import_vrm_alone_imports_no_heavy_module():
    done = python(f"import sys, vrm\nprint([m for m in {HEAVY!r} if m in sys.modules])")
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


@pytest.mark.parametrize("command, groups", [
    ("train", ["data", "model", "encoder", "trainer", "callbacks", "logger", "experiment", "hparams_search", "debug"]),
    ("eval", ["data", "scorer"]),
    ("rlhf", ["policy", "reward", "gold"]),
])
def test_help_lists_only_the_config_groups_the_command_composes_from(command, groups):
    """Hydra's help listed every group under conf/ for every command (vrm-train showed scorer, policy, reward, gold)."""
    done = python(f"import sys; sys.argv[0] = 'vrm-{command}'; from vrm.cli.{command} import main; main()", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    assert text.startswith(f"vrm-{command} is powered by Hydra.")
    listed = text.split("== Configuration groups ==")[1].split("== Config ==")[0]
    lines = [line for line in listed.splitlines() if ": " in line]
    assert [line.split(":")[0] for line in lines] == groups
    conf = Path(__file__).resolve().parents[1] / "conf"
    for line in lines:
        group, options = line.split(": ")
        assert options.split(", ") == sorted(p.stem for p in (conf / group).glob("*.yaml"))
