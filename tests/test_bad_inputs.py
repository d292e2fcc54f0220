"""Bad input as a user or an attacker sends it: each gets an answer that names the file, line and field (or the
request field), a non-zero exit or a 4xx, no traceback, and nothing half written (issue 15's list and beyond)."""

from __future__ import annotations

import codecs
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import uvicorn
from conftest import TINY_OVERRIDES, compose_train, random_export
from fastapi.testclient import TestClient

from vrm.config.data import DataConfig
from vrm.data.loading import load_preference_data
from vrm.errors import DataError
from vrm.scoring.scorer import RewardScorer
from vrm.scoring.server import ServerLimits, create_app

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"prompt": "How do I sort a list?", "chosen": "Use sorted().", "rejected": "You cannot."}
LIMITS = ServerLimits(max_batch_size=4, max_text_chars=500, max_num_samples=8)
#: A bound that guards against a hang, not a speed test (a CLI starts in ~20 s on a busy machine).
HANG = 600


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def own_file(path: Path, **overrides) -> DataConfig:
    return DataConfig(format="jsonl", train=str(path), **{"validation_fraction": 0.0, "test_fraction": 0.0,
                                                          **overrides})


def load_error(path: Path, **overrides) -> str:
    with pytest.raises(DataError) as caught:
        load_preference_data(own_file(path, **overrides), path.parent)
    return str(caught.value)


def cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VRM_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=HANG, env=env,
                          cwd=tmp_path)


def assert_one_clear_line(result: subprocess.CompletedProcess, *named: str) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for part in named:
        assert part in result.stderr, result.stderr[-3000:]


# -- training files -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"  \n\n\t \r\n"])
def test_an_empty_training_file_is_named(tmp_path, content):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(content)
    assert load_error(path) == (f"file {path}: the train split has no pairs: no rows: the file is empty or holds "
                                "only blank lines")


def test_a_file_whose_rows_are_all_skipped_is_named_with_the_reasons(tmp_path):
    path = jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a"}, {**GOOD, "rejected": GOOD["chosen"]}])
    message = load_error(path, on_bad_row="skip")
    assert message.startswith(f"file {path}: the train split has no pairs: none of its 2 rows gave a pair; 2 were "
                              "skipped as bad rows")
    assert "identical chosen and rejected 1" in message and "missing field 1" in message
    assert str(tmp_path / "rejects.jsonl") in message
    assert len((tmp_path / "rejects.jsonl").read_text().splitlines()) == 2  # nothing lost: both rows kept


def test_a_split_too_small_to_carve_is_named_and_one_just_big_enough_is_carved(tmp_path):
    path = jsonl(tmp_path / "pairs.jsonl", [{**GOOD, "prompt": f"q{i}"} for i in range(3)])
    data = load_preference_data(DataConfig(format="jsonl", train=str(path)))  # 10% of 3 rounds to 0: one each
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 1, "validation": 1, "test": 1}
    jsonl(path, [{**GOOD, "prompt": f"q{i}"} for i in range(2)])
    with pytest.raises(DataError, match=rf"file {path}: the validation split has no pairs: 2 pairs in train are too "
                                        "few to carve a validation split from"):
        load_preference_data(DataConfig(format="jsonl", train=str(path)))


def test_max_rows_zero_is_named(tmp_path):
    path = jsonl(tmp_path / "pairs.jsonl", [GOOD])
    assert "the train split has no pairs: data.max_rows=0 keeps no pair" in load_error(path, max_rows=0)


@pytest.mark.parametrize("on_bad_row", ["error", "skip"])
@pytest.mark.parametrize("indent", [None, 2])
def test_a_json_object_holding_the_rows_says_what_it_found(tmp_path, on_bad_row, indent):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps({"data": [GOOD] * 3, "version": 2}, indent=indent))
    assert load_error(path, on_bad_row=on_bad_row) == (
        f"file {path}: holds one JSON object with keys ['data', 'version'] (are the rows its list under 'data'? put "
        "that list at the top level); expected a JSON array of row objects ([{...}, ...]) or JSON Lines (one row "
        "object a line)")


