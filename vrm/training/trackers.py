"""Experiment trackers (``conf/logger/``): what Lightning's loggers leave to us.

- :class:`WandbLogger`: Lightning's, but offline unless W&B credentials exist, so a run never needs the network.
- :class:`MLFlowLogger`: Lightning's, taking the run's ``tags`` list, and quiet when it creates the experiment.
- :class:`TrackioLogger`: Lightning has no Trackio logger (Lightning-AI/pytorch-lightning#21466); this one is small.
- :class:`LogRunConfig`: every logger gets the whole composed config once as its hyperparameters.
- :func:`instantiate_loggers` / :func:`close_loggers`: a missing tracker package is named with the extra to install;
  a W&B or Trackio run is finished when ``train()`` ends, so the next run of a sweep starts its own.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import hydra
from hydra.errors import InstantiationException
from lightning.fabric.utilities.logger import _add_prefix, _convert_params, _sanitize_callable_params
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from vrm.errors import MissingExtraError

log = logging.getLogger(__name__)

#: The optional extra (setup.cfg) that installs every tracker.
TRACK_EXTRA = "track"
#: The package each logger class of conf/logger/ needs (all in the extra).
TRACKER_PACKAGES = {"TensorBoardLogger": "tensorboard", "WandbLogger": "wandb", "MLFlowLogger": "mlflow-skinny",
                    "TrackioLogger": "trackio"}
#: The metric TensorBoard's HPARAMS tab compares runs by (Lightning's name for it).
HP_METRIC = "hp_metric"


def instantiate_loggers(group: DictConfig | None) -> list[Logger]:
    """Every ``_target_`` entry of the ``logger`` group; a tracker whose package is missing is a
    :class:`MissingExtraError` naming the config key and the extra."""
    loggers = []
    for key, entry in (group or {}).items():
        if not (isinstance(entry, DictConfig) and "_target_" in entry):
            continue
        try:
            loggers.append(hydra.utils.instantiate(entry, _convert_="all"))  # tags: a list
        except InstantiationException as err:
            cause = err.__cause__
            if not isinstance(cause, ImportError):
                raise
            package = TRACKER_PACKAGES.get(str(entry._target_).rsplit(".", 1)[-1], "its tracker's")
            raise MissingExtraError(f"logger.{key} ({entry._target_}) needs the {package} package, which is not "
                                    f"installed ({cause}); the trackers are in the '{TRACK_EXTRA}' extra: "
                                    f"pip install -e '.[{TRACK_EXTRA}]'") from err
    return loggers


def close_loggers(loggers: list[Logger], status: str) -> None:
    """Finalize every logger, then finish the W&B and Trackio runs (Lightning leaves them open after ``fit`` and
    ``test``; in one process, as Hydra's sweeps run, the next W&B logger would otherwise reuse the open run)."""
    for logger in loggers:
        logger.finalize(status)
        if isinstance(logger, TrackioLogger):
            logger.close()
        elif isinstance(logger, LightningWandbLogger):
            _finish_wandb(logger, status)


@rank_zero_only
def _finish_wandb(logger: LightningWandbLogger, status: str) -> None:
    run = logger._experiment  # None when no run was started (another rank, or nothing logged)
    if run is not None:
        run.finish(exit_code=0 if status == "success" else 1)
        logger._experiment = None


def has_wandb_credentials() -> bool:
    """Whether W&B can log in without asking: ``WANDB_API_KEY``, an identity token file, or the netrc entry that
    ``wandb login`` writes for the W&B host (``WANDB_BASE_URL``, default api.wandb.ai)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(mode: str | None) -> str | None:
    """The ``wandb.init`` mode: ``mode`` when set; else W&B's own ``WANDB_MODE``; else online with credentials and
    ``offline`` without them (said in one line), so that a run never waits for a login or the network."""
    if mode is not None or os.environ.get("WANDB_MODE"):
        return mode
    if has_wandb_credentials():
        return None
    log.info("W&B: no API key (wandb login, WANDB_API_KEY), so the run is logged offline under the run folder's "
             "wandb/offline-run-*; `wandb sync <that folder>` uploads it later (WANDB_MODE or logger.wandb.mode "
             "sets the mode)")
    return "offline"


class WandbLogger(LightningWandbLogger):
    """Lightning's W&B logger whose ``mode`` (online, offline, disabled) defaults to :func:`wandb_mode`."""

    def __init__(self, mode: str | None = None, **kwargs: Any):
        super().__init__(mode=wandb_mode(mode), **kwargs)
        if self._wandb_init.get("anonymous") is None:  # W&B warns that the setting has no effect, even when unset
            self._wandb_init.pop("anonymous", None)


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's MLflow logger; ``tags`` may be the run's tag list (MLflow tags are key-value: each tag becomes a
    key whose value is ``"true"``)."""

    def __init__(self, tags: list[str] | dict[str, Any] | None = None, **kwargs: Any):
        if isinstance(tags, list):
            tags = {str(tag): "true" for tag in tags}
        super().__init__(tags=tags, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """Lightning's, creating a missing experiment without its warning (a new local store never has one)."""
        if not self._initialized and self._run_id is None and self._experiment_id is None and \
                self._mlflow_client.get_experiment_by_name(self._experiment_name) is None:
            self._experiment_id = self._mlflow_client.create_experiment(name=self._experiment_name,
                                                                        artifact_location=self._artifact_location)
        return super().experiment


class TrackioLogger(Logger):
    """Trackio as a Lightning logger: metrics at the trainer's step, hyperparameters and ``tags`` in the run's
    config. A local run writes Trackio's SQLite database under ``$TRACKIO_DIR`` (Trackio's default:
    ``$HF_HOME/trackio``), read by ``trackio show``; ``space_id`` syncs to a Hugging Face Space instead."""

    def __init__(self, project: str = "vrm", name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, space_id: str | None = None, prefix: str = ""):
        super().__init__()
        try:
            import trackio  # noqa: F401
        except ImportError as err:
            raise ModuleNotFoundError(f"the trackio package is not installed ({err})") from err
        self._project, self._run_name, self._group, self._space_id = project, name, group, space_id
        self._prefix = prefix
        self._config: dict[str, Any] = {"tags": list(tags or [])}
        self._run: Any = None
        self._resume = "never"

    @property
    def name(self) -> str:
        return self._project

    @property
    def version(self) -> str | None:
        return self._run.name if self._run is not None else self._run_name

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The ``trackio.Run``, started on first use with the hyperparameters logged so far as its config."""
        if self._run is None:
            import trackio
            self._run = trackio.init(project=self._project, name=self._run_name, group=self._group,
                                     space_id=self._space_id, config=dict(self._config), resume=self._resume, embed=False,
                                     auto_log_cpu=False, auto_log_gpu=False)
        return self._run

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        params = _sanitize_callable_params(_convert_params(params))
        self._config.update(params)
        if self._run is not None:  # Trackio stores the config with the run's first metrics
            self._run.config.update(params)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.experiment.log(dict(_add_prefix(metrics, self._prefix, "/")), step=step)

    @rank_zero_only
    def close(self) -> None:
        """Finish the run (flushes its metrics to the database)."""
        if self._run is not None:
            import trackio
            self._run_name, self._resume = self._run.name, "allow"  # used again: the same run goes on
            trackio.finish()  # our run is Trackio's current one; this also clears it, so nothing finishes it twice
            self._run = None


class LogRunConfig(Callback):
    """Logs ``config`` (the run's composed config, resolved) to every logger once as its hyperparameters, and at
    the end of ``fit`` gives TensorBoard's HPARAMS tab the run's ``optimized_metric`` as ``hp_metric``. Lightning's
    own logging of the module's arguments is switched off (``enable_autolog_hparams=False``), so each tracker holds
    one set: the config the run was started with, under the same keys everywhere (:func:`flat_config`)."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self._logged = False

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self._logged:
            return
        params = flat_config(self.config)
        for logger in trainer.loggers:
            logger.log_hyperparams(params)
            logger.save()
        self._logged = True

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        value = trainer.callback_metrics.get(self.config.get("optimized_metric"))
        if value is None:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_metrics({HP_METRIC: float(value)}, step=trainer.global_step)


def flat_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``tree`` with "/"-joined keys (``model/num_objectives``), as Lightning's TensorBoard and MLflow loggers name
    them; an empty list or mapping becomes its text (``[]``, ``{}``), since their flattening would drop the key."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = ("{}" if isinstance(value, dict) else "[]") if value in ({}, []) else value
    return flat
