"""Do the RLHF clients score an export exactly as ``vrm-score`` does? Each client's own code path, on the same pairs.

For each export kind (a VRM and a BT on the tiny BERT: the default folder and ``--with-code``; a BT on the tiny Llama
exported ``--plain``), the 2 x N (chosen and rejected) rewards of N synthetic test pairs are computed by:

- ``vrm-score`` (its CLI, in-process, on a JSON Lines file): the reference;
- transformers' ``text-classification`` pipeline, given the conversation rendered by the tokenizer's chat template,
  and given ``{"text": prompt, "text_pair": response}``;
- TRL ``GRPOTrainer._calculate_rewards`` with the export path as ``reward_funcs`` (conversational prompts) and with
  ``vrm.integrations.trl.RewardFunction`` (string prompts), on a tiny random policy; ``bf16=False``, since under
  TRL's default ``bf16=True`` the reward model runs under bf16 autocast;
- TRL ``RewardTrainer.evaluate`` on the pairs (its ``eval_accuracy`` and ``eval_margin`` against ``vrm-eval``'s);
- OpenRLHF's remote reward call (``SingleTurnAgentExecutor._fetch_rewards_via_http``) against ``vrm-serve``'s app;
- RewardBench's formatting and pipeline call (``experiments/rewardbench_probe.py``) when ``VRM_REWARDBENCH_PYTHON``
  names a Python with rewardbench installed (it pins transformers 4.51, so it has its own environment).

The models are randomly initialised (seed 0): the check is that every client computes the same function, not what
the function is. Writes ``experiments/results/client_conformance.{json,md}``::

    OMP_NUM_THREADS=1 VRM_REWARDBENCH_PYTHON=/path/to/rb-venv/bin/python python experiments/client_conformance.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
PROBE = ROOT / "experiments" / "rewardbench_probe.py"
#: The environment variable that names a Python with rewardbench installed.
REWARDBENCH_PYTHON = "VRM_REWARDBENCH_PYTHON"
#: (name, model, encoder, export options) of the exports checked.
EXPORTS = [("vrm", "vrm", "tiny_bert", {}), ("vrm --with-code", "vrm", "tiny_bert", {"with_code": True}),
           ("bt", "bt", "tiny_bert", {}), ("bt --plain", "bt", "tiny_llama", {"plain": True})]

Conversation = list[dict[str, str]]


# -- data and exports -------------------------------------------------------------------------------
def synthetic_pairs(n: int) -> list[dict[str, Any]]:
    """``n`` test pairs of the synthetic benchmark as {prompt: messages, chosen, rejected}; every fifth gets an
    earlier exchange in front, so multi-turn prompts are covered."""
    from vrm.config import SyntheticConfig
    from vrm.data.synthetic import make_split

    rows = make_split(SyntheticConfig(num_test=n), "test")
    pairs = []
    for i, row in enumerate(rows):
        prompt = list(row["prompt"])
        if i % 5 == 0:
            prompt = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello! Ask away."},
                      *prompt]
        pairs.append({"prompt": prompt, "chosen": row["chosen"], "rejected": row["rejected"]})
    return pairs


def build_export(root: Path, model: str, encoder: str, options: dict, tokenizer: Any = None) -> Path:
    """A randomly initialised (seed 0) tiny model of the real training config, exported to ``root``: as training on
    the default data builds it (the synthetic benchmark's categories are its prompt groups, so a VRM's weights read
    the prompt's predicted group)."""
    from vrm.config.compose import compose_config
    from vrm.data.synthetic import CATEGORIES
    from vrm.models.encoder import load_encoder
    from vrm.models.modeling_vrm import VRMConfig, VRMForSequenceClassification
    from vrm.scoring.export import export_model
    from vrm.training.build import architecture

    # max_length 512: every pair fits, so no client truncates differently (vrm-score cuts by the training policy).
    cfg = compose_config([f"model={model}", f"encoder={encoder}", "logger=none", "data.max_length=512"], root / "run")
    torch.manual_seed(0)
    enc = load_encoder(cfg.encoder)
    if tokenizer is not None:
        enc.tokenizer = tokenizer
    net = VRMForSequenceClassification(VRMConfig(**architecture(cfg, enc, sorted(CATEGORIES))), encoder=enc.model)
    return export_model(net, enc.tokenizer, root / "export", **options)


def conversations(pairs: Sequence[dict], side: str) -> list[Conversation]:
    return [[*p["prompt"], {"role": "assistant", "content": p[side]}] for p in pairs]


def as_strings(pairs: Sequence[dict]) -> list[dict]:
    """The pairs with each prompt as the plain text of its messages (what a string-prompt dataset holds)."""
    from vrm.data.schema import prompt_text

    return [{**p, "prompt": prompt_text(p["prompt"])} for p in pairs]


def flat(pairs: Sequence[dict]) -> tuple[list, list[str]]:
    """Prompts and responses of the chosen, then the rejected, responses."""
    return [p["prompt"] for p in pairs] * 2, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]


