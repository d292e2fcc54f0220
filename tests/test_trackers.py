"""The experiment trackers of conf/logger/: a 2-step run logs to every one at once (logger=many), and each is read
back through its own reader (tests/tracker_readers.py): the metrics equal the CSV logger's, the hyperparameters are
the whole composed config, and the run's tags are there. Cheaper tests pin each option's settings and errors."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES, compose_train
from omegaconf import OmegaConf
from tracker_readers import flatten, mlflow_run, tensorboard_run, trackio_run, wandb_offline_run

from vrm.errors import MissingExtraError, user_error_types
from vrm.training.trackers import (
    HP_METRIC,
    TrackioLogger,
    WandbLogger,
    has_wandb_credentials,
    instantiate_loggers,
    wandb_mode,
)
from vrm.training.train import train

# Checked without importing them: Trackio reads TRACKIO_DIR when first imported, after conftest has set it.
_MISSING = [p for p in ("tensorboard", "wandb", "mlflow", "trackio") if importlib.util.find_spec(p) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"{_MISSING} not installed: the trackers are in the 'track' "
                                                       "extra (pip install -e '.[track]')")

TAGS = ["unit", "trackers"]
#: Two optimizer steps (one epoch of two batches, so validation runs and val/acc_best exists), every step logged.
TWO_STEPS = [o for o in TINY_OVERRIDES if not o.startswith("logger")] + [
    "logger=many", "trainer.limit_train_batches=2", "trainer.log_every_n_steps=1", f"tags=[{','.join(TAGS)}]"]


@pytest.fixture
def no_wandb_login(monkeypatch, tmp_path):
    """No W&B credentials and no WANDB_MODE: the W&B logger must choose offline by itself."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))


