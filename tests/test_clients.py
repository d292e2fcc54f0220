"""Conformance: the real clients' own code paths score a tiny export exactly as vrm-score does (to 1e-5).

transformers' pipeline (a rendered conversation, and text/text_pair), TRL's GRPOTrainer reward computation (the
export path with conversational prompts, and vrm.integrations.trl.RewardFunction), TRL's RewardTrainer.evaluate
(accuracy and margin as vrm-eval's), OpenRLHF's remote reward request against vrm-serve, and RewardBench's
formatting and pipeline call where a Python with rewardbench is named by VRM_REWARDBENCH_PYTHON (skipped, with the
reason, otherwise). The client runners live in experiments/client_conformance.py, which measures the same on 50 pairs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bpe_tokenizers
import pytest
from conftest import load_experiment

import vrm  # noqa: F401  (registers model_type 'vrm', as a user of the default export kind does)

ATOL = 1e-5
PAIRS_N = 3


harness = load_experiment("client_conformance")
#: name -> (model, encoder, export options, tokenizer factory or None for the encoder's own)
EXPORTS = {"vrm": ("vrm", "tiny_bert", {}, None),
           "vrm-with-code": ("vrm", "tiny_bert", {"with_code": True}, None),
           "bt-plain": ("bt", "tiny_llama", {"plain": True}, None),
           "vrm-chatml-with-code": ("vrm", "tiny_llama", {"with_code": True}, bpe_tokenizers.qwen2_like)}


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return harness.synthetic_pairs(PAIRS_N)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, pairs) -> dict[str, tuple[Path, list[float]]]:
    """Each export folder and its vrm-score rewards of the pairs (chosen, then rejected)."""
    out = {}
    for name, (model, encoder, options, tokenizer) in EXPORTS.items():
        root = tmp_path_factory.mktemp(name)
        folder = harness.build_export(root, model, encoder, options, None if tokenizer is None else tokenizer())
        out[name] = folder, harness.vrm_score_rewards(folder, pairs)
    return out


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_transformers_pipeline_scores_a_rendered_conversation_as_vrm_score(exports, pairs, name):
    folder, expected = exports[name]
    assert harness.pipeline_chat_rewards(folder, pairs) == pytest.approx(expected, abs=ATOL)
    if name != "vrm-chatml-with-code":  # a text pair is the plain template's layout
        assert harness.pipeline_pair_rewards(folder, pairs) == pytest.approx(expected, abs=ATOL)


@pytest.mark.parametrize("name", ["vrm", "vrm-chatml-with-code"])
def test_grpo_rewards_with_conversational_prompts_and_the_reward_function(exports, pairs, name, tmp_path):
    folder, expected = exports[name]
    rewards = harness.grpo_rewards(folder, pairs, tmp_path)
    assert rewards["path, conversational"] == pytest.approx(expected, abs=ATOL)
    assert rewards["RewardFunction, conversational"] == pytest.approx(expected, abs=ATOL)
    as_strings = harness.vrm_score_rewards(folder, harness.as_strings(pairs))
    assert rewards["RewardFunction, strings"] == pytest.approx(as_strings, abs=ATOL)
    # The path with plain-string prompts gets one bare string: not the trained reward (documented; the model warns).
    assert harness.max_diff(rewards["path, strings"], as_strings) > 1e-4


def test_a_bare_string_without_the_marker_warns(exports):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder, _ = exports["vrm"]
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with pytest.warns(UserWarning, match="hold no prompt/response marker"):
        model(**tokenizer(["How do I sort a list?Use sorted()."], return_tensors="pt"))


@pytest.mark.parametrize("name", ["vrm", "bt-plain"])
def test_reward_trainer_evaluate_gives_vrm_evals_accuracy_and_margin(exports, pairs, name, tmp_path):
    folder, _ = exports[name]
    trl_metrics = harness.reward_trainer_metrics(folder, pairs, tmp_path)
    ours = harness.vrm_eval_metrics(folder, pairs)
    assert trl_metrics["accuracy"] == pytest.approx(ours["accuracy"], abs=1e-6)  # TRL averages in float32
    assert trl_metrics["margin"] == pytest.approx(ours["margin"], abs=ATOL)


@pytest.mark.parametrize("name", ["vrm", "vrm-chatml-with-code"])
def test_openrlhf_remote_reward_request_against_vrm_serve(exports, pairs, name):
    pytest.importorskip("openrlhf", reason="openrlhf is not installed (pip install --no-deps openrlhf pylatexenc)")
    folder, expected = exports[name]
    assert harness.openrlhf_rewards(folder, pairs) == pytest.approx(expected, abs=ATOL)


def rewardbench_python() -> str:
    python = harness.rewardbench_python()
    if python is None:
        pytest.skip(f"RewardBench not checked: {harness.REWARDBENCH_PYTHON} does not name a Python with rewardbench "
                    "(it pins transformers 4.51, so it needs its own environment)")
    probe = subprocess.run([python, "-c", "import rewardbench"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"RewardBench not checked: {python} cannot import rewardbench: {probe.stderr.strip()[-200:]}")
    return python


@pytest.mark.parametrize("name", ["vrm-with-code", "bt-plain"])
def test_rewardbench_formatting_and_pipeline(exports, pairs, name):
    python = rewardbench_python()
    folder, expected = exports[name]
    assert harness.rewardbench_rewards(folder, pairs, python) == pytest.approx(expected, abs=ATOL)


COUNT_PROMPTS = """
import builtins, json, sys
asked = []
builtins.input = lambda *args: asked.append(args) or "n"
from transformers import AutoTokenizer
kwargs = json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], **kwargs)
print(json.dumps({"asked": len(asked), "template": tokenizer.chat_template is not None,
                  "eos": tokenizer.eos_token}))
"""


@pytest.mark.parametrize("name, kwargs", [("vrm", {}), ("bt-plain", {}), ("vrm-with-code", {"trust_remote_code": True}),
                                          ("vrm-with-code", {"trust_remote_code": False})])
def test_autotokenizer_loads_without_asking(exports, name, kwargs):
    """In a fresh process without vrm: the tokenizer loads, with its chat template and eos, and nothing is asked.
    (A --with-code folder with trust_remote_code unset is asked about: transformers resolves the config's auto_map
    AutoConfig before any tokenizer; see docs/clients.md.)"""
    folder, _ = exports[name]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", COUNT_PROMPTS, str(folder), json.dumps(kwargs)], env=env,
                          cwd=folder, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"asked": 0, "template": True, "eos": result["eos"]} and result["eos"]


def card_block(folder: Path, section: str) -> str:
    card = (folder / "README.md").read_text()
    body = card.split(f"### {section}\n", 1)[1]
    return body.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_model_cards_pipeline_lines_give_vrm_scores_reward(exports):
    folder, _ = exports["vrm"]
    code = card_block(folder, "transformers pipeline").replace('"PATH"', repr(str(folder)))
    lines = code.strip().splitlines()
    namespace: dict = {}
    exec("\n".join(lines[:-2]), namespace)  # imports, the pipeline, the conversation
    chat_score, pair_score = (eval(line.split("  #")[0], namespace) for line in lines[-2:])
    from vrm.scoring.scorer import RewardScorer

    expected = RewardScorer.from_pretrained(folder).score(["How do I sort a list?"], ["Use sorted()."])[0]
    assert chat_score == pytest.approx(expected, abs=ATOL) and pair_score == pytest.approx(expected, abs=ATOL)