# -- the clients ------------------------------------------------------------------------------------
def vrm_score_rewards(folder: Path, pairs: Sequence[dict]) -> list[float]:
    """``vrm-score --model FOLDER --input pairs.jsonl --output rewards.jsonl``, in-process."""
    from vrm.cli.score import main as score_main

    prompts, responses = flat(pairs)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in zip(prompts, responses)))
        score_main(["--model", str(folder), "--input", str(src), "--output", str(out)])
        return [json.loads(line)["reward"] for line in out.read_text().splitlines()]


def remote_code(folder: Path) -> bool:
    return "auto_map" in json.loads((folder / "config.json").read_text())


def text_pipeline(folder: Path):
    from transformers import pipeline

    return pipeline("text-classification", model=str(folder), trust_remote_code=remote_code(folder),
                    function_to_apply="none")


def pipeline_chat_rewards(folder: Path, pairs: Sequence[dict]) -> list[float]:
    """The pipeline on each conversation rendered by the tokenizer's chat template."""
    pipe = text_pipeline(folder)
    texts = [pipe.tokenizer.apply_chat_template(c, tokenize=False)
             for side in ("chosen", "rejected") for c in conversations(pairs, side)]
    return [r["score"] for r in pipe(texts, batch_size=8)]


def pipeline_pair_rewards(folder: Path, pairs: Sequence[dict]) -> list[float]:
    """The pipeline on ``{"text": prompt, "text_pair": response}``, the prompt as the plain text of its messages."""
    from vrm.data.schema import prompt_text

    pipe = text_pipeline(folder)
    prompts, responses = flat(pairs)
    inputs = [{"text": prompt_text(p), "text_pair": r} for p, r in zip(prompts, responses)]
    return [r["score"] for r in pipe(inputs, batch_size=8)]


def grpo_trainer(reward_funcs: list, tokenizer, trust_remote_code: bool, output_dir: Path):
    """A GRPOTrainer on a tiny random Llama policy (its reward computation is what is checked)."""
    import datasets
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    policy = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    args = GRPOConfig(output_dir=str(output_dir), per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=4, report_to=[], use_cpu=True, bf16=False, logging_strategy="no",
                      save_strategy="no", trust_remote_code=trust_remote_code)
    prompts = datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": "Hi."}]] * 2})
    return GRPOTrainer(model=policy, reward_funcs=reward_funcs, args=args, train_dataset=prompts,
                       processing_class=tokenizer)


def grpo_rewards(folder: Path, pairs: Sequence[dict], output_dir: Path) -> dict[str, list[float]]:
    """``GRPOTrainer._calculate_rewards`` with ``reward_funcs=[FOLDER, RewardFunction(FOLDER)]``: conversational
    prompts and completions, and the pairs as plain strings (:func:`as_strings`; compare those with vrm-score of
    the string pairs, which differ from the conversations where the chat template is not the plain one)."""
    from transformers import AutoTokenizer

    from vrm.integrations.trl import RewardFunction

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote_code(folder))
    trainer = grpo_trainer([str(folder), RewardFunction(folder, device="cpu")], tokenizer, remote_code(folder),
                           output_dir)
    prompts, responses = flat(pairs)
    completions = [[{"role": "assistant", "content": r}] for r in responses]
    inputs = [{"prompt": p, "completion": c} for p, c in zip(prompts, completions)]
    chat = trainer._calculate_rewards(inputs, prompts, completions, [[0]] * len(prompts))
    text_prompts = flat(as_strings(pairs))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the path's model warns that bare strings hold no marker
        text = trainer._calculate_rewards([{"prompt": p} for p in text_prompts], text_prompts, list(responses),
                                          [[0]] * len(prompts))
    return {"path, conversational": chat[:, 0].tolist(), "RewardFunction, conversational": chat[:, 1].tolist(),
            "path, strings": text[:, 0].tolist(), "RewardFunction, strings": text[:, 1].tolist()}


