"""Inference runtimes: each installed one draws what eager PyTorch draws; a missing one names its extra."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from pixelchat.engines import GANEngine, GenerateRequest
from pixelchat.engines.runtime import RUNTIMES, RuntimeUnavailable, check_available, runtime_name
from pixelchat.training.upsampler import train_upsampler


def installed(name: str) -> bool:
    try:
        check_available(name)
    except RuntimeUnavailable:
        return False
    return name != "compile" or shutil.which("g++") is not None or shutil.which("c++") is not None


@pytest.fixture(scope="module")
def upsampler(tmp_path_factory):
    return train_upsampler(tmp_path_factory.mktemp("rt") / "up", n_images=4, in_size=32, scales=(2,), features=4,
                           body=1, steps=1, minutes=0, batch_size=2, patch=16, n_test=2, progress=False)


@pytest.mark.parametrize("name", [r for r in RUNTIMES if r not in ("eager", "int8")])
def test_each_installed_runtime_draws_what_eager_draws(name, tiny_model, upsampler, tmp_path, monkeypatch):
    if not installed(name):
        pytest.skip(f"the {name} runtime is not installed here")
    monkeypatch.setenv("PIXELCHAT_CACHE", str(tmp_path / "cache"))
    eager = GANEngine(tiny_model, upsampler=upsampler, runtime="eager")
    other = GANEngine(tiny_model, upsampler=upsampler, runtime=name)
    shapes = ((32, 2),) if name == "compile" else ((32, 1), (32, 5), (64, 3))  # compiling costs a minute a shape
    drawn = {}
    for size, n in shapes:
        a = eager.generate(GenerateRequest("a lake at night", n=n, seed=9, size=size))
        b = drawn[size, n] = other.generate(GenerateRequest("a lake at night", n=n, seed=9, size=size))
        diff = max(int(np.abs(np.asarray(x.image, np.int16) - np.asarray(y.image, np.int16)).max()) for x, y in zip(a, b))
        assert diff <= 2, (name, size, diff)  # 8-bit levels
        assert b[0].record["runtime"] == name and a[0].record["runtime"] == "eager"
    again = other.generate(GenerateRequest("a lake at night", n=shapes[0][1], seed=9, size=shapes[0][0]))
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(again, drawn[shapes[0]]))
    if name in ("onnx", "openvino"):
        assert list((tmp_path / "cache" / "runtime").glob("*.onnx"))  # exported once, then cached


def psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_int8_draws_near_eager_and_the_same_pictures_on_every_start(tiny_model, upsampler, tmp_path, monkeypatch):
    if not installed("int8"):
        pytest.skip("the int8 runtime is not installed here")
    monkeypatch.setenv("PIXELCHAT_CACHE", str(tmp_path / "cache"))
    eager = GANEngine(tiny_model, upsampler=upsampler, runtime="eager")
    int8 = GANEngine(tiny_model, upsampler=upsampler, runtime="int8")
    drawn = {}
    for size, n in ((32, 1), (32, 5), (64, 3)):
        a = eager.generate(GenerateRequest("a lake at night", n=n, seed=9, size=size))
        b = drawn[size, n] = int8.generate(GenerateRequest("a lake at night", n=n, seed=9, size=size))
        assert min(psnr(x.image, y.image) for x, y in zip(a, b)) > 30, size  # near eager's, not equal
        assert b[0].record["runtime"] == "int8"
    quantized = list((tmp_path / "cache" / "runtime").glob("*-int8-*.onnx"))
    assert len(quantized) == 2  # the generator and the upsampler (x2), each quantized once
    # another start, with the quantized file cached and with none: the same calibration, the same pixels
    for cache in ("cache", "empty"):
        monkeypatch.setenv("PIXELCHAT_CACHE", str(tmp_path / cache))
        again = GANEngine(tiny_model, upsampler=upsampler, runtime="int8").generate(
            GenerateRequest("a lake at night", n=5, seed=9, size=32))
        assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(again, drawn[32, 5]))
    assert list((tmp_path / "empty" / "runtime").glob("*-int8-*.onnx"))


def test_a_missing_runtime_names_the_extra_to_install(tiny_model, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "onnxruntime" else real(m, *a))
    with pytest.raises(RuntimeUnavailable, match=r"pip install 'pixelchat\[onnx\]'"):
        GANEngine(tiny_model, runtime="onnx")


def test_unknown_runtimes_are_refused(tiny_model, monkeypatch):
    with pytest.raises(ValueError, match="eager, compile, onnx, openvino, int8"):
        runtime_name("tensorrt")
    monkeypatch.setenv("PIXELCHAT_RUNTIME", "fast")
    with pytest.raises(ValueError, match="unknown runtime 'fast'"):
        GANEngine(tiny_model)
    monkeypatch.setenv("PIXELCHAT_RUNTIME", "onnx")
    assert runtime_name() == "onnx" and runtime_name("eager") == "eager"


def test_the_cli_draws_with_the_runtime_asked_and_refuses_an_unknown_one(tiny_model, tmp_path, monkeypatch):
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from pixelchat.cli import app
    from pixelchat.imagefiles import read_record

    if not installed("onnx"):
        pytest.skip("the onnx runtime is not installed here")
    monkeypatch.setenv("PIXELCHAT_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    out = tmp_path / "out"
    drawn = runner.invoke(app, ["generate", "a lake", "--model", str(tiny_model), "--runtime", "onnx", "--seed", "2",
                                "--out", str(out), "--json"])
    assert drawn.exit_code == 0, drawn.output
    assert read_record(json.loads(drawn.output)["files"][0])["runtime"] == "onnx"
    for bad, said in ((["--runtime", "fast"], "unknown runtime 'fast'"),
                      (["--runtime", "onnx", "--engine", "diffusers"], "--runtime chooses")):
        refused = runner.invoke(app, ["generate", "a lake", "--model", str(tiny_model), *bad, "--out", str(out)])
        assert refused.exit_code == 2 and said in refused.output, refused.output
    assert len(list(out.iterdir())) == 1 and Image.open(next(out.iterdir())).size == (32, 32)


def test_a_server_draws_with_int8_where_installed_unless_told_otherwise(tiny_model, tmp_path, monkeypatch):
    from pixelchat.cli import serving_runtime
    from pixelchat.server.config import Settings

    monkeypatch.delenv("PIXELCHAT_RUNTIME", raising=False)
    settings = lambda **k: Settings(data_dir=tmp_path, model=str(tiny_model), **k)  # noqa: E731
    assert serving_runtime(settings(runtime="eager")) == "eager"
    with pytest.raises(ValueError, match="unknown runtime 'fast'"):
        serving_runtime(settings(runtime="fast"))
    real = importlib.util.find_spec
    if installed("int8"):
        assert serving_runtime(settings()) == "int8"
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "onnxruntime" else real(m, *a))
    assert serving_runtime(settings()) == "eager"  # without the extra: eager, and nothing to install
    with pytest.raises(RuntimeUnavailable, match=r"pixelchat\[onnx\]"):
        serving_runtime(settings(runtime="int8"))
    monkeypatch.setenv("PIXELCHAT_RUNTIME", "compile")
    assert Settings(data_dir=tmp_path).runtime == "compile"  # the same variable as everywhere


def test_an_export_cached_by_other_network_code_is_not_reused(tmp_path, monkeypatch):
    import importlib
    import sys

    from pixelchat.engines.runtime import code_key

    source = tmp_path / "net_under_test.py"
    source.write_text("import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = code_key(importlib.import_module("net_under_test").Net())
    source.write_text("import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x * 3\n")
    sys.modules.pop("net_under_test")
    assert code_key(importlib.import_module("net_under_test").Net()) != first
    assert code_key(importlib.import_module("net_under_test").Net()) == code_key(importlib.import_module("net_under_test").Net())
