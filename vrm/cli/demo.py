"""``vrm-demo``: the main job on the embedded default, in four stages.

1. train a VRM, 2. train its Bradley-Terry baseline (same data, encoder, seed and budget), 3. evaluate both on the
in-distribution and the shifted test split (``vrm-eval``'s evaluation: eval.json and plots per model), 4. export the
VRM. Before stage 1 it checks what would otherwise fail late (the configs, the output folder, the encoder, that a
checkpoint will be there to evaluate and export). At each stage it prints which stage of how many, the elapsed
time and an estimate of what is left; at the end a summary table and the paths of the export, the eval files and
the plots. SIGTERM or Ctrl-C stops it with exit status 128 + the signal's number, saying what had finished and where
its files are.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, open_dict

from vrm.cli.app import call_reporting_errors
from vrm.config.compose import compose_config
from vrm.metric_names import ACC_BEST, SHIFTED_ACC, TEST_ACC

#: The models the demo compares, in table order.
MODELS = ("vrm", "bt")
STAGE_TRAIN_VRM, STAGE_TRAIN_BT, STAGE_EVALUATE, STAGE_EXPORT = "train VRM", "train BT", "evaluate", "export"
STAGES = (STAGE_TRAIN_VRM, STAGE_TRAIN_BT, STAGE_EVALUATE, STAGE_EXPORT)
#: Overrides with this prefix go to the evaluation config only (prefix removed); ``data.`` ones go to both.
EVAL_PREFIX = "eval."
#: Signals that stop the job; the exit status is 128 + the signal's number, as a shell reports it.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SUMMARY_JSON, SUMMARY_MD = "summary.json", "summary.md"
#: Table columns: metric key -> header.
COLUMNS = {ACC_BEST: "val acc (best)", TEST_ACC: "test acc (in-dist.)", SHIFTED_ACC: "shifted acc"}
#: Relative cost of a VRM training step next to a BT one (experiments/results/bench_training.md: 1.15 on MiniLM).
VRM_STEP_COST = 1.15
#: A training pair costs a forward and a backward pass (about 3 forwards) of two sequences; evaluation only forwards.
TRAIN_PASSES = 3


class JobStopped(BaseException):
    """SIGTERM or SIGINT arrived (a BaseException, so no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_job_stopped(signum: int, _frame: Any) -> None:
    raise JobStopped(signum)


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


@dataclass
class JobProgress:
    """Stage bookkeeping: which stage of how many, elapsed time, and what is left, estimated from the time the
    finished stages took per unit of work (``work``: each stage's relative cost, from the config)."""

    work: Sequence[float]
    clock: Callable[[], float] = time.monotonic
    seconds: list[float] = field(default_factory=list)
    started: float = 0.0
    stage_started: float = 0.0

    def __post_init__(self):
        self.started = self.stage_started = self.clock()

    @property
    def current(self) -> int:
        """0-based index of the running stage (== len(STAGES) when all are done)."""
        return len(self.seconds)

    def elapsed(self) -> float:
        return self.clock() - self.started

    def remaining(self) -> float | None:
        """Seconds left for the running stage and the ones after it; None before a stage has finished."""
        done = self.current
        if done == 0 or sum(self.work[:done]) <= 0:
            return None
        rate = sum(self.seconds) / sum(self.work[:done])
        return max(rate * sum(self.work[done:]) - (self.clock() - self.stage_started), 0.0)

    def start_stage(self) -> str:
        self.stage_started = self.clock()
        left = self.remaining()
        estimate = "estimate of the time left after stage 1" if left is None else \
            f"about {format_seconds(left)} left (estimate)"
        return (f"[vrm-demo] stage {self.current + 1}/{len(self.work)}: {STAGES[self.current]} "
                f"(elapsed {format_seconds(self.elapsed())}, {estimate})")

    def finish_stage(self) -> str:
        self.seconds.append(self.clock() - self.stage_started)
        return (f"[vrm-demo] stage {self.current}/{len(self.work)} {STAGES[self.current - 1]} done in "
                f"{format_seconds(self.seconds[-1])}")


def stage_work(train_cfgs: dict[str, DictConfig], eval_cfg: DictConfig) -> list[float]:
    """Relative cost of each stage, in sequence forward passes (known sizes of the synthetic benchmark; other data
    counts as the synthetic defaults, so the estimate still scales with the epochs)."""
    syn = train_cfgs["vrm"].data.synthetic
    epochs = train_cfgs["vrm"].trainer.max_epochs or 1
    train_pairs = epochs * (TRAIN_PASSES * syn.num_train + syn.num_validation)
    eval_pairs = syn.num_test + syn.num_shifted
    best_of_n = eval_cfg.best_of_n.num_prompts * eval_cfg.best_of_n.n_max / 2  # responses, not pairs
    evaluate = len(MODELS) * (eval_pairs + best_of_n)
    return [VRM_STEP_COST * train_pairs, train_pairs, evaluate, 0.01 * train_pairs]


def summary_table(results: dict[str, dict[str, float]], seconds: dict[str, float]) -> str:
    """A markdown table of each model's accuracy per split and its training time."""
    header = "| model | " + " | ".join(COLUMNS.values()) + " | train time |"
    rule = "|---" * (len(COLUMNS) + 2) + "|"
    rows = [header, rule]
    for model, metrics in results.items():
        cells = [f"{metrics[k]:.3f}" if k in metrics else "n/a" for k in COLUMNS]
        rows.append(f"| {model} | " + " | ".join(cells) + f" | {seconds[model]:.0f} s |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------- configs and checks


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(training overrides, evaluation overrides): ``eval.X=v`` goes to the evaluation only, as ``X=v``;
    ``data...`` overrides go to both; everything else to training."""
    train, evaluation = [], []
    for item in overrides:
        if item.startswith(EVAL_PREFIX):
            evaluation.append(item[len(EVAL_PREFIX):])
        else:
            train.append(item)
            if item.lstrip("+~").startswith("data"):
                evaluation.append(item)
    return train, evaluation


def compose_job(out_dir: Path, overrides: Sequence[str]) -> tuple[dict[str, DictConfig], dict[str, DictConfig], Path]:
    """The training config of each model, its evaluation config, and the export folder (``export_dir=`` if given).
    Training runs no test stage and writes no export: stages 3 and 4 do."""
    train_overrides, eval_overrides = split_overrides(overrides)
    train_cfgs, eval_cfgs = {}, {}
    export_dir = out_dir / "export" / "vrm"
    for model in MODELS:
        cfg = compose_config([*train_overrides, f"model={model}"], out_dir / model)
        if cfg.export_dir is not None:
            export_dir = Path(cfg.export_dir)
        with open_dict(cfg):
            cfg.test, cfg.export_dir = False, None
        train_cfgs[model] = cfg
        eval_cfgs[model] = compose_config([*eval_overrides, f"name={model}", "model_path=pending"],
                                          out_dir / model / "eval", config_name="eval")
    return train_cfgs, eval_cfgs, export_dir


def check_writable(folder: Path, what: str) -> None:
    """``folder`` exists or can be made, and a file can be written in it; else ValueError naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".vrm-demo-write-check"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"{what} {folder} is not writable: {err}") from err


def check_checkpoints(cfg: DictConfig) -> None:
    """The evaluation and the export read the best checkpoint: a config that saves none fails now, not at the end."""
    trainer = cfg.trainer
    monitored = [c for c in (cfg.callbacks or {}).values()
                 if isinstance(c, DictConfig) and str(c.get("_target_", "")).endswith("ModelCheckpoint")
                 and c.get("monitor")]
    problems = [(not cfg.train, "train=false trains nothing"),
                (not trainer.enable_checkpointing, "trainer.enable_checkpointing=false saves no checkpoint"),
                (bool(trainer.fast_dev_run), "trainer.fast_dev_run saves no checkpoint"),
                (not monitored, "the callbacks keep no best checkpoint (no ModelCheckpoint with a monitor)")]
    for failed, why in problems:
        if failed:
            raise ValueError(f"vrm-demo evaluates and exports the best checkpoint, but {why}; drop that override")


def check_encoder(cfg: DictConfig) -> None:
    """The encoder's config and tokenizer load (a missing folder or hub name fails now, not after the set-up)."""
    from transformers import AutoConfig

    from vrm.errors import EncoderLoadError
    from vrm.models.encoder import load_tokenizer, resolve_path

    enc = cfg.encoder
    if enc.pretrained:
        path = resolve_path(enc.path)
        try:
            AutoConfig.from_pretrained(path, trust_remote_code=enc.trust_remote_code)
        except (OSError, ValueError) as err:
            raise EncoderLoadError(f"cannot load encoder from encoder.path={enc.path!r} ({path}): {err}") from err
    load_tokenizer(enc.tokenizer or enc.path, enc.trust_remote_code)


def check_job(train_cfgs: dict[str, DictConfig], eval_cfgs: dict[str, DictConfig], out_dir: Path,
              export_dir: Path) -> None:
    """Everything that would otherwise fail late: values, checkpoints, the encoder, the output folders."""
    from vrm.config.train import validate
    from vrm.evaluation.evaluate import check_config

    for model in MODELS:
        validate(train_cfgs[model])
        check_checkpoints(train_cfgs[model])
        check_config(eval_cfgs[model])
    check_encoder(train_cfgs["vrm"])
    check_writable(out_dir, "--out")
    check_writable(export_dir.parent, "the export's parent folder")


# ---------------------------------------------------------------------------------------- the job


@dataclass
class DemoJob:
    """The four stages and what each left behind (for the summary, and for the message when stopped)."""

    out_dir: Path
    train_cfgs: dict[str, DictConfig]
    eval_cfgs: dict[str, DictConfig]
    export_dir: Path
    progress: JobProgress
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    train_seconds: dict[str, float] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    eval_files: dict[str, str] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    def run(self) -> None:
        for stage, step in zip(STAGES, (lambda: self.train("vrm"), lambda: self.train("bt"), self.evaluate,
                                        self.export)):
            print(self.progress.start_stage(), flush=True)
            step()
            print(self.progress.finish_stage(), flush=True)
            self.finished.append(stage)

    def train(self, model: str) -> None:
        from vrm.training.train import recorded_best_checkpoint, train

        cfg = self.train_cfgs[model]
        start = time.monotonic()
        self.metrics[model] = dict(train(cfg))
        self.train_seconds[model] = time.monotonic() - start
        best = recorded_best_checkpoint(cfg.paths.output_dir)
        if best is None:
            raise FileNotFoundError(f"{model} training in {cfg.paths.output_dir} saved no best checkpoint to evaluate")
        self.checkpoints[model] = best

    def evaluate(self) -> None:
        from vrm.evaluation.evaluate import evaluate
        from vrm.evaluation.metrics import ACCURACY
        from vrm.evaluation.report import EVAL_JSON, SPLITS

        for model in MODELS:
            cfg = self.eval_cfgs[model]
            with open_dict(cfg):
                cfg.model_path = self.checkpoints[model]
            results = evaluate(cfg)
            out = Path(cfg.paths.output_dir)
            self.eval_files[model] = str(out / EVAL_JSON)
            self.plots += sorted(str(p) for p in out.glob("*.png"))
            for split, key in (("test", TEST_ACC), ("shifted", SHIFTED_ACC)):
                if split in results[SPLITS]:
                    self.metrics[model][key] = results[SPLITS][split][ACCURACY]

    def export(self) -> None:
        from vrm.scoring.export import export_checkpoint

        export_checkpoint(self.checkpoints["vrm"], self.export_dir, self.metrics["vrm"])

    def record(self, status: str) -> dict[str, Any]:
        """Write summary.json (and summary.md when the table is complete); returns the summary."""
        summary = {"status": status, "finished_stages": self.finished, "out_dir": str(self.out_dir),
                   "results": self.metrics, "train_seconds": self.train_seconds, "checkpoints": self.checkpoints,
                   "eval_files": self.eval_files, "plots": self.plots,
                   "export_dir": str(self.export_dir) if STAGE_EXPORT in self.finished else None,
                   "elapsed_seconds": self.progress.elapsed()}
        (self.out_dir / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def final_report(self) -> str:
        table = summary_table(self.metrics, self.train_seconds)
        (self.out_dir / SUMMARY_MD).write_text(table + "\n")
        lines = ["", table, "", f"VRM export: {self.export_dir}",
                 "eval files: " + ", ".join(self.eval_files.values()), "plots:"]
        lines += [f"  {p}" for p in self.plots]
        lines += [f"summary: {self.out_dir / SUMMARY_MD}, {self.out_dir / SUMMARY_JSON}",
                  f"run folders, logs and checkpoints: {self.out_dir} "
                  f"(whole job {format_seconds(self.progress.elapsed())})"]
        return "\n".join(lines)

    def stopped_report(self, signum: int) -> str:
        stage = self.progress.current
        lines = [f"vrm-demo: stopped by {signal.Signals(signum).name} during stage {stage + 1}/{len(STAGES)} "
                 f"({STAGES[stage]}) after {format_seconds(self.progress.elapsed())}"]
        lines.append("finished: " + (", ".join(self.finished) if self.finished else "nothing"))
        for model, ckpt in self.checkpoints.items():
            lines.append(f"  {model} best checkpoint: {ckpt}")
        for model, path in self.eval_files.items():
            lines.append(f"  {model} eval: {path}")
        lines.append(f"files so far: {self.out_dir} (summary.json lists them)")
        return "\n".join(lines)


def run_demo(out_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Check, then run the four stages; on SIGTERM or SIGINT exit with 128 + its number after saying where it was."""
    train_cfgs, eval_cfgs, export_dir = compose_job(out_dir, overrides)
    check_job(train_cfgs, eval_cfgs, out_dir, export_dir)
    job = DemoJob(out_dir, train_cfgs, eval_cfgs, export_dir, JobProgress(stage_work(train_cfgs, eval_cfgs["vrm"])))
    previous = {signum: signal.signal(signum, raise_job_stopped) for signum in STOP_SIGNALS}
    try:
        job.run()
    except JobStopped as stop:
        job.record(f"stopped by {stop}")
        print(job.stopped_report(stop.signum), file=sys.stderr, flush=True)
        sys.exit(128 + stop.signum)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    summary = job.record("finished")
    print(job.final_report(), flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vrm-demo",
        description="Train a VRM and a Bradley-Terry baseline on the embedded synthetic benchmark with the "
                    "local MiniLM, evaluate both on the in-distribution and shifted test splits, export the "
                    "VRM and print a summary table. Extra arguments are Hydra overrides applied to both runs "
                    "(e.g. trainer.max_epochs=1 data.synthetic.num_train=400); data.* overrides apply to the "
                    "evaluation too, and eval.KEY=VALUE to the evaluation only (e.g. eval.best_of_n.enabled=false).")
    parser.add_argument("--out", default=None, help="output folder (default runs/demo/<timestamp>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for vrm-train")
    args = parser.parse_args(argv)
    out = Path(args.out or Path("runs") / "demo" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    # A composition error (an unknown key, a bad value) is a user's error too: the demo composes its own configs.
    call_reporting_errors(run_demo, out, args.overrides, extra=(ConfigCompositionException,))
