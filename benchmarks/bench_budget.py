"""Side by side on the same data and the same compute: the seed's DCGAN and our text GAN.

    python benchmarks/bench_budget.py train --minutes 50      # both runs at once, one thread each
    python benchmarks/bench_budget.py eval                    # every snapshot on the suite → table + curves

Each run trains for ``--minutes`` of its own process CPU time on one thread, so two runs sharing
the machine get equal compute (on an idle core that is also wall-clock minutes). A generator
snapshot is kept every ``--snapshot-minutes``; `eval` scores them all with `pixelchat evaluate`'s
function on benchmarks/prompts/scenes-eval.jsonl and writes benchmarks/budget-curves.png (and its
figures, budget-curves.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _machine import machine

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "benchmarks" / "prompts" / "scenes-eval.jsonl"
# The same data for both: 12000 scenes, two training captions each.
COMMON = ["--data", "scenes", "--scenes", "12000", "--captions-per-image", "2", "--batch-size", "32", "--clock", "cpu",
          "--threads", "1", "--checkpoint-every", "500", "--sample-every", "1000"]
RUNS = {
    "dcgan": ["--arch", "dcgan"],  # the seed's recipe: 64-wide DCGAN, text by concatenation, BCE, Adam(2e-4, 0.5)
    "textgan": ["--arch", "textgan", "--ngf", "12", "--ndf", "8"],
}


def train(args) -> None:
    procs = []
    for name, extra in RUNS.items():
        out = Path(args.out) / name
        cmd = [sys.executable, "-m", "pixelchat.cli", "train", *COMMON, *extra, "--out", str(out),
               "--time-budget", str(args.minutes), "--snapshot-minutes", str(args.snapshot_minutes)]
        if (out / "checkpoint.safetensors").exists():
            cmd += ["--resume", str(out)]
        log = open(Path(args.out) / f"{name}.log", "a")
        print(" ".join(cmd), flush=True)
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
    codes = [p.wait() for p in procs]
    if any(codes):
        sys.exit(f"training failed: exit codes {codes} (see the logs in {args.out})")


def evaluate_runs(args) -> None:
    import torch

    from pixelchat.evaluation import evaluate, read_prompts

    torch.set_num_threads(args.threads)  # one thread: the runs may still be training on the other cores
    from pixelchat.training.checkpoint import load_checkpoint

    prompts = read_prompts(args.prompts)
    results_file = Path(args.out) / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name in RUNS:
        snaps = sorted((Path(args.out) / name / "snapshots").glob("model-*.safetensors"))
        for snap in snaps:
            key = f"{name}/{snap.stem}"
            if key in results:
                continue
            cfg = load_checkpoint(snap).config
            ev = evaluate(prompts, model=snap, per_prompt=args.n_per_prompt, seed=args.seed, progress=False)
            f = ev.figures
            results[key] = {"run": name, "step": cfg["step"], "cpu_minutes": round(cfg["cpu_seconds"] / 60, 1),
                            **{k: f[k] for k in ("adherence", "exact_match", "fd", "kid", "precision", "recall",
                                                 "density", "coverage")},
                            "shuffled_floor": f["shuffled_floor"]["adherence"],
                            "real_ceiling": f["real_ceiling"]["adherence"],
                            "near_duplicates": f["diversity"]["near_duplicates"]}
            print(json.dumps({key: results[key]}), flush=True)
            results_file.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, Path(args.plot))
    (Path(args.plot).with_suffix(".json")).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n{machine()}; evaluation on {args.prompts} × {args.n_per_prompt} images\n")
    print("| run | CPU min | steps | adherence | exact match | floor | FD | KID | precision | recall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in RUNS:
        rows = sorted((r for r in results.values() if r["run"] == name), key=lambda r: r["step"])
        if rows:
            r = rows[-1]
            print(f"| {name} | {r['cpu_minutes']} | {r['step']} | {r['adherence']} | {r['exact_match']} | "
                  f"{r['shuffled_floor']} | {r['fd']} | {r['kid']} | {r['precision']} | {r['recall']} |")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for name in RUNS:
        rows = sorted((r for r in results.values() if r["run"] == name), key=lambda r: r["cpu_minutes"])
        if not rows:
            continue
        x = [r["cpu_minutes"] for r in rows]
        for ax, key in zip(axes, ("adherence", "exact_match", "fd")):
            ax.plot(x, [r[key] for r in rows], marker="o", label=name)
            ax.set_title(key)
            ax.set_xlabel("CPU minutes (1 thread)")
    axes[0].plot(x, [rows[-1]["shuffled_floor"]] * len(x), "k:", label="shuffled floor (textgan)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=("train", "eval"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "budget"))
    parser.add_argument("--minutes", type=float, default=50.0)
    parser.add_argument("--snapshot-minutes", type=float, default=5.0)
    parser.add_argument("--prompts", default=str(SUITE))
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "budget-curves.png"),
                        help="eval: where the curves go (their figures beside it, .json)")
    parser.add_argument("--n-per-prompt", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="eval: torch threads")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    train(args) if args.phase == "train" else evaluate_runs(args)


if __name__ == "__main__":
    main()