def csv_scalars(path: Path) -> dict[str, dict[int, float]]:
    """{metric: {step: value}} of Lightning's CSV logger."""
    scalars: dict[str, dict[int, float]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key != "step" and value != "":
                    scalars.setdefault(key, {})[int(row["step"])] = float(value)
    return scalars


def as_text(value) -> str:
    """How MLflow (and TensorBoard, for anything but numbers and text) store a hyperparameter: its str()."""
    return str(value)


def test_every_tracker_reads_back_the_metrics_the_config_and_the_tags(tmp_path, no_wandb_login, caplog):
    trackio_name = f"two-steps-{tmp_path.name}"  # Trackio keeps every run of a project in one database
    cfg = compose_train(TWO_STEPS + [f"+logger.trackio.name={trackio_name}"], tmp_path / "run")
    with caplog.at_level(logging.INFO):
        metrics = train(cfg)
    run = tmp_path / "run"
    said = [r.getMessage() for r in caplog.records]
    assert sum("logged offline" in m for m in said) == 1  # W&B says once that it runs offline
    assert not [m for m in said if "not found. Creating it" in m]  # a new MLflow store is no warning
    expected = csv_scalars(run / "csv" / "version_0" / "metrics.csv")
    assert sorted(expected["train/loss_step"]) == [0, 1] and "test/acc" in expected and "val/acc_best" in expected
    assert expected["test/acc"] == {2: pytest.approx(metrics["test/acc"])}
    # the whole config, its keys joined by "/"; an empty list or mapping as its text (Lightning would drop the key)
    config = {key: json.dumps(value) if value in ([], {}) else value
              for key, value in flatten(OmegaConf.to_container(cfg, resolve=True)).items()}
    assert config["data/aspect_names"] == "[]"
    assert config["tags"] == TAGS and config["encoder/name"] == "tiny_bert"

    readers = {
        "tensorboard": tensorboard_run(run / "tensorboard" / "version_0"),
        "mlflow": mlflow_run(f"sqlite:///{run}/mlflow.db", cfg.logger.mlflow.experiment_name),
        "wandb": wandb_offline_run(run),
        "trackio": trackio_run(cfg.logger.trackio.project, trackio_name),
    }
    for name, got in readers.items():
        for tag, by_step in expected.items():
            assert got["scalars"].get(tag) == pytest.approx(by_step), f"{name}: {tag}"
        params = got["params"]
        missing = sorted(set(config) - set(params))
        assert not missing, f"{name} lacks the hyperparameters {missing[:5]}"
        for key, value in config.items():
            if name == "mlflow" or (name == "tensorboard" and not isinstance(value, int | float | str)):
                assert params[key] == as_text(value), f"{name}: {key}"
            else:
                assert params[key] == value, f"{name}: {key}"

    # tags: as the run's tags where the tracker has them, else in its config
    assert readers["mlflow"]["tags"] == {tag: "true" for tag in TAGS}
    assert readers["mlflow"]["status"] == "FINISHED"
    assert readers["wandb"]["tags"] == TAGS and readers["wandb"]["kinds"][-1] == "exit"  # finished, not left open
    import wandb
    assert wandb.run is None  # so the next trial of a sweep in this process starts its own W&B run
    assert readers["trackio"]["tags"] == TAGS
    # TensorBoard's HPARAMS tab: the optimized metric at the end of training
    assert readers["tensorboard"]["scalars"][HP_METRIC][2] == pytest.approx(metrics[cfg.optimized_metric])



@pytest.mark.parametrize("option, kinds", [
    ("tensorboard", ["TensorBoardLogger"]), ("wandb", ["WandbLogger"]), ("mlflow", ["MLFlowLogger"]),
    ("trackio", ["TrackioLogger"]),
    ("many", ["CSVLogger", "TensorBoardLogger", "MLFlowLogger", "WandbLogger", "TrackioLogger"])])
def test_each_logger_option_builds_its_trackers_in_the_run_folder(tmp_path, no_wandb_login, option, kinds):
    cfg = compose_train([f"logger={option}", "tags=[a,b]"], tmp_path)
    assert [entry._target_.rsplit(".", 1)[1] for entry in cfg.logger.values()] == kinds
    group = OmegaConf.to_container(cfg.logger, resolve=True)
    if "mlflow" in group:  # its store is made when it starts (seconds): the 2-step run above starts it
        assert group.pop("mlflow")["tracking_uri"] == f"sqlite:///{tmp_path}/mlflow.db"
    for logger in instantiate_loggers(OmegaConf.create(group)):
        if isinstance(logger, WandbLogger):
            assert logger._wandb_init["mode"] == "offline" and logger._wandb_init["tags"] == ["a", "b"]
            assert logger.save_dir == str(tmp_path)
        elif isinstance(logger, TrackioLogger):
            assert logger._config == {"tags": ["a", "b"]} and logger._run is None  # no run before the first metric
        elif type(logger).__name__ == "TensorBoardLogger":
            assert Path(logger.log_dir).parent == tmp_path / "tensorboard"


def test_mlflow_takes_the_tracking_uri_of_the_environment_or_the_config(tmp_path, no_wandb_login, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert compose_train(["logger=mlflow"], tmp_path).logger.mlflow.tracking_uri == "http://127.0.0.1:5000"
    uri = f"sqlite:///{tmp_path}/given.db"
    cfg = compose_train(["logger=mlflow", f"logger.mlflow.tracking_uri='{uri}'"], tmp_path)
    assert cfg.logger.mlflow.tracking_uri == uri


def test_wandb_is_online_only_with_credentials_and_an_explicit_mode_wins(tmp_path, no_wandb_login, monkeypatch):
    assert wandb_mode(None) == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert has_wandb_credentials() and wandb_mode(None) is None  # wandb login's netrc entry: online
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert wandb_mode(None) == "offline"  # a login for another host does not count
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert wandb_mode(None) is None
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(None) is None  # W&B reads WANDB_MODE itself
    assert wandb_mode("offline") == "offline"


def test_a_missing_tracker_package_names_the_key_and_the_extra(tmp_path, no_wandb_login, monkeypatch):
    import lightning.pytorch.loggers.wandb as lightning_wandb

    monkeypatch.setattr(lightning_wandb, "_WANDB_AVAILABLE", False)
    with pytest.raises(MissingExtraError, match=r"logger\.wandb .*needs the wandb package.*pip install -e '\.\[track\]'"):
        instantiate_loggers(compose_train(["logger=wandb"], tmp_path).logger)
    monkeypatch.setitem(sys.modules, "trackio", None)  # import trackio -> ImportError
    with pytest.raises(MissingExtraError, match=r"logger\.trackio .*needs the trackio package.*\[track\]"):
        instantiate_loggers(compose_train(["logger=trackio"], tmp_path).logger)
    assert MissingExtraError in user_error_types()  # the CLI prints it as one line
