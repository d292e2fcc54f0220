"""``vrm-score`` and ``vrm-serve`` with ``--scorer proxy``: the same rewards as ProxyRewardScorer.score, the
question type and reference of a line or pair passed through, full-text queries split at the default marker, and
bad input refused with a message."""

from __future__ import annotations

import json

import pytest
import uvicorn
from fastapi.testclient import TestClient
from omegaconf import OmegaConf

from vrm.cli.score import main as score_main
from vrm.cli.serve import main as serve_main
from vrm.config.compose import CONFIG_DIR
from vrm.proxy import ProxyRewardScorer

USER = [{"role": "user", "content": "How do I sort a list in Python?"}]
PROMPTS = ["What is the capital of France?", USER, USER]
RESPONSES = ["The capital of France is Paris, a large city on the Seine.",
             "Use sorted(xs) for a new list, or xs.sort() to sort it in place.",
             "Call sorted() on it."]
QUESTION_TYPES = ["closed", None, ""]
REFERENCES = ["Paris is the capital of France.", None, None]


@pytest.fixture(scope="module")
def proxy() -> ProxyRewardScorer:
    return ProxyRewardScorer.from_config(OmegaConf.load(CONFIG_DIR / "scorer" / "proxy.yaml"))


@pytest.fixture(scope="module")
def expected(proxy) -> list[float]:
    return proxy.score(PROMPTS, RESPONSES, question_types=QUESTION_TYPES, references=REFERENCES)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def client(monkeypatch_module) -> TestClient:
    apps = []
    monkeypatch_module.setattr(uvicorn, "run", lambda app, **kwargs: apps.append(app))
    serve_main(["--scorer", "proxy", "--port", "0"])
    return TestClient(apps[0])


def test_vrm_score_proxy_gives_the_scorer_rewards(expected, tmp_path):
    lines = [{"id": 0, "prompt": PROMPTS[0], "response": RESPONSES[0], "question_type": "closed",
              "reference": REFERENCES[0]},
             {"id": 1, "messages": USER + [{"role": "assistant", "content": RESPONSES[1]}]},
             {"id": 2, "query": f"\n\nHuman: {USER[0]['content']}\n\nAssistant: {RESPONSES[2]}", "question_type": ""}]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    score_main(["--scorer", "proxy", "--input", str(src), "--output", str(dst), "--no-progress"])
    scored = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [s["reward"] for s in scored] == pytest.approx(expected, abs=1e-6)
    assert [s["id"] for s in scored] == [0, 1, 2] and scored[0]["reference"] == REFERENCES[0]
    assert not any(key in s for s in scored for key in ("objective_scores", "weights", "reward_std"))


@pytest.mark.parametrize("argv, code, message", [
    (["--scorer", "proxy", "--model", "x"], 2, "--model does not go with --scorer proxy"),
    (["--scorer", "proxy", "--num-samples", "4"], 2, "--num-samples"),
    (["--proxy-encoder", "minilm"], 2, "--model is required"),
    (["--model", "x", "--proxy-encoder", "minilm"], 2, "--proxy-encoder needs --scorer proxy"),
    (["--scorer", "proxy"], 1, "line 2, field 'question_type'"),
])
def test_vrm_score_proxy_refuses_bad_options_and_lines(argv, code, message, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n"
                   + json.dumps({"prompt": "a", "response": "b", "question_type": "maybe"}) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        score_main(argv + ["--input", str(src), "--output", str(tmp_path / "out.jsonl")])
    assert exit_info.value.code == code
    assert message in capsys.readouterr().err


def test_vrm_serve_proxy_answers_score_and_get_reward(client, expected):
    pairs = [{"prompt": p, "response": r, "question_type": t, "reference": ref}
             for p, r, t, ref in zip(PROMPTS, RESPONSES, QUESTION_TYPES, REFERENCES)]
    answer = client.post("/score", json={"pairs": pairs})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"rewards": pytest.approx(expected, abs=1e-6)}
    # Full texts split at the last "\n\nAssistant:" (open-ended: the default question type).
    queries = [f"\n\nHuman: {USER[0]['content']}\n\nAssistant: {r}" for r in RESPONSES[1:]]
    answer = client.post("/get_reward", json={"query": queries, "labels": ["x", "y"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["rewards"] == pytest.approx(expected[1:], abs=1e-6)
    health = client.get("/health").json()
    assert health["head"] == "proxy" and health["response_marker"] == "\n\nAssistant:"


@pytest.mark.parametrize("path, body, message", [
    ("/score", {"pairs": [{"prompt": "a", "response": "b", "question_type": "closed"}]}, "reference"),
    ("/score", {"pairs": [{"prompt": "a", "response": "b", "question_type": "maybe"}]}, "question_type"),
    ("/get_reward", {"query": ["no marker here"]}, "query[0]"),
])
def test_vrm_serve_proxy_bad_requests_get_422(client, path, body, message):
    answer = client.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert message in answer.text
    assert client.post("/score", json={"pairs": [{"prompt": "a", "response": "b"}]}).status_code == 200
