"""Training in two processes (DistributedDataParallel over gloo) against one, on a tiny real model.

The same global batch and seed give the same trajectory in any number of processes; only rank 0
writes; a run resumes in another number of processes; bad process counts are refused up front.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from pixelchat.cli import app
from pixelchat.train import train
from pixelchat.training.checkpoint import load_checkpoint

runner = CliRunner()

# Augmentation off: it is the one random draw that differs between one process and several (each
# process draws transforms for its own share of the batch), and these tests compare trajectories.
OPTIONS = {"batch_size": 4, "log_every": 1, "checkpoint_every": 3, "sample_every": 3, "diffaug": "", "scenes": 12,
           "captions_per_image": 2}
CLI_OPTIONS = ["--data", "scenes", "--size", "32", "--ngf", "4", "--ndf", "4", "--batch-size", "4", "--log-every", "1",
               "--checkpoint-every", "3", "--sample-every", "3", "--diffaug", "", "--scenes", "12",
               "--captions-per-image", "2"]
MODEL = {"ngf": 4, "ndf": 4}  # what CLI_OPTIONS give
FIGURES = ("loss_d", "loss_gp", "loss_g", "d_real", "d_fake", "attr_d", "attr_g")

# Tolerances, from measurement. In exact arithmetic two processes compute the single-process step:
# DDP's average of the two halves' mean-loss gradients is the full batch's. What differs is float
# summation order. stats.jsonl rounds losses to 4 decimals and D's mean logits to 3; over the runs
# below the figures differed by at most one unit of that rounding (|Δ| ≤ 1e-3), and loss_gp (~1e4,
# float32) by 5e-4, 3e-8 relative. The tolerance allows 2e-3 plus 1e-6 relative. The generators
# differed by at most 1.5e-5 (relative L2 over all their tensors; Adam turns the rounding noise of
# near-zero gradients into whole steps of lr in a few entries); the bound is 1e-3. Another seed is
# ~1.2 away in weights and far outside the figures' tolerance at every step.
ABS, REL = 2e-3, 1e-6
WEIGHTS_REL = 1e-3


def run_alone(out, steps, *, seed=0, resume=None):
    return train("scenes", size=32, out=out, steps=steps, resume=resume, model_options=MODEL,
                 train_options={**OPTIONS, "seed": seed})


def stats(run) -> list[dict]:
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def far_apart(a: list[dict], b: list[dict]) -> list[str]:
    """Where two trajectories differ beyond the tolerance."""
    assert [r["step"] for r in a] == [r["step"] for r in b]
    return [f"step {x['step']} {k}: {x[k]} vs {y[k]}" for x, y in zip(a, b) for k in FIGURES
            if abs(x[k] - y[k]) > ABS + REL * abs(x[k])]


def generator_distance(a, b) -> float:
    """Relative L2 distance between the trained generators of two run folders."""
    ta, tb = (load_checkpoint(r / "checkpoint.safetensors").tensors for r in (a, b))
    keys = sorted(k for k in ta if k.startswith("G."))
    wa, wb = (torch.cat([t[k].flatten() for k in keys]) for t in (ta, tb))
    return ((wa - wb).norm() / wa.norm()).item()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    r = {name: base / name for name in ("one6", "one3", "one3_one6", "seed1", "two3", "two3_one6", "one3_two6")}
    run_alone(r["one6"], 6)
    run_alone(r["one3"], 3)
    shutil.copytree(r["one3"], r["one3_one6"])
    run_alone(r["one3_one6"], 6, resume=r["one3_one6"])
    run_alone(r["seed1"], 6, seed=1)
    return r


@pytest.fixture(scope="module")
def two3(runs):
    """Three steps in two processes, started by `pixelchat train --nproc 2` (torchrun's launcher)."""
    result = runner.invoke(app, ["train", *CLI_OPTIONS, "--steps", "3", "--out", str(runs["two3"]), "--nproc", "2"])
    assert result.exit_code == 0, result.output
    return runs["two3"]


@pytest.fixture(scope="module")
def one3_two6(runs):
    """The one-process 3-step run continued to 6 steps by torchrun running `python -m pixelchat.train`;
    its checkpoint made to look older, from before the configs recorded the process group."""
    shutil.copytree(runs["one3"], runs["one3_two6"])
    config = json.loads((runs["one3_two6"] / "checkpoint.json").read_text())
    del config["distributed"]
    (runs["one3_two6"] / "checkpoint.json").write_text(json.dumps(config))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "pixelchat.train", *CLI_OPTIONS, "--steps", "6", "--out", str(runs["one3_two6"]),
               "--resume", str(runs["one3_two6"])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr[-3000:]
    return runs["one3_two6"], done


def test_two_processes_follow_the_single_process_trajectory(runs, two3, one3_two6):
    one6 = stats(runs["one6"])
    assert not far_apart(stats(two3), one6[:3])  # steps 1-3 in two processes, from the same start
    assert generator_distance(runs["one3"], two3) < WEIGHTS_REL
    # steps 4-6 in two processes after 3 in one, against the same resume in one process
    assert not far_apart(stats(one3_two6[0]), stats(runs["one3_one6"]))
    assert generator_distance(runs["one3_one6"], one3_two6[0]) < WEIGHTS_REL
    # the comparison can fail: another seed is outside the tolerance at every step, and in weights
    assert {line.split()[1] for line in far_apart(stats(runs["seed1"]), one6)} == {"1", "2", "3", "4", "5", "6"}
    assert generator_distance(runs["one6"], runs["seed1"]) > 100 * WEIGHTS_REL


def test_only_rank_0_writes(runs, two3, one3_two6):
    assert [r["step"] for r in stats(two3)] == [1, 2, 3]  # a second writer would append its own rows
    assert [r["step"] for r in stats(one3_two6[0])] == [1, 2, 3, 4, 5, 6]
    files = lambda run: sorted(str(p.relative_to(run)) for p in run.rglob("*"))  # noqa: E731
    assert files(two3) == files(runs["one3"])  # no stray or temporary files
    for name in ("checkpoint.json", "model.json", "training_options.json"):
        assert json.loads((two3 / name).read_text())["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert json.loads((runs["one3"] / "model.json").read_text())["distributed"]["world_size"] == 1
    done = one3_two6[1]
    printed = [line for line in done.stdout.splitlines() if line.strip()]
    assert printed == [str(one3_two6[0] / "model.safetensors")]  # once, by rank 0
    assert done.stderr.count("trained 6 steps") == 1 and done.stderr.count("resumed from") == 1
    assert "(world size 1 → 2)" in done.stderr


def test_resume_in_another_number_of_processes(runs, two3):
    # A resumed run draws its batches from a generator seeded with (seed + step), so it departs from a
    # run that went straight on; the reference is the same resume in one process.
    shutil.copytree(two3, runs["two3_one6"])
    run_alone(runs["two3_one6"], 6, resume=runs["two3_one6"])
    assert not far_apart(stats(runs["two3_one6"]), stats(runs["one3_one6"]))
    assert generator_distance(runs["one3_one6"], runs["two3_one6"]) < WEIGHTS_REL
    assert far_apart(stats(runs["two3_one6"])[3:], stats(runs["one6"])[3:])  # the resume does change the draws
    config = json.loads((runs["two3_one6"] / "checkpoint.json").read_text())
    assert config["step"] == 6 and config["distributed"]["world_size"] == 1
    assert not any(k.startswith("module.") or ".module." in k
                   for k in load_checkpoint(two3 / "checkpoint.safetensors").tensors)


def test_separate_attribute_classifier_trains_in_two_processes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    train("scenes", size=32, out=one, steps=3, model_options={**MODEL, "attribute_net": "classifier"},
          train_options=OPTIONS)
    result = runner.invoke(app, ["train", *CLI_OPTIONS, "--steps", "3", "--out", str(two), "--nproc", "2",
                                 "--attribute-net", "classifier"])
    assert result.exit_code == 0, result.output
    assert any(k.startswith("C.") for k in load_checkpoint(two / "checkpoint.safetensors").tensors)
    assert not far_apart(stats(two), stats(one))
    assert generator_distance(one, two) < WEIGHTS_REL


@pytest.mark.parametrize("args, message", [
    (["--nproc", "2", "--batch-size", "3"], "a batch of 3 does not split evenly among 2 processes"),
    (["--nproc", "0"], "--nproc must be at least 1"),
    (["--nproc", "2", "--backend", "nccl"], "the nccl backend runs on GPUs"),
    (["--backend", "mpi"], "backend must be one of gloo, nccl"),
])
def test_bad_process_options_are_refused_before_any_process_starts(tmp_path, args, message):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", "scenes", "--size", "32", "--steps", "2", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert not out.exists()


def test_dry_run_checks_the_split_without_starting_processes(tmp_path):
    out = tmp_path / "dry"
    dry = ["train", *CLI_OPTIONS, "--steps", "2", "--out", str(out), "--nproc", "2", "--dry-run"]
    result = runner.invoke(app, dry)
    assert result.exit_code == 0, result.output
    assert not out.exists()
    result = runner.invoke(app, [*dry, "--batch-size", "5"])
    assert result.exit_code == 2 and "a batch of 5 does not split evenly" in result.stderr


def test_nproc_is_refused_under_torchrun(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, ["train", *CLI_OPTIONS, "--steps", "2", "--out", str(tmp_path / "r"), "--nproc", "2"])
    assert result.exit_code == 2 and "under torchrun leave it out" in result.stderr


def test_processes_on_one_machine_share_its_cores(monkeypatch):
    from pixelchat.training.distributed import default_threads

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_threads() is None  # one process: torch's default
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_threads() == max(1, cores // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * cores))
    assert default_threads() == 1
