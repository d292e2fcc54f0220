"""What every entry point shares: the Hydra wrapper and the one-line report of a user's error."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.experimental.callback import Callback

from vrm.config import register_configs
from vrm.config.compose import config_dir, register_help_resolver
from vrm.data.files import acquire_folder_lock, release_folder_lock
from vrm.data.textio import undecodable
from vrm.errors import FolderInUseError, report_and_exit, user_error_types

#: Hydra prints its own errors unless this is "1"; then it raises them (and so does :func:`report_and_exit`).
FULL_ERROR = "HYDRA_FULL_ERROR"


def hydra_command(config_name: str, task: Callable[[Any], Any]) -> None:
    """Run ``task(cfg)`` on ``conf/<config_name>.yaml`` plus the command line, as ``@hydra.main`` does; an error in
    composing the config (a typo in a key, a value of the wrong type, a missing config group option) is one line
    (:func:`config_error_line`) and exit status 1, with Hydra's traceback under ``HYDRA_FULL_ERROR=1``."""
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        conf = config_dir()
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    for arg in sys.argv[1:]:
        why = undecodable(arg)
        if why is not None:  # a file name in another encoding: Hydra's override grammar reads text only
            sys.exit(f"error: the argument {arg.encode('utf-8', 'surrogateescape')!r} is not UTF-8 text ({why}); "
                     "Hydra reads overrides as text: rename the file, or pass a symbolic link with a UTF-8 name")
    register_configs()
    register_help_resolver()
    users_choice = os.environ.get(FULL_ERROR)

    @hydra.main(version_base="1.3", config_path=str(conf), config_name=config_name)
    def _main(cfg: Any) -> Any:
        _set_env(FULL_ERROR, users_choice)  # the task's own errors are reported as the user asked
        try:
            return call_reporting_errors(task, cfg)
        finally:  # and what fails after it (a sweeper's end) reaches the except clauses below
            os.environ[FULL_ERROR] = "1"

    if users_choice == "1":
        _main()
        return
    os.environ[FULL_ERROR] = "1"  # so that a composition error reaches the except clause below, unprinted
    try:
        _main()
    except (HydraException, OmegaConfBaseException) as err:
        print(f"error: {config_error_line(err)}", file=sys.stderr)
        print(f"(set {FULL_ERROR}=1 for the full traceback)", file=sys.stderr)
        sys.exit(1)
    except user_error_types() as err:  # a sweeper's, after its jobs (Optuna's "No trials are completed yet")
        _set_env(FULL_ERROR, users_choice)
        report_and_exit(err)
    finally:
        _set_env(FULL_ERROR, users_choice)


class RunFolderLock(Callback):
    """``hydra.callbacks.run_folder_lock``: one process at a time in a run folder (``hydra.run.dir``), taken before
    Hydra writes ``.hydra/config.yaml`` there, so a second run with the same folder neither overwrites the first's
    config nor mixes its checkpoints: it stops with an error naming the folder and the first run's pid
    (:func:`vrm.data.files.folder_lock`; :func:`vrm.training.train.train` takes the same lock)."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        HydraConfig.instance().set_config(config)  # as run_job does next, so ${hydra:...} resolves
        self.folder = str(OmegaConf.select(config, "hydra.run.dir"))
        try:
            acquire_folder_lock(self.folder, "run folder")
        except FolderInUseError as err:  # Hydra turns a callback's exception into a warning: stop here
            print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
            sys.exit(1)

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        release_folder_lock(self.folder)


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def config_error_line(err: BaseException) -> str:
    """One line for an error composing the config: an unknown key is named with the closest valid key at its place
    (``model.num_objectivs`` -> did you mean ``model.num_objectives``?); others say Hydra's and OmegaConf's reason."""
    from omegaconf import DictConfig
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = err if isinstance(err, OmegaConfBaseException) else err.__cause__
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and cause.full_key and \
            isinstance(cause.parent_node, DictConfig):
        *parents, key = str(cause.full_key).split(".")
        prefix = "".join(f"{parent}." for parent in parents)
        keys = [str(k) for k in cause.parent_node.keys() if k != "hydra"]
        match = difflib.get_close_matches(str(key), keys, n=1, cutoff=0.6)
        hint = f"did you mean {prefix}{match[0]}?" if match else f"the keys there: {', '.join(keys)}"
        return f"{cause.full_key} is not a config key; {hint} (a new key is added with a leading +)"
    reason = " ".join(str(err).split("Config search path:")[0].split())
    if isinstance(cause, OmegaConfBaseException) and cause is not err:
        reason += f": {str(cause).splitlines()[0]}"  # the reason, without OmegaConf's full_key/type lines
    if "LexerNoViableAltException" in reason:
        reason += (" (a value holding characters outside Hydra's plain grammar, such as non-ASCII letters or spaces, "
                   "is quoted: key='value')")
    return reason


def call_reporting_errors(task: Callable[..., Any], *args: Any,
                          extra: tuple[type[BaseException], ...] = ()) -> Any:
    """``task(*args)``; a user's error (or one of ``extra``) becomes one line on stderr and exit status 1."""
    try:
        return task(*args)
    except (*extra, *user_error_types()) as err:
        report_and_exit(err)
