"""Faults and bad input: non-finite losses, impossible config values, exports killed half way, unsafe files."""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import HANG_TIMEOUT, TINY_OVERRIDES, compose_train
from hydra.errors import ConfigCompositionException

from vrm.config import EncoderConfig, ModelConfig
from vrm.config.train import validate
from vrm.errors import NonFiniteLossError, report_and_exit, user_error_types
from vrm.models import encoder as encoder_module
from vrm.models.encoder import load_encoder
from vrm.scoring.export import export_checkpoint
from vrm.scoring.scorer import RewardScorer
from vrm.training.build import architecture, as_container
from vrm.training.module import NONFINITE_METRIC, RewardModule
from vrm.training.train import train

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["How do I sort a list in Python?", "Write a short poem about the sea."]
RESPONSES = ["Use sorted(); it returns a new list.", "Waves roll in and out."]
FAST = TINY_OVERRIDES + ["model=bt", "data.synthetic.num_train=16", "data.batch_size=8", "trainer.max_epochs=2",
                         "callbacks=none", "test=false"]


# -- non-finite losses ----------------------------------------------------------------------------------------------
@pytest.fixture
def nan_on_training_calls(monkeypatch):
    """Make the loss NaN on the given (0-based) training forward passes of each run (counted from on_fit_start)."""
    poisoned: set[int] = set()
    calls = {"n": 0}
    original_forward, original_fit_start = RewardModule.pair_forward, RewardModule.on_fit_start

    def pair_forward(self, batch, progress: float = 1.0):
        out = original_forward(self, batch, progress)
        if self.training and torch.is_grad_enabled():
            if calls["n"] in poisoned:
                out.loss = out.loss * float("nan")
            calls["n"] += 1
        return out

    def on_fit_start(self):
        calls["n"] = 0
        original_fit_start(self)

    monkeypatch.setattr(RewardModule, "on_fit_start", on_fit_start)

    monkeypatch.setattr(RewardModule, "pair_forward", pair_forward)
    return poisoned


def test_a_nan_loss_stops_the_run_naming_step_and_batch(tmp_path, nan_on_training_calls):
    nan_on_training_calls.add(1)
    with pytest.raises(NonFiniteLossError, match=r"at step 1 \(epoch 0, batch 1\).*max_nonfinite_batches=0"):
        train(compose_train(FAST, tmp_path))
    assert issubclass(NonFiniteLossError, user_error_types())  # vrm-train reports it in one line


def test_nan_batches_are_skipped_up_to_the_allowed_count_and_reported(tmp_path, nan_on_training_calls, caplog):
    nan_on_training_calls.update({0, 2})
    with caplog.at_level(logging.WARNING, logger="vrm.training.module"):
        metrics = train(compose_train(FAST + ["model.max_nonfinite_batches=2"], tmp_path / "skip"))
    assert metrics[NONFINITE_METRIC] == 2
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k.startswith("val/"))
    skipped = [r.getMessage() for r in caplog.records if "skipping batch" in r.getMessage()]
    assert len(skipped) == 2 and "epoch 0, batch 0" in skipped[0] and "epoch 1, batch 0" in skipped[1]
    assert any("2 training batches were skipped" in r.getMessage() for r in caplog.records)

    nan_on_training_calls.add(3)  # three NaN batches, two allowed: the third stops the run
    with pytest.raises(NonFiniteLossError, match=r"3 non-finite batches, model.max_nonfinite_batches=2"):
        train(compose_train(FAST + ["model.max_nonfinite_batches=2"], tmp_path / "stop"))


