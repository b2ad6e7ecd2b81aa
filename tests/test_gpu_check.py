"""benchmarks/gpu_check.py, the prepared check of every open-vocabulary path on one device, run on the
CPU with tiny random models: every path runs and is timed, a path that fails is reported while the
others still run, and a device that is not there is one clear error."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
PATHS = ["text-to-image", "image-to-image", "inpainting", "instruction-edit", "settings", "describer", "similarity",
         "built-in"]
TINY = ["--device", "cpu", "--dtype", "fp32", "--sizes", "tiny", "--steps", "4", "--repeats", "2"]


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its neighbour _machine, as when run from there
    try:
        yield importlib.import_module("gpu_check")
    finally:
        sys.path.remove(str(BENCHMARKS))


def similarity_api() -> bool:
    """Whether pixelchat has the similarity API the check uses (another path may still be in the works)."""
    try:
        module = importlib.import_module("pixelchat.vision.similarity")
    except ImportError:
        return False
    return hasattr(module, "load_similarity") and hasattr(module, "Similarity")


@pytest.fixture(scope="module")
def tiny_run(gpu_check, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "report.json"
    return gpu_check.main([*TINY, "--out", str(out)]), json.loads(out.read_text())


def test_every_path_runs_and_is_timed(tiny_run, capsys):
    code, report = tiny_run
    assert list(report["paths"]) == PATHS
    for name, entry in report["paths"].items():
        if name == "similarity" and not similarity_api():
            assert entry["status"] == "not available" and entry["ok"] is None
            continue
        assert entry["ok"] is True and entry["status"] == "ok", (name, entry.get("error"))
        assert entry["load_s"] > 0 and entry["first_s"] > 0 and entry["steady_p50_s"] > 0, name
        assert entry["peak_gpu_mib"] is None  # no GPU memory on the CPU
    for name in ("text-to-image", "image-to-image", "inpainting", "instruction-edit", "describer"):
        assert len(report["paths"][name]["steady_s"]) == 2, name
    schedulers = report["paths"]["settings"]["schedulers"]
    assert {"ddim", "euler", "dpm++", "unipc"} <= set(schedulers) and "flow-euler" not in schedulers
    assert all(s["ok"] in (True, None) for s in schedulers.values())
    built_in = report["paths"]["built-in"]
    assert built_in["device"] == "cpu" and built_in["note"].startswith("CPU only")
    machine = report["machine"]
    assert machine["gpu"] is None and machine["torch"] and machine["diffusers"] and machine["transformers"]
    assert all(m["random"] for m in report["models"].values())
    assert code == 0


def test_a_failing_path_is_reported_and_the_others_still_run(gpu_check, tmp_path, capsys):
    not_a_captioner = tmp_path / "bert"
    not_a_captioner.mkdir()
    (not_a_captioner / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    out = tmp_path / "report.json"
    code = gpu_check.main([*TINY, "--repeats", "1", "--paths", "describer,built-in",
                           "--describer", str(not_a_captioner), "--out", str(out)])
    report = json.loads(out.read_text())
    assert code == 1 and list(report["paths"]) == ["describer", "built-in"]
    describer = report["paths"]["describer"]
    assert describer["ok"] is False and "is not an image-to-text model" in describer["error"]
    assert report["paths"]["built-in"]["ok"] is True
    assert report["models"]["describer"] == {"folder": str(not_a_captioner.resolve()), "random": False}
    printed = capsys.readouterr().out
    assert "describer" in printed and "failed" in printed and "CheckpointError" in printed


def test_a_device_that_is_not_there_is_one_clear_error(gpu_check, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main(["--device", "cuda", "--sizes", "tiny"])
    assert exit_.value.code == 2
    assert "device 'cuda' is not available" in capsys.readouterr().err
