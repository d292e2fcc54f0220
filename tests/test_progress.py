"""Progress of the steps that take more than a few seconds: encoding the feature cache, writing an export, and
vrm-eval's scoring and best-of-N show a bar on stderr (a model) or a line with the elapsed time (another scorer)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import random_export, random_model
from test_evaluate import EVAL_DATA, SMALL, LookupScorer, compose_eval
from test_feature_cache import frozen_setup

from vrm.data.tokenization import tokenizer_fingerprint
from vrm.evaluation import synthetic_eval as se
from vrm.evaluation.evaluate import evaluate, score_split
from vrm.scoring.export import export_model
from vrm.training.datamodule import VALIDATION
from vrm.training.feature_cache import cached_features


def finished_bar(stderr: str, desc: str, total: int) -> bool:
    """Whether ``stderr`` holds tqdm's bar ``desc`` at 100% of ``total``."""
    return re.search(rf"{re.escape(desc)}: 100%\|[^|]*\| {total}/{total} ", stderr) is not None


def test_encoding_the_feature_cache_shows_a_bar_over_the_batches(tmp_path, capsys):
    _, module, dm, enc_id = frozen_setup(tmp_path)
    split = dm.splits[VALIDATION]
    loader = dm.token_loader(split)
    capsys.readouterr()
    cached_features(module.net, split, loader, enc_id, tokenizer_fingerprint(dm.tokenizer), "validation")
    assert finished_bar(capsys.readouterr().err, "encoding validation for the feature cache", len(loader))
    cached_features(module.net, split, loader, enc_id, tokenizer_fingerprint(dm.tokenizer), "validation")
    assert "encoding validation" not in capsys.readouterr().err  # a hit encodes nothing


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A randomly initialised VRM on the tiny BERT, exported."""
    root = tmp_path_factory.mktemp("progress")
    return random_export(root, ["model=vrm"])


def test_writing_an_export_logs_its_step_and_elapsed_time(export, tmp_path, caplog):
    net, enc = random_model(["model=vrm"], tmp_path)
    with caplog.at_level(logging.INFO, logger="vrm.scoring.export"):
        export_model(net, enc.tokenizer, tmp_path / "out")
    messages = [r.getMessage() for r in caplog.records if r.name == "vrm.scoring.export"]
    assert messages[0] == f"export: writing {tmp_path / 'out'}..."
    assert re.fullmatch(rf"export: writing {re.escape(str(tmp_path / 'out'))}: done in \d+\.\d s", messages[1])


def test_vrm_eval_shows_a_bar_for_each_split_and_for_best_of_n(export, tmp_path, capsys):
    cfg = compose_eval([f"model_path={export}", "plots=false"] + EVAL_DATA + SMALL, tmp_path)
    capsys.readouterr()
    evaluate(cfg)
    err = capsys.readouterr().err
    # Each split scores its 32 pairs' chosen and rejected responses in one call; best-of-N 4 prompts x 8 candidates.
    assert finished_bar(err, "scoring test", 64) and finished_bar(err, "scoring shifted", 64)
    assert finished_bar(err, "best-of-N", 32)


def test_another_scorer_gets_a_line_with_the_elapsed_time(caplog):
    table = {"a": 1.0, "b": 0.0}
    bon = se.BestOfNSet(prompts=[{"prompt": "p"}], responses=[["a", "b"]], true_rewards=np.array([[1.0, 0.0]]),
                        spurious=np.array([[False, True]]))
    with caplog.at_level(logging.INFO):
        assert se.score_best_of_n(LookupScorer(table), bon).tolist() == [[1.0, 0.0]]
        scores = score_split(LookupScorer(table), [{"prompt": "p", "chosen": "a", "rejected": "b"}], desc="scoring x")
    assert scores.chosen.tolist() == [1.0] and scores.rejected.tolist() == [0.0]
    lines = [r.getMessage() for r in caplog.records]
    assert "best-of-N: 2 candidates with the lookup scorer..." in lines
    assert "scoring x: 2 texts with the lookup scorer..." in lines
    assert any(re.fullmatch(r"scoring x: 2 texts with the lookup scorer: done in \d+\.\d s", line) for line in lines)
