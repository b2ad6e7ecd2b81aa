"""A diffusion pipeline's settings (steps, guidance, scheduler by name, seed, strength, size, device,
dtype, CPU offload) reach the pipeline call from the Python API, the CLI and the server, and every
picture's record and A1111 line name them; bad values get one clear error. Tiny random pipelines,
on the CPU."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("diffusers")

from conftest import serving  # noqa: E402
from test_diffusers_engine import STEPS, pipelines, sd  # noqa: E402,F401  (the tiny pipeline folders, its engine)

from pixelchat.cli import app  # noqa: E402
from pixelchat.engines import GenerateRequest, UnsupportedOperation, load_engine  # noqa: E402
from pixelchat.imagefiles import a1111_parameters, read_record  # noqa: E402


@pytest.fixture
def calls(monkeypatch):
    """Every pipeline call: its class, keyword arguments and the scheduler it ran with."""
    import diffusers

    seen = []
    for name in ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"):
        cls = getattr(diffusers, name)

        def spy(self, *args, _real=cls.__call__, **kwargs):
            seen.append({"pipeline": type(self).__name__, "scheduler": type(self.scheduler).__name__, **kwargs})
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", spy)
    return seen


def parameters(record: dict) -> dict[str, str]:
    """The A1111 line's fields."""
    return dict(part.split(": ", 1) for part in a1111_parameters(record).splitlines()[-1].split(", "))


def test_generate_settings_reach_the_pipeline_and_the_record(sd, calls):
    import pixelchat

    own = type(sd.pipeline.scheduler).__name__
    image = pixelchat.generate("a lake at night", seed=5, size=48, model=sd, steps=2, guidance=3.5,
                               scheduler="euler")[0]
    call = calls[-1]
    assert (call["num_inference_steps"], call["guidance_scale"], call["height"], call["width"]) == (2, 3.5, 48, 48)
    assert call["scheduler"] == "EulerDiscreteScheduler" and type(sd.pipeline.scheduler).__name__ == own  # put back
    record = image.info["pixelchat"]
    assert (record["steps"], record["guidance"], record["seed"], record["size"]) == (2, 3.5, 5, [48, 48])
    assert (record["scheduler"], record["scheduler_name"]) == ("EulerDiscreteScheduler", "euler")
    assert (record["device"], record["dtype"], record["offload"]) == ("cpu", "fp32", False)
    line = parameters(record)
    assert line["Steps"] == "2" and line["CFG scale"] == "3.5" and line["Sampler"] == "EulerDiscreteScheduler"
    assert line["Scheduler"] == "euler" and line["Seed"] == "5" and line["Size"] == "48x48"
    assert line["Device"] == "cpu" and line["Dtype"] == "fp32"

    again = pixelchat.generate("a lake at night", seed=5, size=48, model=sd, steps=2, guidance=3.5, scheduler="euler")
    assert np.array_equal(np.asarray(again[0]), np.asarray(image))  # reproducible from its record
    other = pixelchat.generate("a lake at night", seed=5, size=48, model=sd, steps=2, guidance=3.5, scheduler="dpm++")
    assert calls[-1]["scheduler"] == "DPMSolverMultistepScheduler"
    assert not np.array_equal(np.asarray(other[0]), np.asarray(image))
    plain = pixelchat.generate("a lake", seed=1, model=sd)[0].info["pixelchat"]  # the engine's defaults
    assert (plain["steps"], plain["guidance"], plain["scheduler"], plain["scheduler_name"]) == (STEPS, 7.5, own, None)


def test_a_batch_with_different_settings_runs_one_call_per_setting(sd, calls):
    requests = [GenerateRequest("hills", seed=1, steps=2), GenerateRequest("a lake", seed=2, steps=2),
                GenerateRequest("a desert", seed=3, scheduler="unipc")]
    batched = sd.generate_batch(requests)
    assert [c["num_inference_steps"] for c in calls] == [2, STEPS] and len(calls[0]["prompt"]) == 2
    assert calls[1]["scheduler"] == "UniPCMultistepScheduler"
    assert [b[0].record["steps"] for b in batched] == [2, 2, STEPS]
    assert batched[2][0].record["scheduler_name"] == "unipc"


def test_edit_and_vary_settings_reach_the_pipeline(sd, calls):
    import pixelchat

    picture = pixelchat.generate("hills", seed=0, model=sd)[0]
    result = pixelchat.edit(picture, "a desert at sunset", strength=0.8, seed=4, model=sd, steps=5, guidance=2.0,
                            scheduler="euler-a")
    call = calls[-1]
    assert call["pipeline"] == "StableDiffusionImg2ImgPipeline" and call["scheduler"] == "EulerAncestralDiscreteScheduler"
    assert (call["num_inference_steps"], call["guidance_scale"], call["strength"]) == (5, 2.0, 0.8)
    record = result.images[0].record
    assert (record["steps"], record["guidance"], record["scheduler_name"], record["edit"]["strength"]) == \
        (5, 2.0, "euler-a", 0.8)
    assert parameters(record)["Denoising strength"] == "0.8"
    varied = pixelchat.vary(picture, n=1, seed=2, strength=0.7, model=sd, steps=4, scheduler="ddim")[0]
    assert (calls[-1]["num_inference_steps"], calls[-1]["strength"], calls[-1]["scheduler"]) == (4, 0.7, "DDIMScheduler")
    assert varied.record["vary"]["strength"] == 0.7 and varied.record["scheduler_name"] == "ddim"


