"""``vrm-serve``'s batching: concurrent requests share forward passes, each gets exactly its own outputs (the rewards
it gets alone, up to 1e-5), requests asking for different things are never mixed, one bad request never fails its
batch-mates, a half-sent request stalls nobody, and ``--no-batching`` keeps one request at a time."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from conftest import HANG_TIMEOUT, random_export

from vrm.cli.serve import main as serve_main
from vrm.scoring.batching import Batcher, BatchSettings, SerialScorer
from vrm.scoring.scorer import RewardScorer
from vrm.scoring.server import ServerLimits, create_app

ATOL = 1e-5
#: A window long enough that requests sent together always meet in one batch, even on a loaded machine.
GATHER_ALL = BatchSettings(window_ms=2000)
PAIRS = [("Name a fruit.", "An apple."), ("What is 2 + 2?", "4."), ("Say hi.", "Hello there, friend!"),
         ("Tell me about the sea. " * 12, "The sea is large and deep and full of fish. " * 10)]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> RewardScorer:
    root = tmp_path_factory.mktemp("batches")
    return RewardScorer.from_pretrained(random_export(root, ["model=vrm", "data.max_length=512"]), batch_size=4)


def hh_query(prompt: str, response: str) -> str:
    return f"\n\nHuman: {prompt}\n\nAssistant: {response}"


class Spy:
    """A scorer that records each ``score_encoded`` call (texts, num_samples) and fails any call holding a text
    whose length in tokens is in ``poison``, as a forward pass that fails on one request would."""

    def __init__(self, scorer, poison: frozenset[int] = frozenset()):
        self.scorer, self.poison, self.calls = scorer, poison, []

    def __getattr__(self, name):
        return getattr(self.scorer, name)

    def score_encoded(self, encoded, num_samples=0, **kwargs):
        self.calls.append((len(encoded), num_samples))
        if any(len(e.input_ids) in self.poison for e in encoded):
            raise ValueError("this text cannot be scored")
        return self.scorer.score_encoded(encoded, num_samples, **kwargs)


def run_together(batcher, requests: list[tuple[list, int]]) -> list:
    """Submit every (encoded texts, num_samples) request at once from one event loop; outcomes in order."""
    async def main():
        return await asyncio.gather(*(batcher.score(enc, n) for enc, n in requests), return_exceptions=True)
    try:
        return asyncio.run(main())
    finally:
        batcher.close()


def test_concurrent_requests_share_one_call_and_each_gets_its_own_rewards(scorer):
    encoded = [scorer.encode_pair(p, r) for p, r in PAIRS]
    alone = [scorer.score_encoded([e])["reward"][0] for e in encoded]
    spy = Spy(scorer)
    requests = [([encoded[0]], 0), ([encoded[3], encoded[1]], 0), ([encoded[2]], 0)]
    outcomes = run_together(Batcher(spy, GATHER_ALL), requests)
    assert spy.calls == [(4, 0)]  # one shared call (the scorer cuts it into forward passes of batch_size rows)
    assert outcomes[0]["reward"] == pytest.approx([alone[0]], abs=ATOL)
    assert outcomes[1]["reward"] == pytest.approx([alone[3], alone[1]], abs=ATOL)
    assert outcomes[2]["reward"] == pytest.approx([alone[2]], abs=ATOL)
    assert all(len(o["weights"]) == len(o["reward"]) and len(o["weights"][0]) == 5 for o in outcomes)


def test_requests_with_different_num_samples_are_scored_apart(scorer):
    encoded = [scorer.encode_pair(p, r) for p, r in PAIRS[:3]]
    spy = Spy(scorer)
    outcomes = run_together(Batcher(spy, GATHER_ALL), [([encoded[0]], 0), ([encoded[1]], 8), ([encoded[2]], 0)])
    assert sorted(spy.calls) == [(1, 8), (2, 0)]
    assert "reward_std" not in outcomes[0] and "reward_std" not in outcomes[2]
    assert len(outcomes[1]["reward_std"]) == 1 and outcomes[1]["reward_std"][0] >= 0


def test_a_request_that_fails_in_the_shared_call_fails_alone(scorer):
    encoded = [scorer.encode_pair(p, r) for p, r in (PAIRS[0], PAIRS[3], PAIRS[2])]
    alone = [scorer.score_encoded([e])["reward"][0] for e in encoded]
    spy = Spy(scorer, poison=frozenset({len(encoded[1].input_ids)}))
    assert len({len(e.input_ids) for e in encoded}) == 3
    outcomes = run_together(Batcher(spy, GATHER_ALL), [([e], 0) for e in encoded])
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[0]["reward"] == pytest.approx([alone[0]], abs=ATOL)
    assert outcomes[2]["reward"] == pytest.approx([alone[2]], abs=ATOL)
    assert spy.calls[0] == (3, 0) and sorted(spy.calls[1:]) == [(1, 0)] * 3  # shared, then each alone


def test_the_row_budget_splits_batches(scorer):
    encoded = [scorer.encode_pair(p, r) for p, r in PAIRS]
    spy = Spy(scorer)
    batcher = Batcher(spy, BatchSettings(window_ms=2000, max_rows=3))
    outcomes = run_together(batcher, [([encoded[0], encoded[1]], 0), ([encoded[2], encoded[3]], 0), ([encoded[0]], 0)])
    assert [n for n, _ in spy.calls] == [2, 3]  # 2 + 2 > 3: the second starts the next batch, the third joins it
    assert batcher.batches == [(1, 2), (2, 3)]
    assert outcomes[2]["reward"] == pytest.approx(outcomes[0]["reward"][:1], abs=ATOL)


def test_serial_scorer_scores_each_request_alone(scorer):
    encoded = [scorer.encode_pair(p, r) for p, r in PAIRS]
    spy = Spy(scorer)
    outcomes = run_together(SerialScorer(spy), [([e], 0) for e in encoded])
    assert spy.calls == [(1, 0)] * 4
    assert [o["reward"][0] for o in outcomes] == pytest.approx(
        [scorer.score_encoded([e])["reward"][0] for e in encoded], abs=ATOL)


@pytest.fixture
def served(scorer):
    """A batching server on a real socket (whose batcher the test can read); yields (base url, batcher)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(scorer, ServerLimits(body_timeout=30.0), batching=GATHER_ALL)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + HANG_TIMEOUT
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.runner
    finally:
        server.should_exit = True
        thread.join(timeout=HANG_TIMEOUT)
        sock.close()