def test_a_pretty_printed_array_in_a_jsonl_file_says_what_it_found(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps([GOOD] * 3, indent=2))
    assert load_error(path, on_bad_row="skip") == (
        f"file {path}: holds one JSON array of 3 items, not JSON Lines; expected one row object a line (JSON Lines), "
        "or a JSON array of row objects in a .json file")


def test_a_json_file_of_one_pretty_printed_row_is_that_row(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(GOOD, indent=2))
    assert load_preference_data(own_file(path)).splits["train"]["chosen"] == [GOOD["chosen"]]


def test_an_unknown_role_is_named_with_the_allowed_ones(tmp_path):
    turn = [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "abracadabra"}]
    rows = [{"chosen": turn + [{"role": "assistant", "content": "a"}],
             "rejected": turn + [{"role": "assistant", "content": "b"}]}]
    path = jsonl(tmp_path / "pairs.jsonl", rows)
    assert load_error(path) == (f"file {path}, line 1, field 'chosen[1].role': invalid value: unknown role 'wizard'; "
                                "expected one of ['system', 'user', 'assistant', 'tool']")


@pytest.mark.parametrize("raw, why", [
    (b'{"prompt": "a\\ud800", "chosen": "b", "rejected": "c"}', r"a lone surrogate \ud800 at character 1 (valid JSON, but not a character)"),
    (b'{"prompt": "a", "chosen": "caf\xe9", "rejected": "c"}', "invalid UTF-8 byte 0xe9 at character 3"),
])
def test_text_that_is_not_text_is_named_by_line_and_field(tmp_path, raw, why):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + raw + b"\n")
    field = "prompt" if b"ud800" in raw else "chosen"
    assert load_error(path) == f"file {path}, line 2, field '{field}': undecodable text: {why}"


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
@pytest.mark.parametrize("suffix, newline", [(".jsonl", "\n"), (".jsonl", "\r\n"), (".csv", "\r\n")])
def test_files_in_other_unicode_encodings_with_a_byte_order_mark_are_read(tmp_path, encoding, suffix, newline):
    rows = [{**GOOD, "chosen": f"{GOOD['chosen']} é {i}"} for i in range(2)]
    if suffix == ".csv":
        text = newline.join(["prompt,chosen,rejected", *(",".join(row.values()) for row in rows)]) + newline
    else:
        text = "".join(json.dumps(row, ensure_ascii=False) + newline for row in rows)
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    (tmp_path / f"pairs{suffix}").write_bytes(data)
    loaded = load_preference_data(own_file(tmp_path / f"pairs{suffix}"))
    assert loaded.splits["train"]["chosen"] == [row["chosen"] for row in rows]