def test_the_cli_reports_a_non_finite_loss_in_one_line(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        report_and_exit(NonFiniteLossError("non-finite training loss nan at step 3 (epoch 0, batch 3)"))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "error: NonFiniteLossError: non-finite training loss nan at step 3 (epoch 0, batch 3)"
    assert len(err) == 2 and "Traceback" not in "".join(err)


# -- configuration errors -------------------------------------------------------------------------------------------
def test_the_skip_budget_is_typed_and_checked(tmp_path):
    assert ModelConfig().max_nonfinite_batches == 0
    with pytest.raises(ValueError, match=r"model.max_nonfinite_batches=-1 must be >= 0"):
        validate(compose_train(FAST + ["model.max_nonfinite_batches=-1"], tmp_path))
    with pytest.raises(ConfigCompositionException, match="max_nonfinite_batches"):
        compose_train(FAST + ["model.max_nonfinite_batches=some"], tmp_path)


# -- checkpoints and exports ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny VRM saved as a training checkpoint (hyper_parameters + state_dict), with its tokenizer."""
    folder = tmp_path_factory.mktemp("ckpt")
    cfg = compose_train(TINY_OVERRIDES, folder)
    enc = load_encoder(cfg.encoder)
    enc.tokenizer.save_pretrained(folder / "tokenizer")
    torch.manual_seed(0)
    module = RewardModule(architecture(cfg, enc), as_container(cfg.model), as_container(cfg.optim),
                          str(folder / "tokenizer"), encoder=enc.model)
    path = folder / "checkpoints" / "model.ckpt"
    path.parent.mkdir()
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return path


KILL_WHILE_WRITING = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from vrm.models.modeling_vrm import VRMForSequenceClassification
    from vrm.cli.export import main as export_main

    original = VRMForSequenceClassification.save_pretrained

    def save_then_die(self, folder, *args, **kwargs):
        original(self, folder, *args, **kwargs)
        weights = Path(folder) / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # half written
        os.kill(os.getpid(), signal.SIGKILL)

    VRMForSequenceClassification.save_pretrained = save_then_die
    export_main(sys.argv[1:])
""")


def test_an_export_killed_half_way_leaves_the_previous_export_intact(tmp_path, checkpoint):
    out = tmp_path / "export"
    export_checkpoint(checkpoint, out, {})
    expected = RewardScorer.from_pretrained(out).score(PROMPTS, RESPONSES)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", KILL_WHILE_WRITING, str(checkpoint), str(out)],
                            capture_output=True, text=True, timeout=HANG_TIMEOUT, env=env)
    assert killed.returncode == -9, killed.stderr[-3000:]

    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert RewardScorer.from_pretrained(out).score(PROMPTS, RESPONSES) == expected
    # The killed export's lock file stays too (hidden; its dead pid makes it free: vrm.data.files.folder_lock).
    leftovers = [p for p in tmp_path.iterdir() if p != out and p.name != f".{out.name}.lock"]
    assert leftovers and all(p.name.startswith(f".{out.name}.tmp-") for p in leftovers)  # hidden, named for out
    for partial in leftovers:
        with pytest.raises(Exception):  # noqa: B017 - whatever the loader says, it must not load
            RewardScorer.from_pretrained(partial)


# -- safe loading ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "truncated", "pickled_code"])
def test_a_checkpoint_that_fails_to_load_is_named_with_the_reason(tmp_path, checkpoint, damage):
    path = tmp_path / f"{damage}.ckpt"
    if damage == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    elif damage == "truncated":
        data = checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        torch.save({"hyper_parameters": {}, "state_dict": {}, "payload": Path("/")}, path)  # needs a global
    with pytest.raises(RuntimeError, match=rf"cannot load checkpoint {path}: .+"):
        RewardModule.from_checkpoint(path)


def test_a_folder_with_only_pickled_weights_is_refused(tmp_path, checkpoint):
    out = export_checkpoint(checkpoint, tmp_path / "export", {})
    module = RewardModule.from_checkpoint(checkpoint)
    (out / "model.safetensors").unlink()
    torch.save(module.net.state_dict(), out / "pytorch_model.bin")
    with pytest.raises(Exception, match="pytorch_model.bin") as err:
        RewardScorer.from_pretrained(out)
    assert "pickle" in str(err.value)


def test_trust_remote_code_is_off_unless_the_user_sets_it(monkeypatch):
    assert EncoderConfig().trust_remote_code is False
    seen = {}

    class Stop(Exception):
        pass

    def record(name):
        def from_pretrained(path, **kwargs):
            seen[name] = kwargs.get("trust_remote_code")
            raise Stop
        return from_pretrained

    monkeypatch.setattr(encoder_module.AutoModel, "from_pretrained", record("model"))
    monkeypatch.setattr(encoder_module.AutoTokenizer, "from_pretrained", record("tokenizer"))
    monkeypatch.setattr(encoder_module, "resolve_path", lambda path: path)
    for value in (False, True):
        with pytest.raises(Stop):
            load_encoder(EncoderConfig(path="some/model", trust_remote_code=value))
        with pytest.raises(Stop):
            encoder_module.load_tokenizer("some/model", trust_remote_code=value)
        assert seen == {"model": value, "tokenizer": value}


def test_no_code_path_turns_trust_remote_code_on():
    for source in (ROOT / "vrm").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                assert not (isinstance(node.value, ast.Constant) and node.value.value is True), \
                    f"{source}:{node.value.lineno} sets trust_remote_code=True"


# -- server under load ----------------------------------------------------------------------------------------------
def test_the_server_load_test_passes_quick(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("load_test_server", ROOT / "experiments" / "load_test_server.py")
    load_test = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, load_test)  # its dataclasses look their module up there
    spec.loader.exec_module(load_test)
    out = tmp_path / "load.json"
    assert load_test.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["requests"] == 200 and result["server_errors_5xx"] == 0 and result["bad"] > 0
    assert result["good_answered_correctly"] == result["good"] > 0
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
