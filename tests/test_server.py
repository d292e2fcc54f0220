"""The reward server: OpenRLHF's /get_reward with the prompt/response split rule, /score with VRM's extras, 4xx
answers for bad requests after which the server keeps serving, and one run on a real socket."""

from __future__ import annotations

import socket
import threading
import time

import bpe_tokenizers
import httpx
import pytest
import uvicorn
from conftest import HANG_TIMEOUT, random_model
from fastapi.testclient import TestClient

from vrm.cli.serve import main as serve_main
from vrm.scoring.base import DEFAULT_RESPONSE_MARKER, split_query
from vrm.scoring.export import export_model
from vrm.scoring.scorer import RewardScorer
from vrm.scoring.server import ServerLimits, create_app

CONVERSATIONS = [
    ([{"role": "user", "content": "How do I sort a list?"}], "Use sorted()."),
    ([{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "An apple."},
      {"role": "user", "content": "And a red one?"}], "A strawberry. Assistant: it is red."),
]
LIMITS = ServerLimits(max_batch_size=4, max_text_chars=500, max_num_samples=32)


def hh_query(messages: list[dict], response: str) -> str:
    turns = "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages)
    return f"{turns}\n\nAssistant: {response}"


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    """Randomly initialised VRMs on a tiny BERT and a tiny Llama, and one on a tiny Llama trained with a ChatML
    tokenizer (its chat template is the input contract)."""
    root = tmp_path_factory.mktemp("server")
    out = {}
    for name, encoder, tokenizer in (("tiny_bert", "tiny_bert", None), ("tiny_llama", "tiny_llama", None),
                                     ("templated", "tiny_llama", bpe_tokenizers.qwen2_like)):
        net, enc = random_model(["model=vrm", f"encoder={encoder}"], root / name,
                                tokenizer=None if tokenizer is None else tokenizer())
        out[name] = export_model(net, enc.tokenizer, root / name / "export")
    return out


@pytest.fixture(scope="module")
def scorer(exports) -> RewardScorer:
    return RewardScorer.from_pretrained(exports["tiny_bert"], batch_size=2)


@pytest.fixture(scope="module")
def client(scorer) -> TestClient:
    return TestClient(create_app(scorer, LIMITS, model_name="tiny"))


def expected_rewards(scorer: RewardScorer) -> list[float]:
    return scorer.score([m for m, _ in CONVERSATIONS], [r for _, r in CONVERSATIONS])


def test_split_rule_takes_the_last_marker_or_the_given_prompt():
    text = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d"
    assert split_query(text, DEFAULT_RESPONSE_MARKER) == (text[:-2], " d")
    assert split_query(text, "<none>", prompt="\n\nHuman: a") == ("\n\nHuman: a", text[len("\n\nHuman: a"):])
    with pytest.raises(ValueError, match="no response marker"):
        split_query("no marker", DEFAULT_RESPONSE_MARKER)


