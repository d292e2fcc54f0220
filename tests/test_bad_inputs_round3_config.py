"""Issue 23, part B: config values that pass their types but break the model, training that goes non-finite, and
resuming a checkpoint under another config, each run as a user runs it (the console command in a subprocess) and
checked by its exit status and its message (docs/robustness-of-inputs.md, "Round 3: config values and training
faults")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HANG_TIMEOUT, random_export

from vrm.config.eval import MAX_UNCERTAINTY_SAMPLES

ROOT = Path(__file__).resolve().parents[1]
#: A few training pairs on the tiny BERT: every run here trains for seconds.
TINY = ["encoder=tiny_bert", "data.synthetic.num_train=16", "data.synthetic.num_validation=4",
        "data.synthetic.num_test=4", "data.synthetic.num_shifted=4", "data.batch_size=4", "logger=none",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def command(module: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``vrm-<module> ARGS`` as a user runs it (the console script's ``main``), in ``tmp_path``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VRM_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-c", f"from vrm.cli.{module} import main; main()", *args],
                          capture_output=True, text=True, timeout=HANG_TIMEOUT, env=env, cwd=tmp_path)


def vrm_train(args: list[str], tmp_path: Path, run: str = "run") -> subprocess.CompletedProcess:
    return command("train", [*args, f"hydra.run.dir={tmp_path / run}", f"paths.log_dir={tmp_path / 'logs'}"],
                   tmp_path)


def assert_named_error(result: subprocess.CompletedProcess, *named: str, status: int = 1) -> None:
    """Exit ``status``, no traceback, and every part of ``named`` in the message."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for part in named:
        assert part in result.stderr, result.stderr[-3000:]


