"""The GPU check: training and scoring costs of a real-shaped encoder in bf16-mixed, in one markdown table.

Run it through ``experiments/gpu_check.sh`` (which first installs the carried wheels, see
``experiments/gpu_wheels.py``) on a machine with a CUDA GPU and no network; it needs no download: the encoder is
randomly initialised with Qwen2.5-0.5B's shape (``QWEN2_5_0_5B``; MiniLM's tokenizer, carried as files), and the
data are HH-RLHF-length pairs made on the spot (``hh_lengths.py``). Every measurement is one section; a section
that fails is a row saying why, and the others still run. It measures:

1. **VRM / BT step time** (the same batch, interleaved optimizer steps under bf16 autocast; the encoder as
   ``conf/encoder/qwen2_5_0_5b.yaml`` trains it: LoRA and gradient checkpointing), the BT step with
   ``encoder.length_chunks=2`` over 1 (does a second, trimmed pass pay on a GPU?), and the peak GPU memory;
2. **our BT / TRL RewardTrainer step time** (bench_training's two timed trainers, both bf16 on the GPU, full
   fine-tuning, no gradient checkpointing, the same data, batch, max length and optimizer);
3. **RewardScorer / raw transformers forward** in pairs/s (bench_scoring's ``bench_head``, bfloat16 weights);
4. **the batching server's throughput**: ``experiments/bench_serving.py --quick --device cuda --markdown PATH``
   when that script exists (its table is appended), else a row saying it is absent.

``--cpu --tiny`` runs the same code on the CPU with a tiny Qwen2 shape (a check that the script works, in a few
minutes; no figure from it means anything). The table goes to ``--out`` (default
``experiments/results/gpu_check.md``), written atomically, and to stdout.

    bash experiments/gpu_check.sh                     # on the GPU machine
    bash experiments/gpu_check.sh --cpu --tiny        # the same code paths on a CPU, tiny shape
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # this checkout's vrm
sys.path.insert(0, str(HERE))  # bench_training, bench_scoring, hh_lengths

import torch  # noqa: E402

#: Qwen2.5-0.5B's config (its config.json on the hub: hidden 896, 24 layers, 14 heads, 2 key-value heads,
#: intermediate 4864, vocabulary 151,936), randomly initialised: no weights needed.
QWEN2_5_0_5B = {"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "num_hidden_layers": 24,
                "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864,
                "max_position_embeddings": 32768, "rope_theta": 1000000.0, "tie_word_embeddings": True}
#: The --tiny shape: conf/encoder/tiny_qwen2.yaml's.
TINY = {"model_type": "qwen2", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512}
#: Where gpu_wheels.py puts MiniLM's tokenizer files (no package needed to load them).
TOKENIZER = HERE / "gpu_wheels" / "tokenizer"
RESULTS = ROOT / "experiments" / "results"


def encoder_overrides(shape: dict[str, Any], tokenizer: Path, full: bool) -> list[str]:
    """``encoder=tiny_qwen2`` (random init, LoRA, gradient checkpointing) with ``shape``; ``full``: full fine-tuning
    without checkpointing (as TRL's side trains)."""
    out = ["encoder=tiny_qwen2", "encoder.name=qwen2_5_0_5b_shape", f"encoder.tokenizer={tokenizer}"]
    out += [f"++encoder.architecture.{k}={v}" for k, v in shape.items()]
    if full:
        out += ["encoder.train_mode=full", "encoder.gradient_checkpointing=false"]
    return out


def data_overrides(train_file: Path, batch_size: int, max_length: int) -> list[str]:
    return ["data=jsonl", f"data.train={train_file}", "data.validation_fraction=0", "data.test_fraction=0",
            f"data.batch_size={batch_size}", f"data.max_length={max_length}", "logger=none"]


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def timed_step(module, optimizer, batch, device: str) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        loss = module.pair_forward(batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def vrm_over_bt(args, overrides: list[str], work: Path) -> list[tuple[str, str]]:
    """Section 1: VRM, BT, and BT with two length-sorted encoder passes, on the same batch, interleaved; peak memory
    of each one's first step."""
    import bench_training

    cases = {"vrm": ("vrm", []), "bt": ("bt", []), "bt_chunks2": ("bt", ["encoder.length_chunks=2"])}
    modules, seconds, peaks, batch = {}, {}, {}, None
    for name, (head, extra) in cases.items():
        _, dm, module = bench_training.build(head, "tiny_qwen2", work / name, [*overrides, *extra])
        if batch is None:
            batch = {k: v.to(args.device) for k, v in next(iter(dm.train_dataloader())).items()}
        modules[name] = module.to(args.device).train()
        seconds[name] = []
    optimizers = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=5e-5,
                                       fused=args.device == "cuda") for k, m in modules.items()}
    names = list(modules)
    for i in range(args.steps + args.warmup):
        for name in names[i % len(names):] + names[:i % len(names)]:  # rotate who goes first
            if i == 0:
                reset_peak(args.device)
            seconds[name].append(timed_step(modules[name], optimizers[name], batch, args.device))
            if i == 0:
                peaks[name] = peak_gib(args.device)
    ms = {h: 1000 * statistics.median(s[args.warmup:]) for h, s in seconds.items()}
    mask = batch["attention_mask"]
    shape = (f"{mask.shape[0] // 2} pairs x {mask.shape[1]} tokens, {float(mask.float().mean()):.2f} of them real; "
             "the grouped order's first batch")
    rows = [("VRM step / BT step (LoRA, gradient checkpointing, as qwen2_5_0_5b.yaml)",
             f"{ms['vrm'] / ms['bt']:.2f} ({ms['vrm']:.1f} vs {ms['bt']:.1f} ms; {shape}; goal <= 1.05)"),
            ("BT step, encoder.length_chunks=2 / 1 (two length-sorted passes vs one padded pass)",
             f"{ms['bt_chunks2'] / ms['bt']:.2f} ({ms['bt_chunks2']:.1f} vs {ms['bt']:.1f} ms)")]
    for name in ("vrm", "bt"):
        if peaks.get(name) is not None:
            rows.append((f"peak GPU memory, {name.upper()} step (first step, weights + optimizer + activations)",
                         f"{peaks[name]:.2f} GiB"))
    return rows