@pytest.mark.parametrize("settings, message", [
    ({"scheduler": "karras-magic"}, "unknown scheduler 'karras-magic': choose one of ddim, ddpm, pndm"),
    ({"scheduler": "flow-euler"}, "does not fit StableDiffusionPipeline"),
    ({"steps": 0}, "steps must be between 1 and 1000"),
    ({"steps": 1001}, "steps must be between 1 and 1000"),
    ({"guidance": -1.0}, "guidance must be between 0 and 50"),
    ({"guidance": 51.0}, "guidance must be between 0 and 50"),
])
def test_bad_settings_get_one_clear_error(sd, settings, message):
    import pixelchat

    with pytest.raises(ValueError, match=message):
        pixelchat.generate("hills", seed=0, model=sd, **settings)
    picture = Image.new("RGB", (32, 32), (90, 120, 200))
    with pytest.raises(ValueError, match=message):
        pixelchat.edit(picture, "a desert", seed=0, model=sd, **settings)


def test_the_built_in_model_refuses_pipeline_settings(tiny_engine):
    import pixelchat

    with pytest.raises(UnsupportedOperation, match="steps, scheduler apply to diffusion pipelines"):
        pixelchat.generate("hills", model=tiny_engine, steps=10, scheduler="euler")
    picture = Image.new("RGB", (32, 32), (90, 120, 200))
    with pytest.raises(UnsupportedOperation, match="guidance applies to diffusion pipelines"):
        pixelchat.vary(picture, model=tiny_engine, guidance=3.0)
    with pytest.raises(UnsupportedOperation, match="device, dtype and offload apply to diffusion pipelines"):
        load_engine(None, "gan", device="cpu")


def test_devices_that_are_not_here_are_refused(pipelines):  # noqa: F811
    from pixelchat.engines.diffusers import runtime

    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda' is not available"):
            load_engine(pipelines["t2i"], device="cuda")
    if not (torch.backends.mps.is_available()):
        with pytest.raises(ValueError, match="device 'mps' is not available: no Apple GPU"):
            load_engine(pipelines["t2i"], device="mps")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        runtime("tpu")
    with pytest.raises(ValueError, match="unknown dtype 'int8': choose one of fp16, bf16, fp32"):
        runtime("cpu", "int8")
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        runtime("cpu", "fp16")
    with pytest.raises(ValueError, match="CPU offload moves components to a CUDA GPU"):
        runtime("cpu", offload=True)
    assert runtime("cpu") == ("cpu", "fp32") and runtime("cpu", "bfloat16") == ("cpu", "bf16")


def test_a_pipeline_runs_in_bf16_on_the_cpu(pipelines):  # noqa: F811
    import torch

    engine = load_engine(pipelines["t2i"], device="cpu", dtype="bf16")
    assert engine is not load_engine(pipelines["t2i"])  # one engine per placement
    assert engine.pipeline.unet.dtype == torch.bfloat16
    engine.steps = 2
    record = engine.generate(GenerateRequest("hills", seed=0))[0].record
    assert (record["device"], record["dtype"]) == ("cpu", "bf16")


def test_gpu_placement_and_offload(monkeypatch):
    """What a GPU machine runs: the default is CUDA in fp16, offload hands the pipeline to accelerate
    (checked here with CUDA pretended and a stand-in pipeline; no GPU on this machine)."""
    import importlib.util

    import torch

    from pixelchat.engines.diffusers import place, runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runtime() == ("cuda", "fp16") and runtime("cuda", "bf16") == ("cuda", "bf16")
    with pytest.raises(ValueError, match="this machine has 1 CUDA GPU"):
        runtime("cuda:1")
    if importlib.util.find_spec("accelerate") is None:
        with pytest.raises(UnsupportedOperation, match="accelerate"):
            runtime("cuda", offload=True)

    class Pipeline:
        def __init__(self):
            self.done = []

        def to(self, device):
            self.done.append(("to", device))

        def enable_model_cpu_offload(self, device):
            self.done.append(("offload", device))

    p = Pipeline()
    place(p, "cuda", False)
    place(p, "cuda:0", True)
    assert p.done == [("to", "cuda"), ("offload", "cuda:0")]