def reward_trainer_metrics(folder: Path, pairs: Sequence[dict], output_dir: Path) -> dict[str, float]:
    """``RewardTrainer(model=FOLDER).evaluate(pairs)``: TRL's accuracy and margin over conversational pairs."""
    import datasets
    from trl import RewardConfig, RewardTrainer

    rows = {"prompt": [p["prompt"] for p in pairs],
            "chosen": [[{"role": "assistant", "content": p["chosen"]}] for p in pairs],
            "rejected": [[{"role": "assistant", "content": p["rejected"]}] for p in pairs]}
    data = datasets.Dataset.from_dict(rows)
    args = RewardConfig(output_dir=str(output_dir), per_device_eval_batch_size=len(pairs), report_to=[],
                        use_cpu=True, bf16=False, trust_remote_code=remote_code(folder), max_length=None)
    trainer = RewardTrainer(model=str(folder), args=args, train_dataset=data, eval_dataset=data)
    metrics = trainer.evaluate()
    return {"accuracy": metrics["eval_accuracy"], "margin": metrics["eval_margin"]}


def vrm_eval_metrics(folder: Path, pairs: Sequence[dict]) -> dict[str, float]:
    """What ``vrm-eval`` computes on the pairs: its scorer, its scoring of a split, its accuracy and margin."""
    from vrm.evaluation import metrics
    from vrm.evaluation.evaluate import score_split
    from vrm.evaluation.load_scorer import load_model_scorer

    scores = score_split(load_model_scorer(folder), pairs)
    return {"accuracy": metrics.pairwise_accuracy(scores.chosen, scores.rejected),
            "margin": metrics.mean_margin(scores.chosen, scores.rejected)}


def serving(app) -> tuple[str, Callable[[], None]]:
    """Start ``app`` on a free local port in a thread; returns its URL and a stop function."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join()
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


def openrlhf_rewards(folder: Path, pairs: Sequence[dict]) -> list[float]:
    """OpenRLHF's remote reward-model request (``{"query", "prompts", "labels"}``) against ``vrm-serve``'s app; the
    queries are the conversations rendered by the export's chat template (a policy sharing the tokenizer)."""
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    from vrm.scoring.scorer import RewardScorer
    from vrm.scoring.server import create_app

    scorer = RewardScorer.from_pretrained(folder)
    tok = scorer.tokenizer
    queries = [tok.apply_chat_template(c, tokenize=False)
               for side in ("chosen", "rejected") for c in conversations(pairs, side)]
    prompts = [tok.apply_chat_template(p["prompt"], tokenize=False, add_generation_prompt=True) for p in pairs] * 2
    url, stop = serving(create_app(scorer))
    try:
        executor = SingleTurnAgentExecutor(remote_rm_url=f"{url}/get_reward")
        answers = asyncio.run(executor._fetch_rewards_via_http(queries, prompts, [""] * len(queries)))
    finally:
        stop()
    return [r for answer in answers for r in answer["rewards"]]


def rewardbench_python() -> str | None:
    return os.environ.get(REWARDBENCH_PYTHON) or None


