"""What ``vrm-rlhf`` measures on held-out prompts every K steps: gold, the optimised (proxy) reward, KL to the
starting policy, cue rate, response length and the fraction of text the gold cannot parse; and the share of each step
spent in the reward call.

KL is the Monte Carlo estimate of KL(pi || pi_0) over whole responses: the mean over samples y ~ pi(. | x) of
``sum_t log pi(y_t | x, y_<t) - log pi_0(y_t | x, y_<t)`` (sampling at temperature 1, the distribution whose KL it is).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from vrm.rlhf.rewards import SyntheticGold, TimedReward


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence[str], n: int, max_new_tokens: int, temperature: float,
           batch_size: int = 256) -> tuple[list[str], list[list[int]], list[int]]:
    """``n`` completions per prompt: (texts, completion ids, index of the prompt of each), prompt-major."""
    texts, ids_out, owners = [], [], []
    flat = [(i, p) for i, p in enumerate(prompts) for _ in range(n)]
    device = next(model.parameters()).device
    for start in range(0, len(flat), batch_size):
        chunk = flat[start:start + batch_size]
        enc = tokenizer([p for _, p in chunk], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        out = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        completion = out[:, enc["input_ids"].shape[1]:]
        for (owner, _), row in zip(chunk, completion.tolist()):
            ids = cut_at_eos(row, tokenizer.eos_token_id, tokenizer.pad_token_id)
            ids_out.append(ids)
            texts.append(tokenizer.decode(ids, skip_special_tokens=True))
            owners.append(owner)
    return texts, ids_out, owners


def cut_at_eos(ids: list[int], eos: int | None, pad: int | None) -> list[int]:
    """The completion up to and including its first eos (the tokens the policy chose); padding after it dropped."""
    for i, token in enumerate(ids):
        if token == eos:
            return ids[:i + 1]
    while ids and ids[-1] == pad and pad != eos:
        ids = ids[:-1]
    return ids


@torch.no_grad()
def sequence_logprobs(model, tokenizer, prompts: Sequence[str], completions: Sequence[list[int]],
                      batch_size: int = 128) -> list[float]:
    """log pi(completion | prompt) of each (prompt text, completion ids), summed over the completion's tokens."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        rows = [tokenizer(p, add_special_tokens=False)["input_ids"] + list(c)
                for p, c in zip(prompts[start:start + batch_size], completions[start:start + batch_size])]
        starts = [len(tokenizer(p, add_special_tokens=False)["input_ids"])
                  for p in prompts[start:start + batch_size]]
        width = max(len(r) for r in rows)
        pad = tokenizer.pad_token_id or 0
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
        for b, (row, s) in enumerate(zip(rows, starts)):
            first = width - len(row) + s  # index of the completion's first token in ids
            out.append(float(logp[b, first - 1:].sum()) if len(row) > s else 0.0)
    return out


class HeldOutTracker(TrainerCallback):
    """Every ``every`` steps (and at steps 0 and the end): sample the held-out prompts and append one JSON line of
    metrics to ``path``; the sampling runs in a forked RNG, so it leaves training's random stream as it was."""

    def __init__(self, path: Path, prompts: Sequence[str], reference, tokenizer, reward: TimedReward, gold,
                 every: int, samples_per_prompt: int, max_new_tokens: int, temperature: float, seed: int,
                 separator: str):
        self.path, self.prompts, self.reference, self.tokenizer = path, list(prompts), reference, tokenizer
        self.reward, self.gold, self.every, self.n = reward, gold, every, samples_per_prompt
        self.max_new_tokens, self.temperature, self.seed, self.separator = max_new_tokens, temperature, seed, separator
        self.step_start = 0.0
        self.step_seconds = 0.0
        self.done = {row["step"] for row in read_rows(path)}

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_start = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.step_seconds += time.perf_counter() - self.step_start
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self.evaluate(model, state.global_step, state)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self.evaluate(model, 0, state)

    def evaluate(self, model, step: int, state=None) -> None:
        if step in self.done:
            return
        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 7919 * step)
            row = measure(model, self.reference, self.tokenizer, self.prompts, self.n, self.max_new_tokens,
                          self.temperature, self.reward, self.gold, self.separator)
        model.train(was_training)
        train_reward = [h.get("reward") for h in (state.log_history if state else []) if "reward" in h]
        row.update(step=step, reward_seconds=self.reward.seconds, reward_calls=self.reward.calls,
                   step_seconds=self.step_seconds,
                   train_reward=train_reward[-1] if train_reward else None)
        append_row(self.path, row)
        self.done.add(step)


def measure(policy, reference, tokenizer, prompts: Sequence[str], n: int, max_new_tokens: int, temperature: float,
            reward: TimedReward, gold, separator: str) -> dict[str, Any]:
    """The held-out metrics of ``policy`` (one row of ``metrics.jsonl``)."""
    texts, ids, owners = sample(policy, tokenizer, prompts, n, max_new_tokens, temperature)
    owner_prompts = [prompts[i] for i in owners]
    kl = [a - b for a, b in zip(sequence_logprobs(policy, tokenizer, owner_prompts, ids),
                                sequence_logprobs(reference, tokenizer, owner_prompts, ids))]
    plain = [reward.strip(p) for p in owner_prompts]
    seconds, calls = reward.seconds, reward.calls
    proxy = reward(owner_prompts, texts)
    reward.seconds, reward.calls = seconds, calls  # the evaluation's calls are not the training step's
    row: dict[str, Any] = {"proxy": mean(proxy), "kl": mean(kl), "length": mean([len(i) for i in ids]),
                           "truncated": mean([float(not i or i[-1] != tokenizer.eos_token_id) for i in ids])}
    if isinstance(gold, SyntheticGold):
        readings = [gold.read(p, t) for p, t in zip(plain, texts)]
        row.update(gold=mean([r.gold for r in readings]), cue_rate=mean([float(r.cue) for r in readings]),
                   unparseable=mean([r.unparseable_fraction for r in readings]))
    else:
        row.update(gold=mean(gold(plain, texts)), cue_rate=None, unparseable=None)
    row["sqrt_kl"] = math.sqrt(max(row["kl"], 0.0))
    row["example"] = texts[0]
    return row


def mean(values: Sequence[float]) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Rewrite ``path`` with ``row`` appended, atomically (a killed run leaves the old file whole)."""
    rows = [r for r in read_rows(path) if r["step"] != row["step"]] + [row]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["step"])))
    os.replace(tmp, path)


def keep_rows_up_to(path: Path, step: int) -> None:
    """On resume from a checkpoint at ``step``: drop rows measured after it (they will be measured again)."""
    rows = [r for r in read_rows(path) if r["step"] <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)
