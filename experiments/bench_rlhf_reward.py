"""The share of a GRPO step spent in the reward call: VRM export vs BT export vs the white-box proxy (vs the gold).

One process, one after the other on the same machine state: ``vrm-rlhf`` runs ``--steps`` steps against each reward
(the synthetic SFT policy, the default GRPO batch: 4 prompts x 8 completions), and the seconds inside the reward
call (``TimedReward``: length-sorted, batched) are divided by the seconds of the training steps. Exports come from
``experiments/rlhf/run.py``'s reward models (``runs/rlhf/exports/<model>_seed0``). Prints a table and writes
``experiments/results/bench_rlhf_reward.{json,md}``.

    OMP_NUM_THREADS=1 python experiments/bench_rlhf_reward.py --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.cells import write_json_atomically  # noqa: E402

EXPORTS = ROOT / "runs" / "rlhf" / "exports"
POLICIES = ROOT / "runs" / "rlhf" / "policies"


def rewards(exports: Path) -> dict[str, list[str]]:
    return {"gold": ["reward=gold"], "proxy": ["reward=proxy"],
            "bt_export": ["reward=export", f"reward.path={exports / 'bt_seed0'}"],
            "vrm_export": ["reward=export", f"reward.path={exports / 'vrm_seed0'}"],
            "vrm_conservative": ["reward=conservative", f"reward.path={exports / 'vrm_seed0'}"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--exports", type=Path, default=EXPORTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from vrm.config.compose import compose_config
    from vrm.rlhf.run import run_rlhf

    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    rows = {}
    for name, overrides in rewards(args.exports).items():
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose_config([*overrides, f"grpo.steps={args.steps}", f"eval.every={args.steps}",
                                  f"cache_dir={POLICIES}", "progress=false", "device=cpu"], tmp, config_name="rlhf")
            run_rlhf(cfg, tmp)
            final = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()][-1]
        rows[name] = {"reward_seconds": final["reward_seconds"], "step_seconds": final["step_seconds"],
                      "share": final["reward_seconds"] / final["step_seconds"],
                      "reward_ms_per_completion": 1000 * final["reward_seconds"] / (args.steps * 32)}
        print(f"{name}: {rows[name]}", flush=True)
    base = rows["bt_export"]["reward_seconds"]
    lines = ["| reward | share of step time in the reward call | reward ms per completion | reward time vs BT |",
             "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['share']:.1%} | {r['reward_ms_per_completion']:.1f} | "
                     f"{r['reward_seconds'] / base:.2f}x |")
    given = " ".join(argv if argv is not None else sys.argv[1:])
    command = f"OMP_NUM_THREADS={threads} python experiments/bench_rlhf_reward.py {given}".strip()
    out = ROOT / "experiments" / "results"
    write_json_atomically(out / "bench_rlhf_reward.json", {"command": command, "steps": args.steps,
                                                            "threads": threads, "rewards": rows})
    (out / "bench_rlhf_reward.md").write_text(f"Command: `{command}` ({args.steps} GRPO steps of 32 completions "
                                              "each per reward, one process)\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