def ours_over_trl(args, overrides: list[str], work: Path) -> list[tuple[str, str]]:
    """Section 2: our BT (Lightning, bf16-mixed) vs TRL's RewardTrainer (bf16), full fine-tuning."""
    import bench_training

    accelerator = "gpu" if args.device == "cuda" else "cpu"
    reset_peak(args.device)
    ours = bench_training.ours_bt_steps("tiny_qwen2", args.steps + args.warmup, work / "ours", overrides,
                                        accelerator=accelerator, precision="bf16-mixed")[args.warmup:]
    ours_peak = peak_gib(args.device)
    reset_peak(args.device)
    trl = bench_training.trl_steps("tiny_qwen2", args.steps + args.warmup, work / "trl", overrides,
                                   cpu=args.device == "cpu", bf16=True)[args.warmup:]
    trl_peak = peak_gib(args.device)
    ours_ms, trl_ms = 1000 * statistics.median(ours), 1000 * statistics.median(trl)
    rows = [("our BT step / TRL RewardTrainer step (full fine-tuning, bf16)",
             f"{ours_ms / trl_ms:.2f} ({ours_ms:.1f} vs {trl_ms:.1f} ms; goal <= 1.0)")]
    if ours_peak is not None:
        rows.append(("peak GPU memory, our BT / TRL (full fine-tuning)", f"{ours_peak:.2f} / {trl_peak:.2f} GiB"))
    return rows


def scorer_over_raw(args, overrides: list[str], work: Path) -> list[tuple[str, str]]:
    """Section 3: RewardScorer vs a raw transformers forward of the same export, bfloat16 weights."""
    import bench_scoring

    ns = argparse.Namespace(encoder="tiny_qwen2", batch_size=32, max_length=args.max_length, rounds=args.rounds,
                            seed=0, device=args.device, dtype="bfloat16", overrides=overrides)
    prompts, responses = bench_scoring.make_pairs(args.score_pairs, 0)
    rows = []
    for head in bench_scoring.HEADS:
        r = bench_scoring.bench_head(head, ns, prompts, responses)
        pps = r["pairs_per_second"]
        rows.append((f"RewardScorer / raw forward, {head.upper()} export (pairs/s)",
                     f"{r['ratio']:.2f} ({pps['scorer']:.0f} vs {pps['raw']:.0f}; max reward difference "
                     f"{r['max_abs_reward_difference']:.1e}; goal >= 0.95)"))
    return rows


def serving(args, work: Path) -> tuple[list[tuple[str, str]], str]:
    """Section 4: the batching server's benchmark, when experiments/bench_serving.py exists."""
    script = HERE / "bench_serving.py"
    if not script.is_file():
        return [("batching server throughput", "not measured: experiments/bench_serving.py is not in this "
                 "checkout")], ""
    table = work / "bench_serving.md"
    command = [sys.executable, str(script), "--quick", "--device", args.device, "--markdown", str(table)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.serving_timeout)
    if done.returncode != 0:
        return [("batching server throughput", f"failed (exit {done.returncode}): "
                 f"{(done.stderr.strip().splitlines() or ['no output'])[-1][:300]}")], ""
    return [("batching server throughput", f"measured: `{shlex.join(command[1:])}`, table below")], \
        table.read_text() if table.is_file() else ""


