"""How long a training run took, from its stats.jsonl: wall time, steps, and the pace of the loop,
with the rows where another job shared the cores told apart (pictures/s under ``--slow`` times the
run's median), so that the time the same run takes on a quiet machine can be read off its own quiet
rows.

    python train_time.py ../runs/spec64/stats.jsonl [--slow 0.8] [--steps 6500]
"""

from __future__ import annotations

import argparse
import json
import statistics


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stats", help="a run folder's stats.jsonl")
    parser.add_argument("--slow", type=float, default=0.8, help="a row is slowed below this share of the median pace")
    parser.add_argument("--steps", type=int, default=None, help="steps to project the quiet pace to (default: the run's)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in open(args.stats) if line.strip()]
    if len(rows) < 2:
        parser.error(f"{args.stats} has fewer than two rows")
    median = statistics.median(r["img_per_s"] for r in rows)
    quiet_s = slow_s = 0.0
    quiet_steps = slow_steps = 0
    prev = {"step": 0, "time": 0.0}
    for r in rows:
        dt, ds = r["time"] - prev["time"], r["step"] - prev["step"]
        if r["img_per_s"] < args.slow * median:
            slow_s, slow_steps = slow_s + dt, slow_steps + ds
        else:
            quiet_s, quiet_steps = quiet_s + dt, quiet_steps + ds
        prev = r
    last = rows[-1]
    steps = args.steps or last["step"]
    pace = quiet_s / quiet_steps
    print(f"{last['step']} steps in {last['time'] / 60:.1f} min of training loop ({last['cpu_time'] / 60:.1f} CPU min); "
          f"median {median:.1f} pictures/s")
    print(f"quiet rows: {quiet_steps} steps in {quiet_s / 60:.1f} min, {pace:.3f} s per step; "
          f"slowed rows (under {args.slow:.0%} of the median pace): {slow_steps} steps in {slow_s / 60:.1f} min")
    print(f"{steps} steps at the quiet pace: {steps * pace / 60:.1f} min of training loop")


if __name__ == "__main__":
    main()