def test_get_reward_scores_hh_transcripts_like_their_pairs(client, scorer):
    queries = [hh_query(m, r) for m, r in CONVERSATIONS]
    answer = client.post("/get_reward", json={"query": queries, "labels": ["ignored", "ignored"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["rewards"] == pytest.approx(expected_rewards(scorer), abs=1e-5)
    # A padding token around a query (OpenRLHF decodes padded sequences) does not change it.
    padded = ["[PAD][PAD]" + q + "[PAD]" for q in queries]
    assert client.post("/get_reward", json={"query": padded}).json()["rewards"] == answer.json()["rewards"]


def test_get_reward_splits_after_the_given_prompt(client, scorer):
    # With "prompts" (newer OpenRLHF) the split is the prompt prefix, whatever markers the response holds.
    prompts = [hh_query(m, "")[:-1] for m, _ in CONVERSATIONS]  # ends with "Assistant:"
    queries = [p + " " + r for p, (_, r) in zip(prompts, CONVERSATIONS)]
    answer = client.post("/get_reward", json={"query": queries, "prompts": prompts})
    assert answer.status_code == 200, answer.text
    assert answer.json()["rewards"] == pytest.approx(expected_rewards(scorer), abs=1e-5)


def test_get_reward_with_a_chat_template_splits_at_its_generation_prompt(exports):
    scorer = RewardScorer.from_pretrained(exports["templated"])
    assert scorer.tokenizer.chat_template == bpe_tokenizers.CHATML
    tokenizer = scorer.tokenizer
    queries = [tokenizer.apply_chat_template(m + [{"role": "assistant", "content": r}], tokenize=False)
               for m, r in CONVERSATIONS]
    answer = TestClient(create_app(scorer)).post("/get_reward", json={"query": queries})
    assert answer.status_code == 200, answer.text
    assert answer.json()["rewards"] == pytest.approx(expected_rewards(scorer), abs=1e-5)


def test_score_returns_rewards_and_vrm_extras(client, scorer):
    pairs = [{"prompt": m, "response": r} for m, r in CONVERSATIONS] + [{"prompt": "Hi", "response": "Hello"}]
    answer = client.post("/score", json={"pairs": pairs, "num_samples": 8})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["rewards"][:2] == pytest.approx(expected_rewards(scorer), abs=1e-5)
    assert len(body["objective_scores"][0]) == len(body["weights"][0]) == 5  # K = 5, the default
    assert sum(body["weights"][0]) == pytest.approx(1.0, abs=1e-5)
    assert len(body["reward_std"]) == 3
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["head"] == "vrm" and health["response_marker"] == "\n\nAssistant:"


@pytest.mark.parametrize("path, request_kwargs, status, message", [
    ("/get_reward", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
    ("/get_reward", {"json": {"queries": ["x"]}}, 422, "query"),
    ("/get_reward", {"json": {"query": "one string"}}, 422, "query"),
    ("/get_reward", {"json": {"query": ["\n\nHuman: a\n\nAssistant: b", "no marker"]}}, 422, "query[1]"),
    ("/get_reward", {"json": {"query": ["x"], "prompts": ["x", "y"]}}, 422, "prompts"),
    ("/get_reward", {"json": {"query": ["\n\nAssistant: x"] * 5}}, 413, "max-batch-size"),
    ("/get_reward", {"json": {"query": ["\n\nAssistant:" + "x" * 600]}}, 413, "max-text-chars"),
    ("/get_reward", {"content": b"x" * (LIMITS.max_body_bytes + 1),
                     "headers": {"content-type": "application/json"}}, 413, "body"),
    ("/score", {"json": {"pairs": [{"prompt": "a"}]}}, 422, "response"),
    ("/score", {"json": {"pairs": [{"prompt": [{"role": "user"}], "response": "b"}]}}, 422, "content"),
    ("/score", {"json": {"pairs": [{"prompt": "a", "response": "b"}], "num_samples": -1}}, 422, "num_samples"),
    ("/score", {"json": {"pairs": [{"prompt": "a", "response": "b"}], "num_samples": 33}}, 413, "max-num-samples"),
    ("/score", {"json": {"pairs": [{"prompt": "a" * 300, "response": "b" * 300}]}}, 413, "pairs[0]"),
])
def test_bad_requests_get_4xx_and_the_next_good_one_succeeds(client, path, request_kwargs, status, message):
    answer = client.post(path, **request_kwargs)
    assert answer.status_code == status, answer.text
    assert message in answer.text
    good = client.post("/get_reward", json={"query": [hh_query(*CONVERSATIONS[0])]})
    assert good.status_code == 200 and len(good.json()["rewards"]) == 1


def test_real_socket_server(scorer):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(scorer, LIMITS), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + HANG_TIMEOUT
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        assert httpx.post(f"{url}/get_reward", content=b"{oops", headers={"content-type": "application/json"}
                          ).status_code == 422
        answer = httpx.post(f"{url}/get_reward", json={"query": [hh_query(m, r) for m, r in CONVERSATIONS]})
        assert answer.status_code == 200
        assert answer.json()["rewards"] == pytest.approx(expected_rewards(scorer), abs=1e-5)
    finally:
        server.should_exit = True
        thread.join(timeout=HANG_TIMEOUT)
        sock.close()


def test_vrm_serve_reports_a_bad_model_folder_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        serve_main(["--model", str(tmp_path / "missing"), "--port", "0"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err