def run_section(name: str, fn: Callable[[], list[tuple[str, str]]]) -> tuple[list[tuple[str, str]], float]:
    start = time.perf_counter()
    try:
        rows = fn()
    except Exception as err:  # one section failing must not lose the others' figures
        traceback.print_exc()
        rows = [(name, f"failed: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}")]
    return rows, time.perf_counter() - start


def machine(device: str) -> str:
    import transformers

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.machine()})"
    return (f"{gpu}, torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
            f"Python {platform.python_version()}")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (a check of the script, not a figure)")
    parser.add_argument("--tiny", action="store_true", help="a tiny Qwen2 shape instead of Qwen2.5-0.5B's")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_check.md")
    parser.add_argument("--tokenizer", type=Path, default=TOKENIZER, help="tokenizer folder (gpu_wheels.py makes it)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20; 3 with --tiny)")
    parser.add_argument("--serving-timeout", type=int, default=240, help="seconds for bench_serving.py")
    parser.add_argument("--skip-serving", action="store_true", help="leave bench_serving.py out (the test does)")
    args = parser.parse_args(argv)
    args.device = "cpu" if args.cpu else "cuda"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: pass --cpu for a CPU check")
    if not (args.tokenizer / "tokenizer_config.json").is_file():
        parser.error(f"no tokenizer in {args.tokenizer}: run python experiments/gpu_wheels.py make first")
    args.steps = args.steps or (3 if args.tiny else 20)
    args.warmup, args.rounds = (1, 1) if args.tiny else (3, 3)
    # max_length 1024 keeps every HH-length pair whole: TRL drops (not truncates) a longer pair, which would
    # hand its side shorter data. The tiny shape has 512 positions.
    args.pairs, args.batch_size, args.max_length, args.score_pairs = ((64, 4, 256, 32) if args.tiny
                                                                      else (512, 16, 1024, 512))
    shape = TINY if args.tiny else QWEN2_5_0_5B
    from hh_lengths import write_hh_length_pairs

    started = time.perf_counter()
    rows: list[tuple[str, str]] = []
    timings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        os.environ.setdefault("VRM_CACHE", str(work / "cache"))
        train_file = write_hh_length_pairs(work / "hh.jsonl", args.pairs, seed=0)
        data = data_overrides(train_file, args.batch_size, args.max_length)
        lora = encoder_overrides(shape, args.tokenizer, full=False) + data
        full = encoder_overrides(shape, args.tokenizer, full=True) + data
        serving_table = ""
        sections = [("VRM / BT step", lambda: vrm_over_bt(args, lora, work / "s1")),
                    ("our BT / TRL", lambda: ours_over_trl(args, full, work / "s2")),
                    ("scorer / raw forward", lambda: scorer_over_raw(args, full, work / "s3"))]
        for name, fn in sections:
            section_rows, seconds = run_section(name, fn)
            rows += section_rows
            timings.append(f"{name} {seconds:.0f} s")
            print(f"[gpu_check] {name}: {seconds:.0f} s", flush=True)

        def serve() -> list[tuple[str, str]]:
            nonlocal serving_table
            out, serving_table = serving(args, work)
            return out

        if args.skip_serving:
            rows.append(("batching server throughput", "not measured: --skip-serving"))
        else:
            section_rows, seconds = run_section("batching server throughput", serve)
            rows += section_rows
            timings.append(f"serving {seconds:.0f} s")
    shape_name = "tiny Qwen2 (hidden 32, 2 layers)" if args.tiny else "Qwen2.5-0.5B's shape, random init"
    lines = [f"# GPU check ({'CPU, tiny: a check of the script only' if args.cpu else 'GPU'})", "",
             f"Command: `{shlex.join(['python', 'experiments/gpu_check.py', *(argv if argv is not None else sys.argv[1:])])}`"
             "  ", f"Machine: {machine(args.device)}  ",
             f"Encoder: {shape_name}; data: {args.pairs} HH-RLHF-length pairs (experiments/hh_lengths.py), "
             f"batches of {args.batch_size} pairs, max_length {args.max_length}, data.group_by_length as configured; "
             f"bf16 autocast / bf16-mixed; {args.steps} timed steps after {args.warmup} warm-up.  ",
             f"Wall time: {time.perf_counter() - started:.0f} s ({', '.join(timings)}).", "",
             "| measure | result |", "|---|---|"]
    lines += [f"| {name} | {value.replace('|', '/')} |" for name, value in rows]
    text = "\n".join(lines) + "\n" + (f"\n## bench_serving.py\n\n{serving_table}" if serving_table else "")
    write_atomic(args.out, text)
    print(text)
    return text


if __name__ == "__main__":
    main()
