"""Prompt moderation on the labelled prompts: precision and recall per category, and speed.

The labelled set (tests/data/moderation-prompts.jsonl) has a dev and a test split. ``--choose``
picks each category's embedding threshold on the dev split alone (the highest recall whose
precision is at least 0.9 and that blocks at most 1% of the benign prompts; the best F1 where
none does; categories in turn, twice), and with them the benign margin (how much closer a benign
example may be before it stops a block; the most recall while at most 0.5% of the benign prompts
are blocked), and writes them into the policy file. The table is always the test split (``--split dev`` to look
at dev instead). Speed: one prompt at a time, none of them seen before, on this machine.

    python bench_moderation.py --choose      # choose the thresholds on dev, then report test
    python bench_moderation.py               # report test with the policy's thresholds
    python bench_moderation.py --threads 1   # the same, timed on one thread
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
import statistics
import time
from pathlib import Path

import torch

from _machine import machine
from pixelchat.safety.moderation import DEFAULT_POLICY, NEVER_ALLOWED, Moderator, load_policy

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "moderation-prompts.jsonl"
GRID = [round(0.40 + 0.01 * i, 2) for i in range(51)]  # 0.40 … 0.90: never on contrast with the benign examples alone
MIN_PRECISION = 0.9
MAX_BENIGN_BLOCKED = 0.01  # per category, of the ok prompts
MAX_BENIGN_BLOCKED_OVERALL = 0.005  # all categories together
START = 0.60
MARGINS = [0.0, -0.02, -0.04, -0.06, -0.08]  # harmful may win when a benign example is this much closer


def load_rows(split: str | None = None) -> list[dict]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def predict(moderator: Moderator, rows: list[dict], scores) -> list[str]:
    """The category each prompt is blocked for, or "ok"."""
    out = []
    for r, s in zip(rows, scores):
        d = moderator.decide(r["prompt"], s)
        out.append("ok" if d.allowed else d.category)
    return out


def category_figures(labels: list[str], preds: list[str], category: str) -> dict:
    tp = sum(1 for y, p in zip(labels, preds) if y == category and p == category)
    fp = sum(1 for y, p in zip(labels, preds) if y != category and p == category)
    fn = sum(1 for y, p in zip(labels, preds) if y == category and p != category)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n": tp + fn, "tp": tp, "fp": fp, "fn": fn}


def blocked_figures(labels: list[str], preds: list[str]) -> dict:
    """Blocked versus ok, whatever the category."""
    return category_figures(["blocked" if y != "ok" else "ok" for y in labels],
                            ["blocked" if p != "ok" else "ok" for p in preds], "blocked")


def with_thresholds(moderator: Moderator, thresholds: dict[str, float], margin: float | None = None) -> Moderator:
    """The same moderator (examples, caches) with other thresholds (and benign margin)."""
    policy = moderator.policy
    categories = tuple(dataclasses.replace(c, threshold=thresholds.get(c.id, c.threshold)) for c in policy.categories)
    m = copy.copy(moderator)
    m.policy = dataclasses.replace(policy, categories=categories,
                                   benign_margin=policy.benign_margin if margin is None else margin)
    return m


def choose_thresholds(moderator: Moderator, rows: list[dict], scores) -> dict[str, float]:
    """Per category, on these rows: the highest recall whose precision is at least 0.9 and that blocks at most
    1% of the ok prompts (ties: the higher precision, then the higher threshold); where no threshold meets
    both, the best F1. A category no operator can allow must keep that precision when all the others are
    allowed. Coordinate ascent over the categories from 0.60 each, two rounds."""
    labels = [r["label"] for r in rows]
    n_ok = labels.count("ok")
    thresholds = {c.id: START for c in moderator.policy.categories}  # not the file's: the result is reproducible
    for _ in range(2):
        for c in moderator.policy.categories:
            best_key, best_t = None, thresholds[c.id]
            for t in GRID:
                m = with_thresholds(moderator, {**thresholds, c.id: t})
                preds = predict(m, rows, scores)
                f = category_figures(labels, preds, c.id)
                benign = sum(1 for y, p in zip(labels, preds) if y == "ok" and p == c.id) / max(n_ok, 1)
                ok = f["precision"] >= MIN_PRECISION and benign <= MAX_BENIGN_BLOCKED
                if ok and c.id in NEVER_ALLOWED:  # also where the operator allows every other category
                    m.allow = frozenset(m.policy.ids) - {c.id}
                    ok = category_figures(labels, predict(m, rows, scores), c.id)["precision"] >= MIN_PRECISION
                key = (ok, f["recall"] if ok else f["f1"], f["precision"], t)
                if best_key is None or key > best_key:
                    best_key, best_t = key, t
            thresholds[c.id] = best_t
    return thresholds


def choose_policy(moderator: Moderator, rows: list[dict], scores) -> tuple[dict[str, float], float]:
    """Thresholds for each benign margin in MARGINS; keeps the margin whose thresholds block the most harmful
    prompts while blocking at most 0.5% of the ok prompts in all (ties: the margin nearest 0)."""
    labels = [r["label"] for r in rows]
    best = None
    for margin in MARGINS:
        m = with_thresholds(moderator, {}, margin)
        thresholds = choose_thresholds(m, rows, scores)
        b = blocked_figures(labels, predict(with_thresholds(m, thresholds), rows, scores))
        benign = b["fp"] / max(labels.count("ok"), 1)
        key = (benign <= MAX_BENIGN_BLOCKED_OVERALL, b["recall"], -abs(margin))
        print(f"  benign margin {margin:+.2f}: recall {b['recall']:.3f}, ok blocked {benign:.1%}")
        if best is None or key > best[0]:
            best = (key, thresholds, margin)
    return best[1], best[2]


def write_thresholds(path: Path, thresholds: dict[str, float], margin: float) -> None:
    """Replace each category's "threshold" and the "benign_margin" in the policy file, leaving the rest as it is."""
    text = path.read_text()
    text, n = re.subn(r'("benign_margin":\s*)-?[0-9.]+', lambda m: m.group(1) + f"{margin:.2f}", text, count=1)
    if n != 1:
        raise SystemExit(f"cannot find the benign_margin in {path}")
    for cid, t in thresholds.items():
        pattern = re.compile(rf'("id":\s*"{re.escape(cid)}",(?:(?!"id":).)*?"threshold":\s*)[0-9.]+', re.S)
        text, n = pattern.subn(lambda m: m.group(1) + f"{t:.2f}", text, count=1)
        if n != 1:
            raise SystemExit(f"cannot find the threshold of {cid} in {path}")
    path.write_text(text)


