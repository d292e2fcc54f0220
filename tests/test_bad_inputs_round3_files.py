"""Issue 23, part A: files and outputs, locks, export integrity, sizes and the server's timeouts. Each failure class
is run as a user runs it (``vrm-score``, ``vrm-export``, ``vrm-train``, ``vrm-eval``, a raw socket to the server)
and checked by its exit code (or answer) and its message; nothing lost, nothing half written."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch
import uvicorn
from conftest import HANG_TIMEOUT, TINY_OVERRIDES, random_export

from vrm.data.limits import MAX_LINE_CHARS, MAX_TEXT_CHARS
from vrm.scoring.scorer import RewardScorer
from vrm.scoring.server import ServerLimits, create_app, uvicorn_options

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"prompt": "How do I sort a list?", "chosen": "Use sorted().", "rejected": "You cannot."}
LINE = {"prompt": "How do I sort a list?", "response": "Use sorted()."}
#: A tiny synthetic run: seconds of training, a checkpoint and a CSV log.
TINY_RUN = [o for o in TINY_OVERRIDES if not o.startswith("data.synthetic")] + [
    "data.synthetic.num_train=32", "data.synthetic.num_validation=8", "data.synthetic.num_test=8",
    "data.synthetic.num_shifted=8"]


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def env() -> dict[str, str]:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    environment.pop("HYDRA_FULL_ERROR", None)
    return environment


def command(module: str, args: list[str], cwd: Path, file_size_limit: int | None = None
            ) -> subprocess.CompletedProcess:
    """``python -c 'from MODULE import main; main()' ARGS`` (the console script's code), optionally under a file
    size limit: a write past it fails in the kernel (EFBIG), as a full disk fails it (ENOSPC)."""
    limit = "" if file_size_limit is None else (
        f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({file_size_limit}, {file_size_limit})); ")
    code = f"{limit}import sys; from {module} import main; sys.argv[0] = {module!r}; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=HANG_TIMEOUT,
                          env=env(), cwd=cwd)


def assert_one_clear_line(result: subprocess.CompletedProcess, *named: str) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for part in named:
        assert part in result.stderr, result.stderr[-3000:]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """A randomly initialised VRM on the tiny BERT, exported."""
    root = tmp_path_factory.mktemp("round3")
    return random_export(root, ["model=vrm"])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished ``vrm-train`` run folder (``checkpoints/last.ckpt``, a CSV log)."""
    root = tmp_path_factory.mktemp("round3_run")
    done = command("vrm.cli.train", [*TINY_RUN, "logger=csv", f"hydra.run.dir={root / 'run'}"], root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "run"


def vrm_score(export_dir: Path, src: Path, dst: Path, capsys, *extra: str) -> tuple[int, str]:
    from vrm.cli.score import main as score_main

    try:
        score_main(["--model", str(export_dir), "--input", str(src), "--output", str(dst), "--no-progress", *extra])
    except SystemExit as exit_info:
        return exit_info.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


def vrm_export(checkpoint: Path, out: Path, capsys) -> tuple[int, str]:
    from vrm.cli.export import main as export_main

    try:
        export_main([str(checkpoint), str(out)])
    except SystemExit as exit_info:
        return exit_info.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


# -- 1. one output rule -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, rows", [("pairs.jsonl", [GOOD]), ("lines.jsonl", [LINE])])
def test_vrm_score_never_writes_onto_its_input(export_dir, tmp_path, capsys, name, rows):
    src = jsonl(tmp_path / name, rows)
    before = src.read_bytes()
    for dst in (src, tmp_path / "." / name, tmp_path / "link.jsonl"):
        if dst.name == "link.jsonl":
            dst.symlink_to(src)
        code, err = vrm_score(export_dir, src, dst, capsys)
        assert code == 1 and f"--output {dst} is an input of this run" in err, err
        assert "Traceback" not in err
    assert src.read_bytes() == before


def test_vrm_score_never_writes_onto_a_csv_input(export_dir, tmp_path, capsys):
    src = tmp_path / "pairs.csv"
    src.write_text("prompt,chosen,rejected\nq,a,b\n")
    code, err = vrm_score(export_dir, src, src, capsys)
    assert code == 1 and "is an input of this run" in err
    assert src.read_text() == "prompt,chosen,rejected\nq,a,b\n"


def special_files(tmp_path: Path) -> list[tuple[Path, str]]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    found = [(fifo, "a FIFO")]
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    found.append((tmp_path / "sock", "a socket"))
    if os.geteuid() == 0:  # a device node of our own (a copy of /dev/null's numbers), never the machine's
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        found.append((tmp_path / "null", "a device"))
    return found


def test_vrm_score_refuses_a_device_a_fifo_or_a_socket_as_output(export_dir, tmp_path, capsys):
    src = jsonl(tmp_path / "in.jsonl", [LINE])
    for target, kind in special_files(tmp_path):
        mode = target.lstat().st_mode
        code, err = vrm_score(export_dir, src, target, capsys)
        assert code == 1 and f"--output {target} is {kind}, not a regular file" in err, err
        assert target.lstat().st_mode == mode  # still what it was, not replaced by a regular file


def test_a_symlinked_output_replaces_the_file_it_points_at_and_keeps_the_link(export_dir, tmp_path, capsys):
    src, real = jsonl(tmp_path / "in.jsonl", [LINE]), tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "out.jsonl"
    link.symlink_to(real)
    code, err = vrm_score(export_dir, src, link, capsys)
    assert code == 0, err
    assert link.is_symlink() and "reward" in json.loads(real.read_text())


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_umask_s_permissions(export_dir, run_dir, tmp_path, capsys, umask):
    src = jsonl(tmp_path / "in.jsonl", [LINE])
    old = os.umask(umask)
    try:
        code, err = vrm_score(export_dir, src, tmp_path / "out.jsonl", capsys)
        assert code == 0, err
        code, err = vrm_export(run_dir / "checkpoints" / "last.ckpt", tmp_path / "export", capsys)
        assert code == 0, err
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o777 & ~umask
    for name in ("model.safetensors", "config.json", "vrm_manifest.json"):
        assert stat.S_IMODE((tmp_path / "export" / name).stat().st_mode) == 0o666 & ~umask


def test_a_reward_column_of_the_input_is_refused_unless_allowed(export_dir, tmp_path, capsys):
    src = jsonl(tmp_path / "labels.jsonl", [LINE, {**LINE, "reward": 1.0}])
    code, err = vrm_score(export_dir, src, tmp_path / "out.jsonl", capsys)
    assert code == 1 and f"file {src}, line 2, field 'reward': the input already has this key" in err, err
    assert not (tmp_path / "out.jsonl").exists()
    code, err = vrm_score(export_dir, src, tmp_path / "out.jsonl", capsys, "--replace-columns")
    assert code == 0, err
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[1])["reward"] != 1.0
    pairs = jsonl(tmp_path / "pairs.jsonl", [{**GOOD, "reward_margin": 3}])
    code, err = vrm_score(export_dir, pairs, tmp_path / "out2.jsonl", capsys)
    assert code == 1 and f"file {pairs}, line 1, field 'reward_margin'" in err, err


def test_vrm_eval_output_dir_that_is_a_file_is_named(export_dir, tmp_path):
    target = tmp_path / "eval_out"
    target.write_text("mine\n")
    done = command("vrm.cli.eval", [f"model_path={export_dir}", f"output_dir={target}", "data.synthetic.num_test=8",
                                    "data.synthetic.num_shifted=8", "best_of_n.enabled=false", "plots=false",
                                    f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert_one_clear_line(done, f"output_dir {target} is a file, not a folder")
    assert target.read_text() == "mine\n"


def test_sigterm_during_vrm_eval_leaves_the_previous_set_whole(export_dir, tmp_path):
    """The new evaluation is killed after writing its first plot: the previous eval.json and plots are untouched (the
    new files were in a hidden staging folder), and the next run replaces the whole set and removes that folder."""
    out, ready = tmp_path / "eval", tmp_path / "ready"
    out.mkdir()
    (out / "eval.json").write_text('{"model": "old"}\n')
    (out / "test_reliability.png").write_text("old plot")
    (out / "notes.txt").write_text("the user's own file")
    args = [f"model_path={export_dir}", f"output_dir={out}", "data.synthetic.num_test=8", "splits=[test]",
            "best_of_n.enabled=false", f"hydra.run.dir={tmp_path / 'run'}"]
    script = (f"import pathlib, sys, time\nimport vrm.evaluation.plots as plots\n"
              f"original = plots.plot_reliability\n"
              f"def stuck(*a, **k):\n    path = original(*a, **k)\n    pathlib.Path({str(ready)!r}).touch()\n"
              f"    time.sleep({HANG_TIMEOUT})\n"
              f"plots.plot_reliability = stuck\nsys.argv = ['vrm-eval', *{args!r}]\n"
              f"from vrm.cli.eval import main\nmain()\n")
    process = subprocess.Popen([sys.executable, "-c", script], env=env(), cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + HANG_TIMEOUT
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists(), process.communicate()[1].decode()[-3000:]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=HANG_TIMEOUT)
    assert (out / "eval.json").read_text() == '{"model": "old"}\n'
    assert (out / "test_reliability.png").read_text() == "old plot"
    assert [p.name for p in out.glob(".partial-*")]  # the killed run's staging folder, hidden
    done = command("vrm.cli.eval", args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "eval.json").read_text())["model"] == str(export_dir)
    assert (out / "test_reliability.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert not list(out.glob(".partial-*"))


# -- 2. one lock per folder -------------------------------------------------------------------------------------------
def hold_lock(folder: Path, tmp_path: Path, beside: bool = False) -> subprocess.Popen:
    """Another process holding the write lock of ``folder`` until killed."""
    ready = tmp_path / f"held-{folder.name}"
    script = (f"import pathlib, time\nfrom vrm.data.files import folder_lock\n"
              f"with folder_lock({str(folder)!r}, beside={beside}):\n"
              f"    pathlib.Path({str(ready)!r}).touch()\n    time.sleep({HANG_TIMEOUT})\n")
    process = subprocess.Popen([sys.executable, "-c", script], env=env())
    deadline = time.monotonic() + HANG_TIMEOUT
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists()
    return process


def test_a_second_vrm_train_in_the_same_run_folder_stops_before_writing_there(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = hold_lock(run, tmp_path)
    try:
        done = command("vrm.cli.train", [*TINY_RUN, f"hydra.run.dir={run}"], tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert_one_clear_line(done, f"run folder {run} is in use by another process (pid {holder.pid}")
    assert not (run / ".hydra").exists()  # the first run's config is never overwritten


def test_a_second_vrm_export_to_the_same_folder_is_refused_and_a_stale_lock_taken_over(run_dir, tmp_path, capsys):
    out = tmp_path / "export"
    holder = hold_lock(out, tmp_path, beside=True)
    try:
        code, err = vrm_export(run_dir / "checkpoints" / "last.ckpt", out, capsys)
    finally:
        holder.kill()
        holder.wait()
    assert code == 1 and f"export folder {out} is in use by another process (pid {holder.pid}" in err, err
    assert not out.exists()
    # The killed holder left its lock file (pid of a dead process): the next export takes it over.
    assert (tmp_path / ".export.lock").read_text().strip() == str(holder.pid)
    code, err = vrm_export(run_dir / "checkpoints" / "last.ckpt", out, capsys)
    assert code == 0, err
    assert (out / "vrm_manifest.json").is_file() and not (tmp_path / ".export.lock").exists()


def test_an_export_never_replaces_a_folder_holding_its_checkpoint(run_dir, tmp_path, capsys):
    code, err = vrm_export(run_dir / "checkpoints" / "last.ckpt", run_dir, capsys)
    assert code == 1 and "holds an input of this run" in err, err
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


# -- 3. export integrity on load --------------------------------------------------------------------------------------
def copy_export(export_dir: Path, to: Path) -> Path:
    to.mkdir()
    for path in export_dir.iterdir():
        (to / path.name).write_bytes(path.read_bytes())
    return to


def test_changed_weight_bytes_are_named_on_load(export_dir, tmp_path, capsys):
    bad = copy_export(export_dir, tmp_path / "bad")
    weights = bytearray((bad / "model.safetensors").read_bytes())
    weights[-64:] = bytes(64 * [0x7F])  # same size, other values in the last tensor
    (bad / "model.safetensors").write_bytes(bytes(weights))
    code, err = vrm_score(bad, jsonl(tmp_path / "in.jsonl", [LINE]), tmp_path / "out.jsonl", capsys)
    assert code == 1 and f"{bad / 'model.safetensors'} does not match the sha256 in vrm_manifest.json" in err, err


def test_a_half_length_weights_file_is_named_with_or_without_a_manifest(export_dir, tmp_path, capsys):
    bad = copy_export(export_dir, tmp_path / "bad")
    weights = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    src = jsonl(tmp_path / "in.jsonl", [LINE])
    code, err = vrm_score(bad, src, tmp_path / "out.jsonl", capsys)
    assert code == 1 and f"is {len(weights) // 2} bytes, but vrm_manifest.json records {len(weights)}" in err, err
    assert "truncated" in err
    (bad / "vrm_manifest.json").unlink()
    code, err = vrm_score(bad, src, tmp_path / "out.jsonl", capsys)
    assert code == 1 and "IntegrityError" in err and "the weights cannot be loaded" in err, err
    assert "Traceback" not in err


def test_plain_transformers_still_loads_an_export(export_dir):
    from transformers import AutoModelForSequenceClassification

    import vrm  # noqa: F401  (registers the model type)

    model = AutoModelForSequenceClassification.from_pretrained(export_dir)
    assert model.config.num_labels == 1


def test_a_chat_template_that_raises_is_named_at_load(export_dir, tmp_path, capsys):
    bad = copy_export(export_dir, tmp_path / "bad")
    (bad / "chat_template.jinja").write_text('{{ raise_exception("this template refuses") }}')
    (bad / "vrm_manifest.json").unlink()  # a manifest would (rightly) name the changed file first
    code, err = vrm_score(bad, jsonl(tmp_path / "in.jsonl", [LINE]), tmp_path / "out.jsonl", capsys)
    assert code == 1 and "chat template (chat_template.jinja) failed to render: this template refuses" in err, err


# -- 4. one size policy -----------------------------------------------------------------------------------------------
def test_the_server_s_text_limit_is_the_readers_one():
    assert ServerLimits().max_text_chars == MAX_TEXT_CHARS == 65536


def test_an_over_long_line_and_text_are_named_in_vrm_score(export_dir, tmp_path, capsys):
    src = jsonl(tmp_path / "in.jsonl", [LINE, {**LINE, "response": "x" * (MAX_TEXT_CHARS + 1)}])
    code, err = vrm_score(export_dir, src, tmp_path / "out.jsonl", capsys)
    assert code == 1 and f"file {src}, line 2, field 'response': too long: {MAX_TEXT_CHARS + 1} characters" in err
    src.write_text(json.dumps(LINE) + "\n" + "x" * (MAX_LINE_CHARS + 10) + "\n")
    code, err = vrm_score(export_dir, src, tmp_path / "out.jsonl", capsys)
    assert code == 1 and f"file {src}, line 2: the line is over {MAX_LINE_CHARS} characters" in err, err
    pairs = jsonl(tmp_path / "pairs.jsonl", [{**GOOD, "chosen": "y" * (MAX_TEXT_CHARS + 1)}])
    code, err = vrm_score(export_dir, pairs, tmp_path / "out.jsonl", capsys)
    assert code == 1 and f"file {pairs}, line 1, field 'chosen': too long" in err, err


def test_vrm_train_names_an_over_long_text(tmp_path):
    src = jsonl(tmp_path / "pairs.jsonl", [GOOD, {**GOOD, "rejected": "z" * (MAX_TEXT_CHARS + 1)}])
    done = command("vrm.cli.train", ["data=jsonl", f"data.train={src}", "encoder=tiny_bert", "logger=none",
                                     f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert_one_clear_line(done, f"file {src}, line 2, field 'rejected': too long")


# -- 5. the server's timeouts -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(export_dir):
    limits = ServerLimits(max_batch_size=4, max_text_chars=500, header_timeout=0.5, body_timeout=0.5)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(RewardScorer.from_pretrained(export_dir), limits),
                                          log_level="warning", **uvicorn_options(limits)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + HANG_TIMEOUT
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(timeout=HANG_TIMEOUT)


def read_all(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def good_request(port: int) -> bytes:
    body = json.dumps({"pairs": [{"prompt": "hi", "response": "hello"}]}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_TIMEOUT) as conn:
        conn.sendall(b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        return read_all(conn)


@pytest.mark.parametrize("sent", [b"", b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Le"])
def test_a_half_sent_request_head_is_dropped(served, sent):
    """A client that opens a connection and sends nothing, or stops in the middle of its headers (slowloris): the
    server closes the connection (recv returns b"") instead of holding it; others are still served."""
    connections = [socket.create_connection(("127.0.0.1", served), timeout=HANG_TIMEOUT) for _ in range(5)]
    for conn in connections:
        conn.sendall(sent) if sent else None
    for conn in connections:
        assert read_all(conn) == b""
        conn.close()
    assert good_request(served).startswith(b"HTTP/1.1 200")


def test_a_half_sent_body_gets_a_408(served):
    with socket.create_connection(("127.0.0.1", served), timeout=HANG_TIMEOUT) as conn:
        conn.sendall(b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
                     b"\r\n{\"pairs\": [")
        answer = read_all(conn)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"the request body was not complete after 0.5 s (vrm-serve --body-timeout)" in answer
    assert good_request(served).startswith(b"HTTP/1.1 200")


# -- 6. readers -------------------------------------------------------------------------------------------------------
UNCLOSED_QUOTE_CSV = "\n".join(["prompt,chosen,rejected", "q1,a1,b1", "q2,a2,b2", 'q3,a3,"oops b3',
                                *(f"q{i},a{i},b{i}" for i in range(4, 40)), 'q40,a40,"b40"']) + "\n"
#: name -> (file name, content, what the error says after "file PATH").
BAD_PAIR_FILES = {
    "unclosed quote": ("pairs.csv", UNCLOSED_QUOTE_CSV.encode(),
                       "row 4: a quote opened on line 4 is not closed before line 41: 36 lines in between, each a row "
                       "of its own, were read as one cell"),
    "duplicate key, JSON Lines": ("pairs.jsonl", b'{"prompt": "p", "chosen": "c", "rejected": "r", "chosen": "z"}\n',
                                  "line 1: not valid JSON (duplicate key 'chosen' in one object"),
    "duplicate key, JSON array": ("pairs.json", b'[{"prompt": "p", "chosen": "c", "rejected": "r", "prompt": "q"}]',
                                  "invalid JSON array: duplicate key 'prompt' in one object"),
    "UTF-16 mark before UTF-8": ("pairs.jsonl", b"\xff\xfe" + json.dumps(GOOD).encode() + b"\n",
                                 "starts with a UTF-16 byte order mark (ff fe) but the text after it is UTF-8"),
    "zero-width chosen": ("pairs.jsonl", json.dumps({**GOOD, "chosen": "\u200b\u200b\u2060"}).encode() + b"\n",
                          "line 1, field 'chosen': empty text: only invisible characters"),
}


@pytest.mark.parametrize("case", list(BAD_PAIR_FILES))
def test_bad_pair_files_are_named_by_vrm_score(export_dir, tmp_path, capsys, case):
    name, content, named = BAD_PAIR_FILES[case]
    src = tmp_path / name
    src.write_bytes(content)
    code, err = vrm_score(export_dir, src, tmp_path / "out.jsonl", capsys)
    assert code == 1 and f"file {src}" in err and named in err, err
    assert "Traceback" not in err and not (tmp_path / "out.jsonl").exists()


def test_a_symbolic_link_loop_is_named(export_dir, tmp_path, capsys):
    src = tmp_path / "pairs.csv"
    (tmp_path / "other.csv").symlink_to(src)
    src.symlink_to(tmp_path / "other.csv")
    code, err = vrm_score(export_dir, src, tmp_path / "out.jsonl", capsys)
    assert code == 1 and f"file {src}: cannot be opened: a symbolic link loop" in err, err


def test_doubled_byte_order_marks_are_read(export_dir, tmp_path, capsys):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "pairs.csv").write_bytes(bom * 2 + b"prompt,chosen,rejected\nq,a,b\n")
    jsonl_path = tmp_path / "pairs.jsonl"
    jsonl_path.write_bytes(bom * 2 + json.dumps(GOOD).encode() + b"\n")
    for src in (tmp_path / "pairs.csv", jsonl_path):
        code, err = vrm_score(export_dir, src, tmp_path / "out.jsonl", capsys)
        assert code == 0, err
        assert "reward_margin" in json.loads((tmp_path / "out.jsonl").read_text())


def test_inputs_that_are_not_regular_readable_files_are_named(export_dir, tmp_path, capsys):
    cases = [(target, f"is {kind}, not a regular --input file") for target, kind in special_files(tmp_path)]
    cases.append((Path("/proc/self/mem"), "cannot be read: Input/output error"))
    for src, named in cases:
        code, err = vrm_score(export_dir, src, tmp_path / "out.jsonl", capsys)
        assert code == 1 and f"file {src}: {named}" in err, err
    if os.geteuid() != 0:  # root reads any file
        locked = jsonl(tmp_path / "locked.jsonl", [LINE])
        locked.chmod(0)
        code, err = vrm_score(export_dir, locked, tmp_path / "out.jsonl", capsys)
        assert code == 1 and "cannot be read: permission denied" in err, err


def test_a_file_name_that_is_not_utf8(export_dir, tmp_path, capsys):
    """vrm-score reads it (the name is kept as bytes); vrm-train, whose overrides Hydra reads as text, says why."""
    name = os.fsdecode(b"caf\xe9.jsonl")
    src = jsonl(tmp_path / name, [LINE])
    code, err = vrm_score(export_dir, src, tmp_path / "out.jsonl", capsys)
    assert code == 0, err
    done = subprocess.run([sys.executable, "-c", "from vrm.cli.train import main; main()", "data=jsonl",
                           f"data.train={src}", "encoder=tiny_bert"], capture_output=True, timeout=HANG_TIMEOUT,
                          env=env(), cwd=tmp_path)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 1 and "is not UTF-8 text (invalid UTF-8 byte 0xe9" in stderr, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_data_train_that_is_not_a_file_is_named_by_vrm_train(tmp_path, kind):
    target = tmp_path / "pairs.jsonl"
    target.mkdir() if kind == "folder" else os.mkfifo(target)
    done = command("vrm.cli.train", ["data=jsonl", f"data.train={target}", "encoder=tiny_bert", "logger=none",
                                     f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert_one_clear_line(done, f"file {target}: is a {'folder' if kind == 'folder' else 'FIFO'}, not a regular file")


class Payload:
    """Unpickling this runs ``os.system``: a weights_only load must refuse it before anything runs."""

    def __reduce__(self):
        return os.system, ("touch PLANTED",)


def bad_checkpoints(tmp_path: Path) -> list[tuple[str, str]]:
    folder = tmp_path / "a_folder"
    (folder / "checkpoints").mkdir(parents=True)
    other_zip = tmp_path / "other.ckpt"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    pickled = tmp_path / "payload.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, pickled)
    return [(str(folder), f"ckpt_path={folder} is a folder; give the checkpoint file (e.g. "
                          f"{folder / 'checkpoints' / 'last.ckpt'})"),
            (str(other_zip), "a zip archive without a torch pickle"),
            (str(pickled), "it holds objects that are not tensors or plain values, refused unread")]


def test_checkpoints_that_are_not_checkpoints_are_named_by_vrm_train(tmp_path):
    for ckpt, named in bad_checkpoints(tmp_path):
        done = command("vrm.cli.train", [*TINY_RUN, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'run'}"],
                       tmp_path)
        assert_one_clear_line(done, named)
    assert not (tmp_path / "PLANTED").exists() and not (tmp_path / "run" / "PLANTED").exists()


def test_a_full_disk_in_vrm_export_and_vrm_train_is_one_line_and_loses_nothing(run_dir, tmp_path):
    """The kernel refuses writes past 1 MB (RLIMIT_FSIZE: EFBIG, the same failed write as ENOSPC)."""
    out = tmp_path / "export"
    done = command("vrm.cli.export", [str(run_dir / "checkpoints" / "last.ckpt"), str(out)], tmp_path,
                   file_size_limit=1 << 20)
    assert_one_clear_line(done, f"writing the export {out} failed", "File too large", "nothing was replaced")
    assert not out.exists() and not list(tmp_path.glob(".export.tmp-*"))
    run = tmp_path / "run"
    done = command("vrm.cli.train", [*TINY_RUN, f"hydra.run.dir={run}"], tmp_path, file_size_limit=1 << 20)
    assert_one_clear_line(done, f"writing checkpoint {run / 'checkpoints'}")
    assert not list((run / "checkpoints").glob(".*.tmp-*"))


def test_enospc_in_the_export_s_own_writes_is_one_line(run_dir, tmp_path, monkeypatch, capsys):
    import errno

    from vrm.scoring import export as export_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "model.safetensors")

    monkeypatch.setattr(export_module, "write_manifest", full)
    code, err = vrm_export(run_dir / "checkpoints" / "last.ckpt", tmp_path / "export", capsys)
    assert code == 1 and "No space left on device (model.safetensors); nothing was replaced" in err, err
    assert not (tmp_path / "export").exists()


# -- 8. more of our own -----------------------------------------------------------------------------------------------
def test_output_paths_that_name_a_folder_an_input_by_dots_or_the_model_are_refused(export_dir, tmp_path, capsys):
    src = jsonl(tmp_path / "in.jsonl", [LINE])
    (tmp_path / "sub").mkdir()
    cases = [(f"{tmp_path}/out.jsonl/", "ends with '/', a folder's name"),
             (str(tmp_path / "sub" / ".." / "in.jsonl"), "is an input of this run"),
             (str(export_dir / "config.json"), "is an input of this run"),
             ("/proc/vrm-out.jsonl", "cannot be written: its folder /proc does not take a new file")]
    for output, named in cases:
        config = (export_dir / "config.json").read_bytes()
        try:
            from vrm.cli.score import main as score_main

            score_main(["--model", str(export_dir), "--input", str(src), "--output", output, "--no-progress"])
        except SystemExit as exit_info:
            err = capsys.readouterr().err
            assert exit_info.code in (1, 2) and named in err, err
        else:
            pytest.fail(f"--output {output} was accepted")
        assert (export_dir / "config.json").read_bytes() == config
    assert json.loads(src.read_text()) == LINE


@pytest.mark.parametrize("name, content, named", [
    ("pairs.jsonl.gz", b"\x1f\x8b\x08\x00rest", "is a gzip-compressed file, not text: decompress it first"),
    ("pairs.jsonl", b"PAR1\x00\x00", "is a Parquet file, not text: name it .parquet"),
    ("pairs.csv", b"prompt;chosen;rejected\np;c;r\n", "the file is separated by ';', not by commas"),
])
def test_binary_or_oddly_separated_files_say_what_they_are(export_dir, tmp_path, capsys, name, content, named):
    src = tmp_path / name
    src.write_bytes(content)
    code, err = vrm_score(export_dir, src, tmp_path / "out.jsonl", capsys)
    assert code == 1 and f"file {src}" in err and named in err, err


def test_the_rejects_file_is_never_written_onto_the_training_file_it_came_from(tmp_path):
    from vrm.config.data import DataConfig
    from vrm.data.loading import load_preference_data
    from vrm.errors import OutputError

    src = jsonl(tmp_path / "rejects.jsonl", [GOOD, {"prompt": "only a prompt"}])
    before = src.read_bytes()
    with pytest.raises(OutputError, match="rejects.jsonl is an input of this run"):
        load_preference_data(DataConfig(format="jsonl", train=str(src), on_bad_row="skip", validation_fraction=0,
                                        test_fraction=0), tmp_path)
    assert src.read_bytes() == before


def test_two_score_writers_to_one_output_leave_one_complete_file(export_dir, tmp_path):
    """Two vrm-score runs writing the same output at once: the last complete write wins, never a mix or a part."""
    from vrm.scoring.score_file import score_file

    scorer = RewardScorer.from_pretrained(export_dir, batch_size=2)
    sources = [jsonl(tmp_path / f"in{i}.jsonl", [{**LINE, "id": i}] * (3 + i)) for i in range(2)]
    dst = tmp_path / "out.jsonl"
    threads = [threading.Thread(target=score_file, args=(scorer, src, dst), kwargs={"progress": False})
               for src in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HANG_TIMEOUT)
    rows = [json.loads(line) for line in dst.read_text().splitlines()]
    assert len({row["id"] for row in rows}) == 1 and len(rows) == 3 + rows[0]["id"]
    assert not list(tmp_path.glob(".out.jsonl.*.tmp"))


def test_wide_csv_and_wrong_parquet_types(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vrm.data.loading import read_pair_file
    from vrm.errors import RowError

    wide = tmp_path / "wide.csv"
    extra = [f"c{i}" for i in range(100_000)]
    wide.write_text(",".join(["prompt", "chosen", "rejected", *extra]) + "\n" + ",".join(["p", "c", "r"] + ["x"] *
                                                                                        len(extra)) + "\n")
    assert len(read_pair_file(wide)[1]) == 1
    table = tmp_path / "types.parquet"
    pq.write_table(pa.table({"prompt": ["p"], "chosen": [7], "rejected": ["r"]}), table)
    with pytest.raises(RowError, match=r"row index 0, field 'chosen': wrong type: expected a string, got int"):
        read_pair_file(table)


def test_a_prompt_of_many_empty_messages_is_refused_everywhere(export_dir, tmp_path, capsys):
    """Empty messages cost no characters but a template rendering each: the message count has a limit too."""
    from fastapi.testclient import TestClient

    from vrm.data.limits import MAX_MESSAGES

    many = [{"role": "user", "content": ""}] * (MAX_MESSAGES + 1)
    client = TestClient(create_app(RewardScorer.from_pretrained(export_dir)))
    answer = client.post("/score", json={"pairs": [{"prompt": many, "response": "hi"}]})
    assert answer.status_code == 422 and f"at most {MAX_MESSAGES} items" in answer.text, answer.text
    src = jsonl(tmp_path / "in.jsonl", [{"prompt": many, "response": "hi"}])
    code, err = vrm_score(export_dir, src, tmp_path / "out.jsonl", capsys)
    assert code == 1 and f"line 1, field 'prompt': too long: {MAX_MESSAGES + 1} messages" in err, err
    pairs = jsonl(tmp_path / "pairs.jsonl", [{"prompt": many, "chosen": [{"role": "assistant", "content": "a"}],
                                              "rejected": [{"role": "assistant", "content": "b"}]}])
    code, err = vrm_score(export_dir, pairs, tmp_path / "out.jsonl", capsys)
    assert code == 1 and f"{MAX_MESSAGES + 1} messages, over the limit" in err, err


def test_another_rank_of_the_holder_s_run_shares_the_run_folder(tmp_path, monkeypatch):
    """Lightning's DDP ranks (its children), torchrun's and SLURM's (a rank variable other than 0) write into rank
    0's run folder: they share its lock; any other process is refused."""
    from vrm.data.files import RANK_VARIABLES, folder_lock
    from vrm.errors import FolderInUseError

    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    holder = hold_lock(tmp_path, tmp_path)
    try:
        with pytest.raises(FolderInUseError, match=f"pid {holder.pid}"):
            with folder_lock(tmp_path):
                pass
        monkeypatch.setenv("LOCAL_RANK", "1")
        with folder_lock(tmp_path):
            assert (tmp_path / ".vrm.lock").read_text().strip() == str(holder.pid)
    finally:
        holder.kill()
        holder.wait()


def test_vrm_serve_runs_uvicorn_with_the_head_deadline(export_dir, monkeypatch):
    from vrm.cli.serve import main as serve_main
    from vrm.scoring.server import HeadTimeoutH11

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    serve_main(["--model", str(export_dir), "--port", "0", "--header-timeout", "2.5", "--body-timeout", "7"])
    (kwargs,) = calls
    assert issubclass(kwargs["http"], HeadTimeoutH11) and kwargs["http"].header_timeout == 2.5
