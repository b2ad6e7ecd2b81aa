"""Training throughput (images/s) of the text GAN in one process and in several on this machine
(`pixelchat train --nproc N`: DistributedDataParallel over gloo, the cores split among the
processes). Same global batch, model and data for every configuration; the rate comes from
stats.jsonl and leaves out the warm-up steps. Prints a table and writes the figures as JSON;
asserts nothing.

A configuration is PROCESSES or PROCESSES:THREADS (torch threads per process; default: the cores
split among the processes). The load average is printed with each figure: other jobs on the same
cores lower it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["--ngf", "12", "--ndf", "8"]  # the shipped model's widths


def measure(config: str, options: list[str], batch: int, warmup: int) -> dict:
    processes, _, threads = config.partition(":")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "pixelchat.cli", "train", *options, "--out", str(out), "--nproc", processes]
        if threads:
            command += ["--threads", threads]
        load, start = os.getloadavg()[0], time.time()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.time() - start
        rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    first, last = rows[warmup - 1], rows[-1]  # "time" is the loop's clock after each step
    rate = batch * (last["step"] - first["step"]) / (last["time"] - first["time"])
    return {"config": config, "processes": int(processes), "threads": int(threads) if threads else None,
            "img_per_s": round(rate, 1), "steps_timed": last["step"] - first["step"],
            "wall_s": round(wall, 1), "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["1", "1:1", "2"], help="PROCESSES[:THREADS] ...")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the rate")
    parser.add_argument("--batch", type=int, default=32, help="the global batch, split among the processes")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="measure each count this many times, alternating")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "ddp-throughput.json"))
    args = parser.parse_args()
    options = ["--data", "scenes", "--scenes", "256", "--captions-per-image", "1", "--size", str(args.size), *SHIPPED,
               "--batch-size", str(args.batch), "--steps", str(args.steps), "--log-every", "1",
               "--checkpoint-every", str(10**9), "--sample-every", str(10**9)]
    print(f"machine: {machine()}")
    print(f"text GAN (ngf 12, ndf 8), {args.size} px, global batch {args.batch}, {args.steps} steps, "
          f"first {args.warmup} left out")
    results = []
    for _ in range(args.repeats):
        for config in args.configs:
            results.append(measure(config, options, args.batch, args.warmup))
            r = results[-1]
            print(f"{config:>6s}  {r['img_per_s']:7.1f} img/s   (run {r['wall_s']} s with start-up; "
                  f"load average {r['load_before']} → {r['load_after']})", flush=True)
    best = {c: max(r["img_per_s"] for r in results if r["config"] == c) for c in args.configs}
    print(f"\nprocesses[:threads]  img/s (best of {args.repeats})  vs {args.configs[0]}")
    for config, rate in best.items():
        print(f"{config:>19s}  {rate:18.1f}  {rate / best[args.configs[0]]:5.2f}×")
    Path(args.json).write_text(json.dumps({"machine": machine(), "command": " ".join(["python", *sys.argv]),
                                           "options": options, "results": results, "best": best}, indent=1) + "\n")
    print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
