"""Training performance benchmark: VRM vs BT step time, our BT vs TRL's RewardTrainer, the default run's cost.

One command measures, on the embedded MiniLM (bidirectional) and on a tiny decoder-only encoder
(``encoder=tiny_llama``), and writes ``experiments/results/bench_training.{json,md}``
(``--quick``: ``bench_training_quick.{json,md}``):

1. **VRM / BT step time**, same encoder, batch and length: both modules live in one process and take
   interleaved optimizer steps (zero_grad, loss, backward, clip, fused AdamW step) on the very same batch;
   the ratio is of the medians (both as the encoder config says, e.g. MiniLM's ``length_chunks: 3``).
   Goal: at most 1.05. MiniLM is measured with VRM's default separate prompt
   pass and with ``model.prompt_repr=prefix`` (one pass); the VRM - BT difference in ms is the heads' cost
   plus the prompt pass, which a tiny encoder's step makes look large.
2. **Our BT / TRL RewardTrainer step time** on the same encoder, data, batch size, max length, optimizer
   (torch's fused AdamW: transformers' default since torch 2.8 and ours, ``optim.fused=null``; lr 5e-5,
   clip 1.0), no gradient checkpointing, fp32, CPU. Each side trains through its
   own trainer (Lightning; transformers Trainer) and a callback times each optimizer step from the
   moment its batch is ready to the end of the optimizer step (Lightning ``on_train_batch_start`` ->
   ``on_train_batch_end``; transformers ``on_step_begin`` -> ``on_step_end``), so data loading is
   excluded on both sides and the framework's own per-step work is included. TRL's model is the
   architecture's ``...ForSequenceClassification`` (BERT: CLS pooler + linear; Llama: last token), ours
   the same encoder with our pooling and linear BT head, run as the encoder config says: MiniLM's
   ``length_chunks: 3`` cuts each batch into up to 3 length-sorted passes (fewer padding tokens), where TRL
   pads the batch to its longest row in one pass; the tiny Llama runs one pass on both sides. Rounds alternate
   the two sides. Goal: <= 1.0.
3. **Scoring throughput**: ``RewardScorer`` over a raw transformers forward of the same export, BT and VRM heads
   on MiniLM, with ``experiments/bench_scoring.py``'s measurement (its ``bench_head``; that script alone runs
   more pairs and rounds). Goal there: at least 0.95.
4. **The default run** (``vrm-train`` with no overrides: VRM, MiniLM, synthetic data, 2 epochs, test at
   the end) in a fresh process: wall time (goal: under 10 minutes on 2 cores), peak resident memory and
   the resident memory at the end of every epoch (goal: no growth from epoch to epoch).

Never a timed test: timings depend on the machine and its load; the JSON records both.

    python experiments/bench_training.py            # full (about 20 min on 2 cores)
    python experiments/bench_training.py --quick    # a few minutes: small default run, fewer steps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout's vrm, whichever copy is pip-installed
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_scoring

import lightning as L  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
#: Encoders compared: the embedded default (bidirectional) and a tiny decoder-only one.
ENCODERS = ("minilm", "tiny_llama")
#: VRM / BT cases: (encoder, VRM overrides). MiniLM twice: the default separate prompt pass, and prompt_repr=prefix
#: (h(x) from the same pass under a prefix attention mask).
VRM_CASES = (("minilm", ()), ("minilm", ("model.prompt_repr=prefix",)), ("tiny_llama", ()))
#: Scoring throughput (bench_scoring.bench_head): pairs and timed rounds, full and --quick.
SCORING = {"full": (96, 3), "quick": (24, 1)}
#: Overrides of the --quick default run (the full run uses none: the default run as shipped).
QUICK_DEFAULT_RUN = ["data.synthetic.num_train=128", "data.synthetic.num_validation=32",
                     "data.synthetic.num_test=32", "data.synthetic.num_shifted=32", "trainer.max_epochs=3"]
GOALS = {"vrm_over_bt": 1.05, "ours_over_trl": 1.0, "scorer_over_raw": 0.95, "default_run_wall_s": 600.0}


class EpochMemory(L.Callback):
    """Appends the process's resident memory at the end of every training epoch to a JSON-lines file.

    The default run adds it by name: ``+callbacks.epoch_memory._target_=bench_training.EpochMemory``.
    """

    def __init__(self, out: str):
        self.out = Path(out)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        rss = psutil.Process().memory_info().rss
        with self.out.open("a") as f:
            f.write(json.dumps({"epoch": trainer.current_epoch, "rss_mib": rss / 2**20}) + "\n")


class LightningStepTimer(L.Callback):
    def __init__(self):
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def median_ms(seconds: list[float], warmup: int) -> float:
    return 1000 * statistics.median(seconds[warmup:])


# -- 1. VRM vs BT ---------------------------------------------------------------------------------
def build(model_type: str, encoder: str, workdir: Path, overrides: list[str] = ()):
    """A RewardModule as ``vrm-train`` builds it (vrm.training.build), and its data module (setup done)."""
    from vrm.config.compose import compose_config
    from vrm.training.build import build as build_run

    cfg = compose_config([f"model={model_type}", f"encoder={encoder}", "seed=0", *overrides], workdir)
    torch.manual_seed(0)
    run = build_run(cfg, workdir)
    return cfg, run.datamodule, run.module


def optimizer_step(module, optimizer, batch) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    module.pair_forward(batch).loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    optimizer.step()
    return time.perf_counter() - start


def vrm_over_bt(encoder: str, vrm_overrides: tuple[str, ...], steps: int, warmup: int,
                workdir: Path) -> dict[str, Any]:
    _, dm, vrm = build("vrm", encoder, workdir / "vrm", vrm_overrides)
    cfg, _, bt = build("bt", encoder, workdir / "bt")
    batch = next(iter(dm.train_dataloader()))
    modules = {"vrm": vrm.train(), "bt": bt.train()}
    # Fused, as RewardModule.configure_optimizers picks on CPU (optim.fused=null).
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=5e-5, weight_decay=0.01, fused=True)
                  for k, m in modules.items()}
    seconds: dict[str, list[float]] = {"vrm": [], "bt": []}
    for i in range(steps + warmup):
        for name in ("vrm", "bt") if i % 2 == 0 else ("bt", "vrm"):  # alternate who goes first
            seconds[name].append(optimizer_step(modules[name], optimizers[name], batch))
    vrm_ms, bt_ms = median_ms(seconds["vrm"], warmup), median_ms(seconds["bt"], warmup)
    n = batch["input_ids"].shape[0] // 2
    full_tokens = int(batch["attention_mask"].sum())
    prompt_tokens = int(batch["prompt_lengths"][:n].sum())
    return {"encoder": encoder, "vrm_overrides": list(vrm_overrides), "prompt_repr": vrm.net.config.prompt_repr,
            "batch_pairs": n,
            "padded_length": int(batch["input_ids"].shape[1]), "steps": steps,
            "vrm_step_ms": vrm_ms, "bt_step_ms": bt_ms, "ratio": vrm_ms / bt_ms, "vrm_extra_ms": vrm_ms - bt_ms,
            # A separate prompt pass encodes these extra tokens (on top of the 2n full sequences).
            "extra_prompt_tokens_fraction": prompt_tokens / full_tokens
            if vrm.net.config.prompt_repr == "separate" else 0.0}


# -- 2. our BT vs TRL ------------------------------------------------------------------------------
def ours_bt_steps(encoder: str, steps: int, workdir: Path, overrides: list[str] = (), accelerator: str = "cpu",
                  precision: str = "32-true") -> list[float]:
    cfg, dm, module = build("bt", encoder, workdir, ["optim.lr=5e-5", "optim.head_lr=5e-5",
                                                     "optim.warmup_fraction=0.0", *overrides])
    timer = LightningStepTimer()
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=steps, logger=False,
                        enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, gradient_clip_val=1.0, callbacks=[timer],
                        default_root_dir=str(workdir))
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    return timer.seconds


def trl_model_and_tokenizer(cfg):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from vrm.models.encoder import load_tokenizer, resolve_path

    tokenizer = load_tokenizer(cfg.encoder.tokenizer or cfg.encoder.path)
    if tokenizer.eos_token is None:  # TRL appends eos; BERT-like tokenizers end sequences with [SEP]
        tokenizer.eos_token = tokenizer.sep_token
    torch.manual_seed(0)
    if cfg.encoder.pretrained:
        model = AutoModelForSequenceClassification.from_pretrained(resolve_path(cfg.encoder.path), num_labels=1)
    else:
        arch = dict(cfg.encoder.architecture)
        config = AutoConfig.for_model(arch.pop("model_type"), num_labels=1, pad_token_id=tokenizer.pad_token_id,
                                      **arch)
        model = AutoModelForSequenceClassification.from_config(config)
    return model, tokenizer


def trl_steps(encoder: str, steps: int, workdir: Path, overrides: list[str] = (), cpu: bool = True,
              bf16: bool = False) -> list[float]:
    import datasets
    from transformers import TrainerCallback
    from trl import RewardConfig, RewardTrainer

    cfg, dm, _ = build("bt", encoder, workdir, overrides)
    pairs = dm.data.splits["train"]
    # Plain-text prompts (the tiny test tokenizers have no chat template): the messages' text, one per line.
    prompts = [p if isinstance(p, str) else "\n".join(m["content"] for m in p) + "\n" for p in pairs["prompt"]]
    train_set = datasets.Dataset.from_dict({"prompt": prompts, "chosen": pairs["chosen"],
                                            "rejected": pairs["rejected"]})
    model, tokenizer = trl_model_and_tokenizer(cfg)
    seconds: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            seconds.append(time.perf_counter() - self.start)

    args = RewardConfig(output_dir=str(workdir / "trl"), per_device_train_batch_size=cfg.data.batch_size,
                        max_steps=steps, learning_rate=5e-5, weight_decay=0.01, warmup_steps=0, max_grad_norm=1.0,
                        gradient_checkpointing=False, bf16=bf16, use_cpu=cpu,
                        max_length=cfg.data.max_length, disable_dropout=False, logging_steps=10**6,
                        save_strategy="no", report_to="none", seed=0, dataloader_num_workers=0)
    trainer = RewardTrainer(model=model, args=args, train_dataset=train_set, processing_class=tokenizer,
                            callbacks=[StepTimer()])
    trainer.train()
    return seconds


def ours_over_trl(encoder: str, steps: int, warmup: int, rounds: int, workdir: Path) -> dict[str, Any]:
    ours: list[float] = []
    trl: list[float] = []
    for r in range(rounds):
        ours += ours_bt_steps(encoder, steps + warmup, workdir / f"ours{r}")[warmup:]
        trl += trl_steps(encoder, steps + warmup, workdir / f"trl{r}")[warmup:]
    ours_ms, trl_ms = median_ms(ours, 0), median_ms(trl, 0)
    return {"encoder": encoder, "steps": len(ours), "ours_bt_step_ms": ours_ms, "trl_step_ms": trl_ms,
            "ratio": ours_ms / trl_ms}


# -- 3. scoring throughput ------------------------------------------------------------------------
def scoring_throughput(quick: bool, threads: int | None) -> list[dict[str, Any]]:
    """RewardScorer vs a raw transformers forward, per head, as ``experiments/bench_scoring.py`` measures it."""
    import bench_scoring

    num_pairs, rounds = SCORING["quick" if quick else "full"]
    args = argparse.Namespace(encoder="minilm", num_pairs=num_pairs, rounds=rounds, batch_size=32, max_length=512,
                              threads=threads or torch.get_num_threads(), seed=0)
    prompts, responses = bench_scoring.make_pairs(num_pairs, args.seed)
    rows = []
    for head in bench_scoring.HEADS:
        r = bench_scoring.bench_head(head, args, prompts, responses)
        rows.append({"encoder": args.encoder, "head": head, "pairs": num_pairs, "rounds": rounds,
                     "scorer_pairs_per_s": r["pairs_per_second"]["scorer"], "raw_pairs_per_s": r["pairs_per_second"]["raw"],
                     "raw_sorted_pairs_per_s": r["pairs_per_second"]["raw_sorted"], "ratio": r["ratio"],
                     "ratio_vs_sorted": r["ratio_vs_sorted"], "max_abs_reward_difference": r["max_abs_reward_difference"]})
    return rows


# -- 4. the default run ---------------------------------------------------------------------------
def default_run(overrides: list[str], workdir: Path, threads: int | None) -> dict[str, Any]:
    memory_log = workdir / "epoch_memory.jsonl"
    script = Path(sys.executable).parent / "vrm-train"
    entry = [str(script)] if script.exists() else ["-c", "from vrm.cli.train import main; main()"]
    command = [sys.executable, *entry, *overrides, f"hydra.run.dir={workdir / 'run'}",
               "+callbacks.epoch_memory._target_=bench_training.EpochMemory",
               f"+callbacks.epoch_memory.out={memory_log}"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(Path(__file__).parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"default run failed ({shlex.join(command)}):\n{done.stderr[-3000:]}")
    epochs = [json.loads(line) for line in memory_log.read_text().splitlines()]
    rss = [e["rss_mib"] for e in epochs]
    # ru_maxrss of waited-for children, in KiB on Linux: this is the only child process measured so far.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"command": "vrm-train " + shlex.join(overrides), "wall_s": wall, "peak_rss_mib": peak,
            "epoch_end_rss_mib": rss, "growth_after_first_epoch_mib": (rss[-1] - rss[0]) if len(rss) > 1 else None}


# -- report ---------------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Training benchmark ({'quick' if result['quick'] else 'full'})", "",
             f"Command: `{result['command']}`  ", f"Machine: {result['machine']}", "",
             "| encoder | VRM prompt_repr | VRM step | BT step | VRM - BT | VRM / BT (goal <= 1.05) | "
             "extra prompt tokens |",
             "|---|---|---|---|---|---|---|"]
    for r in result["vrm_over_bt"]:
        lines.append(f"| {r['encoder']} | {r['prompt_repr']} | {r['vrm_step_ms']:.1f} ms | {r['bt_step_ms']:.1f} ms | "
                     f"{r['vrm_extra_ms']:+.1f} ms | {r['ratio']:.2f} | {r['extra_prompt_tokens_fraction']:.0%} |")
    lines += ["", "| encoder | our BT step | TRL RewardTrainer step | ours / TRL (goal <= 1.0) |", "|---|---|---|---|"]
    for r in result["ours_over_trl"]:
        lines.append(f"| {r['encoder']} | {r['ours_bt_step_ms']:.1f} ms | {r['trl_step_ms']:.1f} ms | {r['ratio']:.2f} |")
    lines += ["", "| encoder | head | scorer pairs/s | raw forward pairs/s | scorer / raw (goal >= 0.95) | "
              "raw, length-sorted, pairs/s | scorer / raw sorted | max reward difference |",
              "|---|---|---|---|---|---|---|---|"]
    for r in result["scoring"]:
        lines.append(f"| {r['encoder']} | {r['head']} | {r['scorer_pairs_per_s']:.1f} | {r['raw_pairs_per_s']:.1f} | "
                     f"{r['ratio']:.2f} | {r['raw_sorted_pairs_per_s']:.1f} | {r['ratio_vs_sorted']:.2f} | "
                     f"{r['max_abs_reward_difference']:.1e} |")
    d = result["default_run"]
    rss = ", ".join(f"{x:.0f}" for x in d["epoch_end_rss_mib"])
    lines += ["", "| default run | wall time (goal < 600 s) | peak RSS | RSS at each epoch end | growth |",
              "|---|---|---|---|---|",
              f"| `{d['command']}` | {d['wall_s']:.0f} s | {d['peak_rss_mib']:.0f} MiB | {rss} MiB | "
              f"{d['growth_after_first_epoch_mib']:+.0f} MiB |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes: small default run, fewer steps")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own, one per core); 1 on a machine loaded by others, "
                             "where every small op waits for a second, descheduled thread")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    steps, warmup, rounds = (8, 2, 1) if args.quick else (40, 5, 2)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        work = Path(tmp)
        (work / "default").mkdir()
        default = default_run(QUICK_DEFAULT_RUN if args.quick else [], work / "default", args.threads)
        ratios = [vrm_over_bt(e, o, steps, warmup, work / f"ratio_{i}_{e}") for i, (e, o) in enumerate(VRM_CASES)]
        versus_trl = [ours_over_trl(e, steps, warmup, rounds, work / f"trl_{e}") for e in ENCODERS]
        scoring = scoring_throughput(args.quick, args.threads)
    import trl

    result = {
        "command": shlex.join(["python", "experiments/bench_training.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "goals": GOALS,
        "machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores usable, "
                   f"torch {torch.__version__} ({torch.get_num_threads()} threads), trl {trl.__version__}; "
                   f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after",
        "vrm_over_bt": ratios, "ours_over_trl": versus_trl, "scoring": scoring, "default_run": default,
    }
    name = "bench_training_quick" if args.quick else "bench_training"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / f"{name}.md").write_text(table)
    print(table)
    return result


if __name__ == "__main__":
    main()