def post_all(url: str, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda r: httpx.post(url + r[0], json=r[1], timeout=HANG_TIMEOUT), requests))


def test_the_server_answers_each_concurrent_request_with_its_own_rewards(served, scorer):
    url, batcher = served
    alone = scorer.score([p for p, _ in PAIRS], [r for _, r in PAIRS])
    answers = post_all(url, [
        ("/get_reward", {"query": [hh_query(*PAIRS[0])]}),
        ("/get_reward", {"query": [hh_query(*PAIRS[3]), hh_query(*PAIRS[1])]}),  # a long text beside a short one
        ("/score", {"pairs": [{"prompt": PAIRS[2][0], "response": PAIRS[2][1]}]}),
        ("/get_reward", {"query": ["no marker here"]}),  # refused before the queue: 422, alone
        ("/score", {"pairs": [{"prompt": PAIRS[1][0], "response": PAIRS[1][1]}], "num_samples": 4}),
    ])
    assert [a.status_code for a in answers] == [200, 200, 200, 422, 200], [a.text for a in answers]
    assert answers[0].json() == {"rewards": pytest.approx([alone[0]], abs=ATOL)}
    assert answers[1].json() == {"rewards": pytest.approx([alone[3], alone[1]], abs=ATOL)}
    assert answers[2].json()["rewards"] == pytest.approx([alone[2]], abs=ATOL)
    assert set(answers[2].json()) == {"rewards", "objective_scores", "weights"}
    assert len(answers[4].json()["reward_std"]) == 1
    assert "query[0]" in answers[3].text
    assert max(texts for _, texts in batcher.batches) > 1  # some requests did share a batch
    health = httpx.get(url + "/health", timeout=HANG_TIMEOUT).json()["batching"]
    assert health["window_ms"] == 2000 and health["scored"] == {"batches": len(batcher.batches), "texts": 5}


def test_a_half_sent_request_does_not_stall_the_others(served, scorer):
    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_TIMEOUT) as slow:
        slow.sendall(b"POST /get_reward HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"query\": [")
        answers = post_all(url, [("/get_reward", {"query": [hh_query(*pair)]}) for pair in PAIRS[:3]])
        assert [a.status_code for a in answers] == [200] * 3
        assert [a.json()["rewards"][0] for a in answers] == pytest.approx(
            scorer.score([p for p, _ in PAIRS[:3]], [r for _, r in PAIRS[:3]]), abs=ATOL)


def test_vrm_serve_passes_the_batching_options(scorer, monkeypatch, capsys):
    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: apps.append(app))
    folder = str(scorer.model.name_or_path)
    serve_main(["--model", folder, "--port", "0", "--batch-window-ms", "2.5", "--max-batch-rows", "64",
                "--max-batch-tokens", "4096"])
    serve_main(["--model", folder, "--port", "0", "--no-batching"])
    batched, serial = (app.state.runner for app in apps)
    assert isinstance(batched, Batcher) and batched.settings == BatchSettings(True, 2.5, 64, 4096)
    assert isinstance(serial, SerialScorer)
    with pytest.raises(SystemExit):
        serve_main(["--model", folder, "--batch-window-ms", "-1"])
    assert "--batch-window-ms -1 must be in [0, 10000]" in capsys.readouterr().err


@pytest.mark.slow
def test_the_serving_benchmark_runs_all_three_servers_and_their_rewards_agree(tmp_path, monkeypatch):
    """experiments/bench_serving.py on a tiny export, two client counts, short cells: a run, not a speed check."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "bench_serving.py"
    spec = importlib.util.spec_from_file_location("bench_serving", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)
    spec.loader.exec_module(bench)
    table = tmp_path / "table.md"
    results = bench.main(["--encoder", "tiny_bert", "--quick", "--seconds", "0.3", "--clients", "1,16",
                          "--out", str(tmp_path), "--markdown", str(table)])
    assert {(c["server"], c["clients"], c["queries_per_request"]) for c in results["cells"]} == {
        (server, clients, size) for server in bench.SERVERS for clients in (1, 16) for size in (1, 16)}
    assert all(c["requests"] > 0 and c["p50_ms"] <= c["p99_ms"] for c in results["cells"])
    assert results["max_reward_diff"] <= ATOL
    assert all(value > 0 for value in results["goals"].values())
    assert table.read_text() == (tmp_path / "bench_serving_quick.md").read_text()
    assert "| batching | 16 | 1 |" in table.read_text()
