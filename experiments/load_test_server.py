"""Load test of ``vrm-serve`` on 127.0.0.1: mixed good and bad requests from concurrent clients, bounded, checked.

Starts ``vrm-serve`` (a subprocess) on a free port with an exported model (``--model DIR``; default: a tiny
randomly initialised VRM on the tiny BERT encoder, exported to a temporary folder), waits for ``/health``, then
sends a fixed number of requests from several client threads (one ``httpx.Client`` each) and stops by itself.

About a third of the requests are bad: malformed JSON, missing or unknown keys, wrong types, a batch over
``--max-batch-size``, a ``/get_reward`` query without the response marker, a wrong method, an unknown path. Each
bad request must get its 4xx; each good one (``/score`` pairs, ``/get_reward`` queries, ``/health``) a 200 whose
rewards equal those computed directly with ``RewardScorer`` on the same folder (up to ``--atol``). Any 5xx, a wrong
status or a wrong reward fails the run (exit 1). p50/p99 latency (ms) and throughput are printed and written to
``experiments/results/load_test_server.json`` (``--quick``: ``load_test_server_quick.json``) with the command.

    python experiments/load_test_server.py            # 1000 requests, 8 clients
    python experiments/load_test_server.py --quick    # 200 requests, 4 clients (the test runs this)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = ["How do I sort a list in Python?", "Write a short poem about the sea.", "What is 2 + 2?",
           "Name a primary colour.", "Explain recursion briefly.", "Say hello in French."]
RESPONSES = ["Use sorted(); it returns a new list.", "Waves roll in and out.", "4.", "Blue.",
             "A function that calls itself on a smaller input.", "Bonjour !", "I don't know.", ""]


@dataclass
class Case:
    """One request and what must come back: ``expected`` rewards (good) or the 4xx ``status`` (bad)."""

    kind: str
    method: str
    path: str
    status: int
    body: Any = None  # JSON, or bytes sent as they are
    expected: list[float] | None = None


@dataclass
class Outcome:
    case: Case
    status: int
    seconds: float
    problem: str | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_export(folder: Path) -> Path:
    """A randomly initialised tiny VRM (tiny BERT encoder) exported to ``folder``."""
    import torch

    from vrm.config.compose import compose_config
    from vrm.models.encoder import load_encoder
    from vrm.scoring.export import export_model
    from vrm.training.build import build_module

    cfg = compose_config(["encoder=tiny_bert", "model=vrm"], folder / "run")
    enc = load_encoder(cfg.encoder)
    torch.manual_seed(0)
    module = build_module(cfg, enc)
    return export_model(module.net, enc.tokenizer, folder / "model")


def build_cases(model: Path, n: int, max_batch: int, seed: int) -> list[Case]:
    """``n`` requests, good ones with their rewards computed directly by RewardScorer."""
    from vrm.scoring.scorer import RewardScorer

    scorer = RewardScorer.from_pretrained(model)
    marker = scorer.response_marker
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        roll = rng.random()
        size = rng.randint(1, 4)
        pairs = [(rng.choice(PROMPTS), rng.choice(RESPONSES)) for _ in range(size)]
        if roll < 0.35:
            rewards = scorer.score([p for p, _ in pairs], [r for _, r in pairs])
            cases.append(Case("score", "POST", "/score", 200, {"pairs": [{"prompt": p, "response": r}
                                                                          for p, r in pairs]}, rewards))
        elif roll < 0.6:
            queries = [f"{p}{marker}{r}" for p, r in pairs]
            rewards = scorer.score_encoded([scorer.encode_query(q) for q in queries])["reward"]
            cases.append(Case("get_reward", "POST", "/get_reward", 200, {"query": queries}, rewards))
        elif roll < 0.67:
            cases.append(Case("health", "GET", "/health", 200))
        else:
            cases.append(rng.choice(bad_cases(max_batch)))
    return cases


def bad_cases(max_batch: int) -> list[Case]:
    pair = {"prompt": "Hi", "response": "Hello"}
    return [
        Case("bad: malformed json", "POST", "/score", 422, b'{"pairs": [{"prompt": "Hi",'),
        Case("bad: not json", "POST", "/get_reward", 422, b"\xff\xfe garbage"),
        Case("bad: missing key", "POST", "/score", 422, {"pair": [pair]}),
        Case("bad: unknown key", "POST", "/score", 422, {"pairs": [{**pair, "extra": 1}]}),
        Case("bad: wrong type", "POST", "/score", 422, {"pairs": [{"prompt": 3, "response": ["x"]}]}),
        Case("bad: negative num_samples", "POST", "/score", 422, {"pairs": [pair], "num_samples": -1}),
        Case("bad: query not a list", "POST", "/get_reward", 422, {"query": "Hi"}),
        Case("bad: no response marker", "POST", "/get_reward", 422, {"query": ["no marker in this text"]}),
        Case("bad: prompts length", "POST", "/get_reward", 422, {"query": ["a"], "prompts": ["a", "b"]}),
        Case("bad: batch too large", "POST", "/score", 413, {"pairs": [pair] * (max_batch + 1)}),
        Case("bad: wrong method", "GET", "/score", 405),
        Case("bad: unknown path", "POST", "/nothing", 404, {}),
    ]


def send(client: httpx.Client, case: Case, atol: float) -> Outcome:
    kwargs = {}
    if isinstance(case.body, bytes):
        kwargs = {"content": case.body, "headers": {"content-type": "application/json"}}
    elif case.body is not None:
        kwargs = {"json": case.body}
    start = time.perf_counter()
    try:
        response = client.request(case.method, case.path, **kwargs)
    except httpx.HTTPError as err:
        return Outcome(case, 0, time.perf_counter() - start, f"no answer: {type(err).__name__}: {err}")
    seconds = time.perf_counter() - start
    problem = None
    if response.status_code != case.status:
        problem = f"status {response.status_code}, expected {case.status}: {response.text[:200]}"
    elif case.expected is not None:
        got = response.json().get("rewards")
        if got is None or len(got) != len(case.expected) or any(
                abs(a - b) > atol for a, b in zip(got, case.expected)):
            problem = f"rewards {got}, expected {case.expected}"
    return Outcome(case, response.status_code, seconds, problem)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def start_server(model: Path, port: int, max_batch: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-c", "from vrm.cli.serve import main; main()",
                             "--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                             "--max-batch-size", str(max_batch), "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def wait_healthy(proc: subprocess.Popen, base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vrm-serve exited with {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"vrm-serve did not answer /health within {timeout:.0f} s")


def run(model: Path, requests: int, clients: int, max_batch: int, seed: int, atol: float) -> dict:
    cases = build_cases(model, requests, max_batch, seed)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(model, port, max_batch)
    try:
        wait_healthy(proc, base, timeout=120)
        shares = [cases[i::clients] for i in range(clients)]

        def client_run(share: list[Case]) -> list[Outcome]:
            with httpx.Client(base_url=base, timeout=60.0) as client:
                return [send(client, case, atol) for case in share]

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            outcomes = [o for result in pool.map(client_run, shares) for o in result]
        elapsed = time.perf_counter() - start
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    latencies = [o.seconds * 1000 for o in outcomes]
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    problems = [f"{o.case.kind}: {o.problem}" for o in outcomes if o.problem]
    good = [o for o in outcomes if o.case.status == 200]
    return {
        "requests": len(outcomes), "clients": clients, "good": len(good), "bad": len(outcomes) - len(good),
        "good_answered_correctly": sum(o.problem is None for o in good),
        "server_errors_5xx": sum(o.status >= 500 for o in outcomes), "statuses": statuses,
        "latency_ms": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "max": max(latencies)},
        "throughput_rps": len(outcomes) / elapsed, "seconds": elapsed, "problems": problems[:20],
        "num_problems": len(problems),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="export folder (default: a tiny random VRM)")
    parser.add_argument("--requests", type=int, default=None, help="requests in all (default 1000; --quick 200)")
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients (default 8; --quick 4)")
    parser.add_argument("--quick", action="store_true", help="200 requests from 4 clients")
    parser.add_argument("--max-batch-size", type=int, default=16, help="vrm-serve --max-batch-size (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atol", type=float, default=1e-5, help="largest reward difference accepted")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    args = parser.parse_args(argv)
    requests = args.requests or (200 if args.quick else 1000)
    clients = args.clients or (4 if args.quick else 8)
    out = args.out or RESULTS / ("load_test_server_quick.json" if args.quick else "load_test_server.json")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_export(Path(tmp))
        result = run(model, requests, clients, args.max_batch_size, args.seed, args.atol)
    result["model"] = str(args.model) if args.model else "tiny random VRM (tiny_bert)"
    result["command"] = shlex.join(["python", "experiments/load_test_server.py", *(argv if argv is not None
                                                                                     else sys.argv[1:])])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    lat = result["latency_ms"]
    print(f"{result['requests']} requests ({result['good']} good, {result['bad']} bad) from {clients} clients in "
          f"{result['seconds']:.1f} s ({result['throughput_rps']:.0f}/s): p50 {lat['p50']:.1f} ms, "
          f"p99 {lat['p99']:.1f} ms; 5xx {result['server_errors_5xx']}; good answered correctly "
          f"{result['good_answered_correctly']}/{result['good']}; statuses {result['statuses']}")
    for problem in result["problems"]:
        print("PROBLEM", problem)
    print(f"wrote {out}")
    return 0 if result["num_problems"] == 0 and result["server_errors_5xx"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