# -- 1. numeric config values: one table of rules, checked before torch is imported --------------------------------
@pytest.mark.parametrize("overrides, named", [
    (["model.tau=inf"], "model.tau=inf must be a finite number > 0"),
    (["model.kl_warmup_steps=-5"], "model.kl_warmup_steps=-5 must be >= 0 or null (0: no warm-up"),
    (["model.concentration_min=10", "model.concentration_max=1"],
     "model.concentration_min=10.0 must be < model.concentration_max=1.0"),
    (["model.center_coef=-1e9"], "model.center_coef=-1000000000.0 must be a finite number >= 0"),
    (["model.beta_w=inf"], "model.beta_w=inf must be a finite number >= 0"),
    (["optim.lr=inf"], "optim.lr=inf must be a finite number > 0"),
    (["model.aspect_coef=nan"], "model.aspect_coef=nan must be a finite number >= 0"),
    (["seed=-1"], "seed=-1 must be in [0, 4294967295] or null (numpy's seed range)"),
    ([f"seed={2**40}"], f"seed={2**40} must be in [0, 4294967295]"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 must be >= 1"),
    (["trainer.val_check_interval=0"], "trainer.val_check_interval=0 must be null, an integer >= 1"),
    (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0 must be >= 1 or null"),
    (["trainer.precision=64"], "trainer.precision=64 is not supported; use one of 32-true"),
    (["data.synthetic.num_train=0"], "data.synthetic.num_train=0 must be >= 1"),
    (["encoder.lora.r=0", "encoder.train_mode=lora"], "encoder.lora.r=0 must be in [1, 16384]"),
    # beyond the list (docs/robustness-of-inputs.md, "Round 3", own cases)
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be >= -1, not 0 or null"),  # was exit 0, untrained
    (["trainer.max_steps=0"], "trainer.max_steps=0 must be >= -1, not 0"),  # was exit 0, untrained
    (["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0 must be null, an integer >= 1"),
    (["data.max_rows=-1"], "data.max_rows=-1 must be >= 1 or null"),  # was "Column 'chosen_truncated'"
    (["optim.weight_decay=-1"], "optim.weight_decay=-1.0 must be a finite number >= 0"),
    (["optim.warmup_fraction=2"], "optim.warmup_fraction=2.0 must be a finite number in [0, 1]"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1.0 must be a finite number >= 0 or null"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 must be >= 1"),
    (["model.prior_concentration=0"], "model.prior_concentration=0.0 must be a finite number > 0"),
])
def test_a_meaningless_config_value_is_named_with_its_allowed_range(tmp_path, overrides, named):
    result = vrm_train(TINY + overrides, tmp_path)
    assert_named_error(result, named)
    assert not (tmp_path / "run" / "tokenizer").exists()  # refused before the encoder was loaded


def test_every_rule_names_a_key_of_its_schema():
    """A rule whose key is misspelt would be skipped (absent keys are), so each must be a key of its config."""
    from omegaconf import OmegaConf

    from vrm.config import EvalConfig, ModelScorerConfig, TrainConfig
    from vrm.config.eval import EVAL_RULES, MODEL_SCORER_RULES
    from vrm.config.train import TRAIN_ORDERINGS, TRAIN_RULES

    for schema, keys in ((TrainConfig, [r.key for r in TRAIN_RULES]
                          + [k for o in TRAIN_ORDERINGS for k in (o.low_key, o.high_key)]),
                         (EvalConfig, [r.key for r in EVAL_RULES]),
                         (ModelScorerConfig, [r.key for r in MODEL_SCORER_RULES])):
        cfg = OmegaConf.structured(schema)
        missing = [k for k in keys if OmegaConf.select(cfg, k, default="absent", throw_on_missing=False) == "absent"]
        assert not missing, f"{schema.__name__} has no {missing}"


def test_a_huge_integer_is_named_not_overflowed(tmp_path):
    result = vrm_train(TINY + [f"seed={10**400}"], tmp_path)
    assert_named_error(result, "seed=1000", "must be in [0, 4294967295]")


def test_a_sweep_with_a_bad_value_in_one_job_stops_naming_it(tmp_path):
    result = command("train", ["-m", *TINY, "model.tau=inf,1.0", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                               f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    assert_named_error(result, "model.tau=inf must be a finite number > 0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_trainer_lightning_refuses_is_named_before_the_encoder_loads(tmp_path):
    """trainer.accelerator=gpu on a CPU machine was Hydra's 'Error executing job with overrides [...]' after the
    encoder had loaded and the data was tokenised."""
    result = vrm_train(TINY + ["trainer.accelerator=gpu"], tmp_path)
    assert_named_error(result, "trainer.accelerator=gpu", "is refused by Lightning", "No supported gpu backend")
    assert "Error executing job" not in result.stderr
    assert not (tmp_path / "run" / "tokenizer").exists()


def test_vrm_cache_pointing_at_a_file_is_named(tmp_path):
    (tmp_path / "cachefile").write_text("not a folder\n")
    env_cache = tmp_path / "cachefile"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VRM_CACHE": str(env_cache), "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run([sys.executable, "-c", "from vrm.cli.train import main; main()", *TINY,
                             f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True,
                            timeout=HANG_TIMEOUT, env=env, cwd=tmp_path)
    assert_named_error(result, f"VRM_CACHE={env_cache}: {env_cache} is a file, not a folder")


def test_max_length_beyond_the_encoders_positions_names_both_numbers(tmp_path):
    result = vrm_train(TINY + ["data.max_length=2048"], tmp_path)  # tiny_bert has 512 positions (was an IndexError)
    assert_named_error(result, "data.max_length=2048 is more than the 512 positions of the encoder 'tiny_bert'")


def test_kl_warmup_steps_zero_means_no_warm_up(tmp_path):
    """0 was a ZeroDivisionError; now the KL terms weigh beta_w from the first step (the logged beta is exact)."""
    result = vrm_train(TINY + ["model.kl_warmup_steps=0", "trainer.max_steps=2", "model.beta_w=0.25"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train/beta_w"] == pytest.approx(0.25) and metrics["train/beta_z"] == pytest.approx(0.05)


# -- scorer values: one cap on Monte Carlo samples (vrm-eval, vrm-score, the server's default) ----------------------
@pytest.fixture(scope="module")
def bt_export(tmp_path_factory) -> Path:
    """A randomly initialised BT model on the tiny BERT, exported."""
    root = tmp_path_factory.mktemp("round3_bt")
    return random_export(root, ["model=bt"])


@pytest.fixture
def queries(tmp_path) -> Path:
    path = tmp_path / "queries.jsonl"
    path.write_text(json.dumps({"prompt": "How do I sort a list?", "response": "Use sorted()."}) + "\n")
    return path


def test_vrm_eval_caps_uncertainty_samples_before_loading_the_model(tmp_path):
    result = command("eval", ["model_path=/nonexistent/export", "scorer.uncertainty_samples=1000000",
                              f"hydra.run.dir={tmp_path / 'eval'}"], tmp_path)
    assert_named_error(result, f"scorer.uncertainty_samples=1000000 must be in [0, {MAX_UNCERTAINTY_SAMPLES}]")
    assert "/nonexistent/export" not in result.stderr  # refused before the model path was looked at


def test_vrm_score_caps_num_samples_as_an_option_error(tmp_path, bt_export, queries):
    result = command("score", ["--model", str(bt_export), "--input", str(queries), "--output",
                               str(tmp_path / "out.jsonl"), "--num-samples", "1000000000"], tmp_path)
    assert_named_error(result, f"--num-samples: 1000000000 must be in [0, {MAX_UNCERTAINTY_SAMPLES}]", status=2)


def test_vrm_serve_caps_max_num_samples_and_the_python_api_caps_num_samples(tmp_path, bt_export):
    result = command("serve", ["--model", str(bt_export), "--max-num-samples", "1000"], tmp_path)
    assert_named_error(result, f"--max-num-samples: 1000 must be in [0, {MAX_UNCERTAINTY_SAMPLES}]", status=2)
    from vrm.scoring.scorer import RewardScorer

    scorer = RewardScorer.from_pretrained(bt_export, device="cpu")
    with pytest.raises(ValueError, match=rf"num_samples=1000000 must be in \[0, {MAX_UNCERTAINTY_SAMPLES}\]"):
        scorer.score_details(["How do I sort a list?"], ["Use sorted()."], num_samples=1_000_000)


def test_vrm_score_refuses_num_samples_on_a_bt_export(tmp_path, bt_export, queries):
    out = tmp_path / "out.jsonl"
    result = command("score", ["--model", str(bt_export), "--input", str(queries), "--output", str(out),
                               "--num-samples", "8", "--no-progress"], tmp_path)
    assert_named_error(result, "num_samples=8: this is a Bradley-Terry reward model, which has no posterior")
    assert not out.exists()
    plain = command("score", ["--model", str(bt_export), "--input", str(queries), "--output", str(out),
                              "--no-progress"], tmp_path)
    assert plain.returncode == 0 and "reward" in json.loads(out.read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: --device cuda is valid here")
def test_vrm_score_on_cuda_without_cuda_is_named(tmp_path, bt_export, queries):
    result = command("score", ["--model", str(bt_export), "--input", str(queries), "--output",
                               str(tmp_path / "out.jsonl"), "--device", "cuda"], tmp_path)
    assert_named_error(result, "device 'cuda' is not available", "use cpu")


# -- 2. training that goes non-finite, and data that leaves nothing to train on -------------------------------------
def test_a_diverged_run_fails_and_exports_nothing(tmp_path):
    """optim.lr=1e30 with every non-finite batch allowed was exit 0 with test/loss=nan and a NaN model exported."""
    result = vrm_train(TINY + ["optim.lr=1e30", "optim.head_lr=1e30", "model.max_nonfinite_batches=1000000",
                               "trainer.max_epochs=1", f"export_dir={tmp_path / 'export'}"], tmp_path)
    assert_named_error(result, "NonFiniteModelError", "non-finite", "the run diverged", "lower optim.lr")
    assert not (tmp_path / "export").exists()
    assert not (tmp_path / "run" / "best_checkpoint.txt").exists()


def test_truncation_drop_that_drops_every_pair_is_named(tmp_path):
    result = vrm_train(TINY + ["data.truncation=drop", "data.max_length=8"], tmp_path)  # was exit 0, no checkpoint
    assert_named_error(result, "the train split has no pairs left: all 16 of its pairs were dropped by "
                               "data.truncation=drop", "data.max_length=8")


# -- 3. resuming under another config ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """``last.ckpt`` of a two-step VRM run (K = 8, encoder fine-tuned)."""
    root = tmp_path_factory.mktemp("round3_ckpt")
    result = vrm_train(TINY + ["trainer.max_steps=2"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("overrides, named", [
    (["model.num_objectives=4"], "model.num_objectives: checkpoint 5, this run 4"),
    (["model=bt"], "model.type: checkpoint 'vrm', this run 'bt'"),
    (["encoder.train_mode=frozen"], "encoder.train_mode: checkpoint 'full', this run 'frozen'"),
])
def test_resuming_under_another_config_names_the_differing_keys(tmp_path, checkpoint, overrides, named):
    result = vrm_train(TINY + [f"ckpt_path={checkpoint}", "trainer.max_steps=3"] + overrides, tmp_path)
    assert_named_error(result, f"ckpt_path={checkpoint} was trained under another config", named)
    assert "state_dict" not in result.stderr


def test_vrm_export_refuses_a_checkpoint_with_nan_weights(tmp_path, checkpoint):
    poisoned = tmp_path / "nan.ckpt"
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    name = next(k for k in ckpt["state_dict"] if k.startswith("net.head."))
    ckpt["state_dict"][name][...] = float("nan")
    torch.save(ckpt, poisoned)
    result = command("export", [str(poisoned), str(tmp_path / "export")], tmp_path)
    assert_named_error(result, "NonFiniteModelError", "non-finite (NaN or Inf) weights in 1 tensors",
                       name.removeprefix("net."))
    assert not (tmp_path / "export").exists()


# -- damaged cache entries are recomputed, not trained on -----------------------------------------------------------
def test_damaged_tokenisation_and_feature_cache_entries_are_recomputed(tmp_path):
    """A tokenised split cut short was `ArrowInvalid: Expected to read ... metadata bytes` (naming no file); a feature
    file of the right name but the wrong width went on to the heads. Both are now warned about and recomputed."""
    from safetensors.torch import load_file, save_file

    frozen = TINY + ["encoder.train_mode=frozen", "trainer.max_steps=1"]
    assert vrm_train(frozen, tmp_path, run="first").returncode == 0
    arrows = sorted((tmp_path / "cache" / "tokenized").glob("*.arrow"))
    features = sorted((tmp_path / "cache" / "features").glob("*.safetensors"))
    assert arrows and features
    for path in arrows:
        path.write_bytes(path.read_bytes()[:100])
    for path in features:
        save_file({k: torch.zeros(v.shape[0], v.shape[1] + 3) for k, v in load_file(path).items()}, path)
    result = vrm_train(frozen, tmp_path, run="second")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"ignoring unreadable tokenisation cache {arrows[0]}" in log
    assert f"ignoring feature cache {features[0]}" in log and "found {'h_chosen': (" in log
    first = json.loads((tmp_path / "first" / "metrics.json").read_text())
    second = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert second["test/loss"] == pytest.approx(first["test/loss"], rel=1e-5)  # the same features, recomputed