def test_utf16_without_a_byte_order_mark_gets_a_hint(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes((json.dumps(GOOD) + "\n").encode("utf-16-le"))
    message = load_error(path)
    assert message.startswith(f"file {path}, line 1: invalid JSON")
    assert message.endswith("(the line holds NUL bytes: is the file UTF-16 without a byte order mark?)")


@pytest.mark.parametrize("row, field, why", [
    ([GOOD], None, "wrong type: expected an object, got list"),
    ({**GOOD, "margin": "0.5"}, "margin", "wrong type: expected a number, got str"),
    ({**GOOD, "aspects_chosen": [[1.0]], "aspects_rejected": [1.0]}, "aspects_chosen[0]", "wrong type"),
    ({**GOOD, "prompt": {"role": "user", "content": "x"}}, "prompt", "wrong type: expected a string, got dict"),
    ({**GOOD, "chosen": 7}, "chosen", "wrong type: expected a string, got int"),
])
def test_values_of_the_wrong_shape_are_named(tmp_path, row, field, why):
    path = jsonl(tmp_path / "pairs.jsonl", [GOOD, row])
    where = f", field '{field}'" if field else ""
    assert load_error(path).startswith(f"file {path}, line 2{where}: {why}")


def test_a_huge_single_line_and_deep_nesting_are_named_not_crashed(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    assert load_error(path).startswith(f"file {path}, line 2: invalid JSON")
    huge = {**GOOD, "chosen": "word " * 2_000_000}  # a 10 MB line: over the size policy (vrm.data.limits)
    jsonl(path, [huge])
    assert load_error(path).startswith(f"file {path}, line 1: too long: the line is over")


def test_vrm_train_names_an_empty_file_in_one_line(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = cli(["-c", "from vrm.cli.train import main; main()", "data=jsonl", f"data.train={empty}",
                  "encoder=tiny_bert", "logger=none", "callbacks=none", f"hydra.run.dir={tmp_path / 'run'}"],
                 tmp_path)
    assert_one_clear_line(result, f"file {empty}: the train split has no pairs: no rows")
    assert "chosen_truncated" not in result.stderr


# -- vrm-serve ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """A randomly initialised VRM on the tiny BERT, exported (its tokenizer is what crashed on a lone surrogate)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    return random_export(root, ["model=vrm"])


@pytest.fixture(scope="module")
def client(export_dir) -> TestClient:
    return TestClient(create_app(RewardScorer.from_pretrained(export_dir, batch_size=2), LIMITS))


def post_json_text(client: TestClient, path: str, body: str):
    """POST a JSON text as sent on the wire (``\\ud800`` stays a JSON escape, as a client would send it)."""
    return client.post(path, content=body.encode("ascii"), headers={"content-type": "application/json"})


@pytest.mark.parametrize("path, body, field", [
    ("/score", '{"pairs": [{"prompt": "hi", "response": "a\\ud800b"}]}', '"pairs",0,"response"'),
    ("/score", '{"pairs": [{"prompt": [{"role": "user", "content": "\\udfff"}], "response": "b"}]}',
     '"pairs",0,"prompt",'),
    ("/get_reward", '{"query": ["\\n\\nHuman: hi\\n\\nAssistant: \\ud83d"]}', '"query",0'),
    ("/score", '{"pairs": [{"prompt": [{"role": "wizard", "content": "hi"}], "response": "b"}]}', '"role"'),
])
def test_the_server_answers_bad_text_and_roles_with_422_naming_the_field(client, path, body, field):
    answer = post_json_text(client, path, body)
    assert answer.status_code == 422, answer.text
    assert field in answer.text.replace(" ", "")
    assert ("lone surrogate" in answer.text) != ("wizard" in body)
    good = client.post("/score", json={"pairs": [{"prompt": "hi", "response": "hello"}]})
    assert good.status_code == 200 and len(good.json()["rewards"]) == 1


def _serve(app) -> tuple[uvicorn.Server, threading.Thread, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + HANG
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, thread, sock.getsockname()[1]


def test_a_chunked_body_over_the_limit_is_refused_before_it_is_read_whole(export_dir):
    """The client never ends its chunked body: a server that waited for the whole body would never answer."""
    app = create_app(RewardScorer.from_pretrained(export_dir), LIMITS)
    server, thread, port = _serve(app)
    chunk = b"x" * 65536
    sent = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=HANG) as conn:
            conn.sendall(b"POST /get_reward HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            while sent <= LIMITS.max_body_bytes + 4 * len(chunk):
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            answer = http.client.HTTPResponse(conn)
            answer.begin()
            body = answer.read().decode()
    finally:
        server.should_exit = True
        thread.join(timeout=HANG)
    assert answer.status == 413, body
    assert json.loads(body) == {"detail": f"the request body is over {LIMITS.max_body_bytes} bytes; the limit is "
                                          f"{LIMITS.max_body_bytes}"}


# -- vrm-score ------------------------------------------------------------------------------------------------------
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]
PAIRS = [
    {"id": "a", "prompt": "How do I sort a list?", "chosen": "Use sorted().", "rejected": "You cannot.", "margin": 2.0},
    {"id": "b", "prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."},
]
CONVERSATIONAL = [
    {"id": "c", "chosen": CONVERSATION + [{"role": "assistant", "content": "An apple."}],
     "rejected": CONVERSATION + [{"role": "assistant", "content": "A chair."}]},
    {"id": "d", "prompt": [{"role": "user", "content": "Hi!"}], "chosen": [{"role": "assistant", "content": "Hello."}],
     "rejected": [{"role": "assistant", "content": "Go away."}]},
]


def vrm_score(export_dir: Path, src: Path, dst: Path, capsys, *extra: str) -> tuple[int, str]:
    from vrm.cli.score import main as score_main

    try:
        score_main(["--model", str(export_dir), "--input", str(src), "--output", str(dst), "--no-progress", *extra])
    except SystemExit as exit_info:
        return exit_info.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


@pytest.fixture(scope="module")
def scorer(export_dir) -> RewardScorer:
    return RewardScorer.from_pretrained(export_dir, batch_size=2)


def expected_pairs(scorer: RewardScorer, prompts: list, chosen: list[str], rejected: list[str]) -> list[tuple]:
    good, bad = scorer.score(prompts, chosen), scorer.score(prompts, rejected)
    return [(g, b, g - b) for g, b in zip(good, bad)]


def scored_pairs(dst: Path) -> list[dict]:
    return [json.loads(line) for line in dst.read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_vrm_score_scores_both_responses_of_explicit_pairs_in_input_order(export_dir, scorer, tmp_path, capsys,
                                                                         suffix):
    src, dst = tmp_path / f"pairs{suffix}", tmp_path / "rewards.jsonl"
    if suffix == ".jsonl":
        jsonl(src, PAIRS)
    elif suffix == ".json":
        src.write_text(json.dumps(PAIRS))
    else:
        src.write_text("id,prompt,chosen,rejected\n" + "".join(f"{p['id']},{p['prompt']},{p['chosen']},"
                                                              f"{p['rejected']}\n" for p in PAIRS))
    code, err = vrm_score(export_dir, src, dst, capsys)
    assert code == 0 and err.endswith(f"scored 2 lines -> {dst}\n"), err
    out = scored_pairs(dst)
    want = expected_pairs(scorer, [p["prompt"] for p in PAIRS], [p["chosen"] for p in PAIRS],
                          [p["rejected"] for p in PAIRS])
    assert [o["id"] for o in out] == ["a", "b"]  # the input rows, carried through in order
    for o, (good, bad, margin) in zip(out, want):
        assert (o["reward_chosen"], o["reward_rejected"]) == pytest.approx((good, bad), abs=1e-5)
        assert o["reward_margin"] == pytest.approx(margin, abs=1e-6)
        assert len(o["objective_scores_chosen"]) == len(o["weights_rejected"]) == 5  # the VRM's extras (K = 5), per side
    if suffix != ".csv":
        assert out[0]["margin"] == 2.0  # the file's own margin column is kept, not overwritten


def test_vrm_score_reads_conversational_pairs_as_training_does(export_dir, scorer, tmp_path, capsys):
    src, dst = jsonl(tmp_path / "pairs.jsonl", CONVERSATIONAL), tmp_path / "rewards.jsonl"
    assert vrm_score(export_dir, src, dst, capsys, "--num-samples", "4")[0] == 0
    out = scored_pairs(dst)
    want = expected_pairs(scorer, [CONVERSATION, [{"role": "user", "content": "Hi!"}]], ["An apple.", "Hello."],
                          ["A chair.", "Go away."])
    assert [o["id"] for o in out] == ["c", "d"]
    got = [r for o in out for r in (o["reward_chosen"], o["reward_rejected"])]
    assert got == pytest.approx([r for w in want for r in w[:2]], abs=1e-5)  # flat: pytest >= 9.2 refuses nesting
    assert all(o["reward_std_chosen"] >= 0 and o["reward_std_rejected"] >= 0 for o in out)


@pytest.mark.parametrize("bad_row, named", [
    ({"prompt": "q", "chosen": "a"}, "line 2, field 'rejected': missing field"),
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "line 2, field 'rejected': identical chosen and rejected"),
    ({"chosen": [{"role": "wizard", "content": "a"}, {"role": "assistant", "content": "b"}],
      "rejected": [{"role": "wizard", "content": "a"}, {"role": "assistant", "content": "c"}]},
     "line 2, field 'chosen': wrong type: list in a file whose layout is explicit"),
])
def test_vrm_score_names_a_bad_pair_by_line_and_field(export_dir, tmp_path, capsys, bad_row, named):
    src, dst = jsonl(tmp_path / "pairs.jsonl", [PAIRS[0], bad_row]), tmp_path / "rewards.jsonl"
    code, err = vrm_score(export_dir, src, dst, capsys)
    assert code == 1 and f"file {src}, {named}" in err and "Traceback" not in err, err
    assert not dst.exists()


@pytest.mark.parametrize("line, named", [
    (b'{"prompt": "hi", "response": "a\\ud800"}',
     r"line 2, field 'response': undecodable text: a lone surrogate \ud800 at character 1"),
    (b'{"prompt": [{"role": "user", "content": "\\udc00x"}], "response": "a"}',
     r"line 2, field 'prompt[0].content': undecodable text: a lone surrogate \udc00"),
    (b'{"query": "\\n\\nHuman: hi\\n\\nAssistant: \\ud83d"}', "line 2, field 'query': undecodable text"),
    (b'{"prompt": "caf\xe9", "response": "a"}', "line 2, field 'prompt': undecodable text: invalid UTF-8 byte 0xe9 at "
                                               "character 3"),
    (b'{"prompt": [{"role": "wizard", "content": "q"}], "response": "a"}',
     "line 2, field 'prompt[0].role': unknown role 'wizard'; expected one of ['system', 'user', 'assistant', 'tool']"),
    (b'{"prompt": "a", \x00"response": "b"}', "line 2: not valid JSON"),
])
def test_vrm_score_names_text_that_is_not_text_by_line_and_field(export_dir, tmp_path, capsys, line, named):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b'{"prompt": "ok", "response": "fine"}\n' * 300 + line.replace(b"line 2", b"") + b"\n")
    code, err = vrm_score(export_dir, src, dst, capsys)
    assert code == 1 and "Traceback" not in err, err
    assert named.replace("line 2", "line 301") in err
    assert not dst.exists()


def test_vrm_score_reads_a_utf16_file_with_a_byte_order_mark(export_dir, scorer, tmp_path, capsys):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes("".join(json.dumps({"prompt": "Café?", "response": r}, ensure_ascii=False) + "\r\n"
                            for r in ("Oui.", "Non.")).encode("utf-16"))
    assert vrm_score(export_dir, src, dst, capsys)[0] == 0
    assert [o["reward"] for o in scored_pairs(dst)] == pytest.approx(scorer.score(["Café?"] * 2, ["Oui.", "Non."]),
                                                                     abs=1e-5)


@pytest.mark.parametrize("content", ["", "\n \n"])
def test_vrm_score_on_an_empty_input_writes_an_empty_output(export_dir, tmp_path, capsys, content):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(content)
    code, err = vrm_score(export_dir, src, dst, capsys)
    assert code == 0 and err.endswith(f"scored 0 lines -> {dst}\n"), err
    assert dst.read_text() == ""


def test_a_kill_during_vrm_score_s_write_leaves_the_previous_output_whole(export_dir, tmp_path):
    """SIGKILL after the new output is written to its temporary file but before it is renamed into place: the
    previous output is untouched (a kill while writing the temporary file leaves it the same way)."""
    src, dst = jsonl(tmp_path / "pairs.jsonl", PAIRS), tmp_path / "rewards.jsonl"
    dst.write_text("previous output\n")
    ready = tmp_path / "ready"
    script = (f"import os, pathlib, time\n"
              f"def stuck(*args):\n    pathlib.Path({str(ready)!r}).touch(); time.sleep({HANG})\n"
              f"os.replace = stuck\n"
              f"from vrm.cli.score import main as score_main\n"
              f"score_main(['--model', {str(export_dir)!r}, '--input', {str(src)!r}, '--output', {str(dst)!r}, "
              f"'--no-progress'])\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + HANG
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists(), process.communicate()[1].decode()[-3000:]
    process.kill()
    process.wait(timeout=HANG)
    assert dst.read_text() == "previous output\n"
    leftovers = list(tmp_path.glob(".rewards.jsonl.*.tmp"))
    assert len(leftovers) == 1 and len(leftovers[0].read_text().splitlines()) == len(PAIRS)  # complete, not renamed


def test_a_kill_during_the_feature_cache_write_leaves_no_partial_cache_file(tmp_path):
    """SIGKILL while a split's features are being written: no file at the cache path (a reader recomputes), and
    the next write puts a complete one there."""
    from vrm.training.feature_cache import load_features, save_features

    path, ready = tmp_path / "features" / "key.safetensors", tmp_path / "ready"
    script = (f"import os, pathlib, time, torch\n"
              f"def stuck(*args):\n    pathlib.Path({str(ready)!r}).touch(); time.sleep({HANG})\n"
              f"os.replace = stuck\n"
              f"from vrm.training.feature_cache import save_features\n"
              f"save_features({str(path)!r}, {{'h_chosen': torch.ones(512, 64)}})\n")
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + HANG
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists(), process.communicate()[1].decode()[-3000:]
    process.kill()
    process.wait(timeout=HANG)
    assert not path.exists() and load_features(path) is None
    save_features(path, {"h_chosen": torch.zeros(2, 3)})
    assert torch.equal(load_features(path)["h_chosen"], torch.zeros(2, 3))


@pytest.mark.parametrize("extra, code, named", [
    (["--batch-size", "0"], 2, "argument --batch-size: 0 must be >= 1"),  # was silently 32
    (["--num-samples", "-1"], 2, "argument --num-samples: -1 must be in [0, 256]"),  # was silently accepted
    (["--batch-size", "many"], 2, "argument --batch-size: 'many' is not an integer"),
    (["--output", "{tmp}"], 2, "--output {tmp} is a folder"),  # was refused only after scoring, naming a temp file
    (["--input", "{tmp}"], 1, "--input {tmp} is a folder, not a file"),  # was "does not exist"
])
def test_vrm_score_refuses_bad_options_before_loading(export_dir, tmp_path, capsys, extra, code, named):
    from vrm.cli.score import main as score_main

    src = jsonl(tmp_path / "in.jsonl", [{"prompt": "a", "response": "b"}])
    args = {"--input": str(src), "--output": str(tmp_path / "out.jsonl")}
    extra = [part.replace("{tmp}", str(tmp_path)) for part in extra]
    for option in ("--input", "--output"):
        if option in extra:
            args.pop(option)
    with pytest.raises(SystemExit) as exit_info:
        score_main(["--model", str(export_dir), *(x for pair in args.items() for x in pair), *extra])
    err = capsys.readouterr().err
    assert exit_info.value.code == code and named.replace("{tmp}", str(tmp_path)) in err, err
    assert "Traceback" not in err


def test_vrm_serve_refuses_a_port_out_of_range_before_loading(capsys):
    from vrm.cli.serve import main as serve_main

    with pytest.raises(SystemExit) as exit_info:
        serve_main(["--model", "not/loaded", "--port", "99999"])  # was an OverflowError traceback after loading
    assert exit_info.value.code == 2 and "argument --port: 99999 must be in [0, 65535]" in capsys.readouterr().err


@pytest.mark.parametrize("path, body, status, named", [
    ("/get_reward", '{"query": [NaN]}', 422, '"input":"nan"'),  # was a 500: the echoed NaN broke the answer
    ("/score", '{"pairs": [{"prompt": "a", "response": Infinity}]}', 422, '"input":"inf"'),
    ("/score", '{"pairs": [{"prompt": [], "response": "b"}]}', 422, "at least 1 item"),  # as vrm-score refuses it
    ("/get_reward", '{"query": ' + "[" * 50_000 + "]" * 50_000 + "}", 400, "error parsing the body"),
])
def test_the_server_answers_odd_json_with_4xx(client, path, body, status, named):
    answer = post_json_text(client, path, body)
    assert answer.status_code == status and named in answer.text, answer.text[:500]


# -- the config -----------------------------------------------------------------------------------------------------
def train_cli(overrides: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return cli(["-c", "from vrm.cli.train import main; main()", "encoder=tiny_bert", "logger=none", "callbacks=none",
                *overrides, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)


def test_a_typo_in_a_key_gets_one_line_with_the_closest_key(tmp_path):
    result = train_cli(["model.num_objectivs=4"], tmp_path)
    assert_one_clear_line(result, "error: model.num_objectivs is not a config key; did you mean "
                                  "model.num_objectives? (a new key is added with a leading +)")
    assert "To append" not in result.stderr and len(result.stderr.strip().splitlines()) == 2, result.stderr


@pytest.mark.parametrize("override, line", [
    ("modle.tau=2", "modle is not a config key; did you mean model?"),
    ("data.synthetic.num_trian=3", "data.synthetic.num_trian is not a config key; did you mean "
                                   "data.synthetic.num_train?"),
    ("model.zzz=1", "model.zzz is not a config key; the keys there: type, num_objectives, feature_dim"),
    ("model.tau=abc", "Error merging override model.tau=abc: Value 'abc' of type 'str' could not be converted to "
                      "Float"),
    ("model=vrmx", "In 'train': Could not find 'model/vrmx' Available options in 'model': bt vrm"),
])
def test_config_errors_read_as_one_line(tmp_path, override, line):
    from vrm.cli.app import config_error_line

    with pytest.raises(Exception) as caught:
        compose_train([override], tmp_path)
    assert config_error_line(caught.value).startswith(line), config_error_line(caught.value)


@pytest.mark.parametrize("override, named", [
    ("model.num_objectives=1000000000", "model.num_objectives=1000000000 must be in [1, 1024]"),
    ("model.feature_dim=1000000000", "model.feature_dim=1000000000 must be in [1, 16384]"),
    ("model.head_hidden_dim=100000", "model.head_hidden_dim=100000 must be in [1, 16384]"),
    ("model.num_samples=100000", "model.num_samples=100000 must be in [1, 1024]"),
    ("encoder.lora.r=1000000", "encoder.lora.r=1000000 must be in [1, 16384]"),
    ("data.eval_batch_size=0", "data.eval_batch_size=0 must be >= 1"),  # was torch's message after the build
    ("data.num_workers=-1", "data.num_workers=-1 must be >= 0"),
])
def test_an_absurd_size_is_named_before_anything_is_allocated(tmp_path, monkeypatch, override, named):
    from vrm.training import build
    from vrm.training.train import train

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder was loaded before the config was checked")

    monkeypatch.setattr(build, "load_encoder", no_encoder)
    with pytest.raises(ValueError, match=rf"^{re.escape(named)}$"):
        train(compose_train(TINY_OVERRIDES + [override], tmp_path))


def test_vrm_train_names_an_absurd_size_in_one_line(tmp_path):
    result = train_cli(["model.num_objectives=1000000000"], tmp_path)
    assert_one_clear_line(result, "model.num_objectives=1000000000 must be in [1, 1024]")