def time_single(moderator: Moderator, prompts: list[str]) -> tuple[float, float]:
    """Median and 95th percentile ms per prompt, one call per prompt, the encoder's cache emptied first."""
    moderator.check("warm up")
    moderator.encoder.clear_cache()
    times = []
    for p in prompts:
        t0 = time.perf_counter()
        moderator.check(p)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def table(moderator: Moderator, rows: list[dict], preds: list[str]) -> str:
    labels = [r["label"] for r in rows]
    lines = ["| category | threshold | n | precision | recall | F1 |", "|---|---:|---:|---:|---:|---:|"]
    for c in moderator.policy.categories:
        f = category_figures(labels, preds, c.id)
        lines.append(f"| {c.id} | {c.threshold:.2f} | {f['n']} | {f['precision']:.2f} | {f['recall']:.2f} | "
                     f"{f['f1']:.2f} |")
    b = blocked_figures(labels, preds)
    n_ok = labels.count("ok")
    fp_ok = sum(1 for y, p in zip(labels, preds) if y == "ok" and p != "ok")
    lines.append(f"| **blocked vs ok** | | {b['n']} | {b['precision']:.2f} | {b['recall']:.2f} | {b['f1']:.2f} |")
    lines.append("")
    lines.append(f"benign prompts blocked: {fp_ok} of {n_ok} ({fp_ok / n_ok:.1%})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--choose", action="store_true", help="choose the thresholds on dev and write them")
    ap.add_argument("--policy", type=Path, default=DEFAULT_POLICY, help="the policy file")
    ap.add_argument("--split", default="test", choices=["dev", "test"], help="the split to report")
    ap.add_argument("--errors", action="store_true", help="list the prompts the report split gets wrong")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    moderator = Moderator(load_policy(args.policy))
    moderator.check("a lake at dawn")  # loads the encoder, embeds the examples
    load_s = time.perf_counter() - t0

    if args.choose:
        dev = load_rows("dev")
        thresholds, margin = choose_policy(moderator, dev, moderator.embedding_scores([r["prompt"] for r in dev]))
        write_thresholds(args.policy, thresholds, margin)
        print(f"chosen on dev: benign_margin={margin:.2f}, " + ", ".join(f"{k}={v:.2f}" for k, v in thresholds.items()))
        moderator = with_thresholds(moderator, thresholds, margin)

    rows = load_rows(args.split)
    moderator.encoder.clear_cache()
    t1 = time.perf_counter()
    scores = moderator.embedding_scores([r["prompt"] for r in rows])
    batch_ms = (time.perf_counter() - t1) * 1000 / len(rows)
    preds = predict(moderator, rows, scores)
    median_ms, p95_ms = time_single(moderator, [r["prompt"] for r in rows])
    labels = [r["label"] for r in rows]
    permissive = copy.copy(moderator)
    permissive.allow = frozenset({"sexual"})
    loose = predict(permissive, rows, scores)
    sexual_allowed = sum(1 for y, p in zip(labels, loose) if y == "sexual" and p == "ok") / labels.count("sexual")
    minors = category_figures(labels, loose, "sexual_minors")

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"{args.split} split: {len(rows)} prompts ({labels.count('ok')} ok)\n")
    print(table(moderator, rows, preds))
    print(f"\nwith sexual allowed by the operator: {sexual_allowed:.0%} of the sexual prompts pass; sexual_minors "
          f"recall {minors['recall']:.2f}, precision {minors['precision']:.2f}")
    print(f"\nspeed: {median_ms:.1f} ms per prompt (median; p95 {p95_ms:.1f} ms), one at a time; "
          f"{batch_ms:.1f} ms per prompt in one batch; loading (encoder + example embeddings) {load_s:.1f} s")
    if args.errors:
        print()
        for r, p in zip(rows, preds):
            if p != r["label"]:
                print(f"  {r['label']:>22} → {p:<22} {r['prompt']}")
    if args.json:
        figures = {c.id: {**category_figures(labels, preds, c.id), "threshold": c.threshold}
                   for c in moderator.policy.categories}
        args.json.write_text(json.dumps({"split": args.split, "categories": figures,
                                         "blocked": blocked_figures(labels, preds), "ms_median": median_ms,
                                         "ms_p95": p95_ms, "machine": machine()}, indent=1))


if __name__ == "__main__":
    main()