def rewardbench_rewards(folder: Path, pairs: Sequence[dict], python: str) -> list[float]:
    """RewardBench's formatting and pipeline call (``experiments/rewardbench_probe.py``) in its own environment."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "pairs.json", Path(tmp) / "scores.json"
        src.write_text(json.dumps(list(pairs)))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        subprocess.run([python, str(PROBE), str(folder), str(src), str(out)], check=True, env=env, cwd=tmp,
                       capture_output=True)
        scores = json.loads(out.read_text())
    return scores["chosen"] + scores["rejected"]


# -- the measurement --------------------------------------------------------------------------------
def max_diff(a: Sequence[float], b: Sequence[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def measure(n: int, workdir: Path) -> list[dict[str, Any]]:
    import vrm  # noqa: F401  (registers model_type 'vrm': the default export kind loads after it)

    pairs = synthetic_pairs(n)
    rows: list[dict[str, Any]] = []
    for name, model, encoder, options in EXPORTS:
        folder = build_export(workdir / name.replace(" ", "_").replace("-", ""), model, encoder, options)
        rows += export_rows(name, folder, pairs, bool(options.get("plain")))
    return rows


def export_rows(name: str, folder: Path, pairs: Sequence[dict], plain: bool) -> list[dict[str, Any]]:
    """One table row per client for one export folder."""
    reference = vrm_score_rewards(folder, pairs)
    string_reference = vrm_score_rewards(folder, as_strings(pairs))
    code = remote_code(folder)
    load = "trust_remote_code=True" if code else ("nothing" if plain else "import vrm")
    rows: list[dict[str, Any]] = []

    def row(client: str, how: str, rewards: list[float] | None, glue: str, note: str = "",
            expected: list[float] = reference) -> None:
        rows.append({"export": name, "client": client, "load": how, "glue": glue, "note": note,
                     "max_diff": None if rewards is None else max_diff(rewards, expected),
                     "reward_range": [min(reference), max(reference)]})

    row("transformers pipeline, chat template", load, pipeline_chat_rewards(folder, pairs), load)
    row("transformers pipeline, text/text_pair", load, pipeline_pair_rewards(folder, pairs), load)
    grpo = grpo_rewards(folder, pairs, folder.parent / "grpo")
    row("TRL GRPOTrainer, reward_funcs=PATH (conversational)", load, grpo["path, conversational"], load)
    row("TRL GRPOTrainer, reward_funcs=PATH (string prompts)", load, grpo["path, strings"], load,
        "a bare prompt + completion string holds no marker: not the trained reward (a vrm model warns)",
        string_reference)
    row("TRL GRPOTrainer, RewardFunction(PATH) (conversational)", "import vrm", grpo["RewardFunction, conversational"],
        "import vrm")
    row("TRL GRPOTrainer, RewardFunction(PATH) (string prompts)", "import vrm", grpo["RewardFunction, strings"],
        "import vrm", expected=string_reference)
    trl_eval = reward_trainer_metrics(folder, pairs, folder.parent / "reward_trainer")
    ours = vrm_eval_metrics(folder, pairs)
    row("TRL RewardTrainer.evaluate (conversational)", load, None, load,
        f"eval_accuracy {trl_eval['accuracy']:.4f} vs vrm-eval {ours['accuracy']:.4f}; "
        f"margin difference {abs(trl_eval['margin'] - ours['margin']):.2e}")
    row("OpenRLHF remote RM -> vrm-serve", "vrm-serve --model PATH", openrlhf_rewards(folder, pairs), "vrm-serve")
    rb_python = rewardbench_python()
    if rb_python is None:
        row("RewardBench formatting + pipeline (CPU)", "-", None, "-", f"not run: {REWARDBENCH_PYTHON} unset")
    elif code or plain:
        row("RewardBench formatting + pipeline (CPU)", load, rewardbench_rewards(folder, pairs, rb_python),
            "none (a --with-code or --plain export)")
    return rows


def markdown(rows: Sequence[dict], command: str, n: int) -> str:
    lines = [f"Max |reward - vrm-score reward| over the same {n} synthetic test pairs (chosen and rejected: "
             f"{2 * n} rewards), tiny randomly initialised models. Command: `{command}`", "",
             "| export | client | how a user loads it | max difference | glue | note |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        diff = "-" if r["max_diff"] is None else f"{r['max_diff']:.1e}"
        lines.append(f"| {r['export']} | {r['client']} | {r['load']} | {diff} | {r['glue']} | {r['note']} |")
    spans = {r["export"]: r["reward_range"] for r in rows}
    lines += ["", "vrm-score's rewards span " + "; ".join(f"{name} [{low:.3f}, {high:.3f}]"
                                                    for name, (low, high) in spans.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    command = "OMP_NUM_THREADS=1 python experiments/client_conformance.py" + \
        ("" if args.pairs == 50 else f" --pairs {args.pairs}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args.pairs, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "client_conformance.json").write_text(json.dumps(
        {"command": command, "pairs": args.pairs, "rows": rows}, indent=2) + "\n")
    (args.out / "client_conformance.md").write_text(markdown(rows, command, args.pairs))
    print(markdown(rows, command, args.pairs))


if __name__ == "__main__":
    sys.exit(main())