def test_cli_takes_the_settings(sd, pipelines, tmp_path):  # noqa: F811
    runner = CliRunner()
    model = ["--model", str(pipelines["t2i"])]
    result = runner.invoke(app, ["generate", "a lake at night", "--seed", "5", "--steps", "2", "--guidance", "4",
                                 "--scheduler", "euler", "--negative-prompt", "clouds", "--size", "40",
                                 "--out", str(tmp_path), "--json", *model])
    assert result.exit_code == 0, result.output
    path = json.loads(result.stdout)["files"][0]
    record = read_record(path)
    assert (record["steps"], record["guidance"], record["scheduler_name"], record["negative_prompt"]) == \
        (2, 4.0, "euler", "clouds")
    assert record["size"] == [40, 40]
    with Image.open(path) as image:
        assert "Scheduler: euler" in image.text["parameters"] and "Steps: 2" in image.text["parameters"]
    result = runner.invoke(app, ["edit", path, "a desert", "--strength", "0.7", "--steps", "4", "--scheduler", "unipc",
                                 "--seed", "1", "--out", str(tmp_path / "e"), "--json", *model])
    assert result.exit_code == 0, result.output
    record = read_record(json.loads(result.stdout)["files"][0])
    assert (record["steps"], record["scheduler_name"], record["edit"]["strength"]) == (4, "unipc", 0.7)
    result = runner.invoke(app, ["vary", path, "--n", "1", "--steps", "3", "--guidance", "2", "--seed", "1",
                                 "--out", str(tmp_path / "v"), "--json", *model])
    assert result.exit_code == 0, result.output
    assert read_record(json.loads(result.stdout)["files"][0])["guidance"] == 2.0

    for args, message in [(["--scheduler", "nope"], "unknown scheduler 'nope': choose one of"),
                          (["--steps", "0"], "steps must be between 1 and 1000"),
                          (["--guidance", "80"], "guidance must be between 0 and 50"),
                          (["--device", "cuda:7"], "device 'cuda:7' is not available"),
                          (["--dtype", "fp8"], "unknown dtype 'fp8'")]:
        result = runner.invoke(app, ["generate", "hills", "--out", str(tmp_path), *model, *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_cli_refuses_pipeline_settings_for_the_built_in_model(tiny_model, tmp_path):
    result = CliRunner().invoke(app, ["generate", "hills", "--model", str(tiny_model), "--steps", "20",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2 and "steps applies to diffusion pipelines" in result.output
    result = CliRunner().invoke(app, ["generate", "hills", "--model", str(tiny_model), "--device", "cpu",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2 and "device, dtype and offload apply to diffusion pipelines" in result.output


def test_the_server_takes_the_settings_from_extra_body(sd, pipelines, tmp_path, tiny_model):  # noqa: F811
    openai = pytest.importorskip("openai")

    with serving(tmp_path / "data", pipelines["t2i"], engine="diffusers") as http:
        key = http.keys["ada"]
        client = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)
        made = client.images.generate(prompt="a lake at night", response_format="b64_json",
                                      extra_body={"seed": 3, "steps": 2, "guidance": 5.0, "scheduler": "dpm++"})
        picture = base64.b64decode(made.data[0].b64_json)
        record = json.loads(Image.open(io.BytesIO(picture)).text["pixelchat"])
        assert (record["steps"], record["guidance"], record["scheduler_name"], record["seed"]) == (2, 5.0, "dpm++", 3)

        edited = client.images.edit(image=("lake.png", picture, "image/png"), prompt="a desert",
                                    extra_body={"seed": 1, "steps": 4, "scheduler": "euler", "strength": 0.5})
        record = json.loads(Image.open(io.BytesIO(base64.b64decode(edited.data[0].b64_json))).text["pixelchat"])
        assert (record["steps"], record["scheduler_name"], record["edit"]["strength"]) == (4, "euler", 0.5)
        with pytest.warns(DeprecationWarning):
            varied = client.images.create_variation(image=("lake.png", picture, "image/png"),
                                                    extra_body={"seed": 1, "steps": 3, "guidance": 2.5})
        record = json.loads(Image.open(io.BytesIO(base64.b64decode(varied.data[0].b64_json))).text["pixelchat"])
        assert (record["steps"], record["guidance"]) == (3, 2.5)

        headers = {"Authorization": f"Bearer {key}"}
        r = http.post("/v1/images/generations", headers=headers, json={"prompt": "hills", "scheduler": "nope"})
        assert r.status_code == 400 and "unknown scheduler 'nope'" in r.json()["error"]["message"]
        r = http.post("/v1/images/generations", headers=headers, json={"prompt": "hills", "steps": 5000})
        assert r.status_code == 400 and "steps must be between 1 and 1000" in r.json()["error"]["message"]
        r = http.post("/api/preview", headers=headers, json={"prompt": "hills", "seed": 1, "steps": 2,
                                                             "scheduler": "euler"})
        assert r.status_code == 200, r.text
        assert json.loads(Image.open(io.BytesIO(r.content)).text["pixelchat"])["scheduler_name"] == "euler"

    with serving(tmp_path / "gan", tiny_model) as http:
        r = http.post("/v1/images/generations", headers=http.as_user(), json={"prompt": "hills", "steps": 20})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "steps" and error["code"] == "unsupported_parameter"


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_pndm_draws_at_any_step_count(sd, steps):
    import pixelchat

    [image] = pixelchat.generate("a lake", seed=1, size=48, model=sd, steps=steps, scheduler="pndm")
    assert image.size == (48, 48) and image.info["pixelchat"]["scheduler_name"] == "pndm"
