"""Shared fixtures: a tiny real model trained for a few steps on exported scenes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pixelchat.data.export import export_scenes
from pixelchat.train import train

TINY_MODEL = {"ngf": 4, "ndf": 4, "max_channels": 16}
TINY_TRAIN = {"batch_size": 4, "checkpoint_every": 2, "sample_every": 2, "log_every": 1}


@pytest.fixture(scope="session")
def scenes_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    export_scenes(out, 12, 32, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, scenes_folder):
    """A run folder holding a tiny text GAN trained 3 steps on the exported folder (32 px)."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    train(str(scenes_folder), arch="textgan", size=32, out=out, steps=3, model_options=TINY_MODEL,
          train_options=TINY_TRAIN)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_run):
    return tiny_run / "model.safetensors"


@pytest.fixture(scope="session")
def tiny_judge(tmp_path_factory):
    """A judge trained for a few seconds: real code path, meaningless accuracy."""
    from pixelchat.evaluation.judge import JudgeConfig, train_judge

    out = tmp_path_factory.mktemp("judge") / "judge"
    return train_judge(out, n_train=200, n_test=40, minutes=0.03, batch_size=16, cfg=JudgeConfig(width=4),
                       progress=False)


@pytest.fixture(scope="session")
def tiny_describer(tmp_path_factory):
    """A describer trained for a few seconds: real code path, meaningless accuracy."""
    from pixelchat.vision.describer import DescriberConfig, train_describer

    out = tmp_path_factory.mktemp("describer") / "describer"
    cfg = DescriberConfig(size=32, width=4, d_model=16, layers=1, heads=2, max_words=12)
    return train_describer(out, n_train=120, n_test=20, minutes=0.02, batch_size=8, cfg=cfg, progress=False)


@pytest.fixture(scope="session")
def tiny_inverter(tmp_path_factory, tiny_model):
    from pixelchat.vision.inversion import train_inverter

    out = tmp_path_factory.mktemp("inverter") / "inverter"
    return train_inverter(tiny_model, out, minutes=0.05, batch_size=8, n_captions=8, n_test=8, width=4, progress=False)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model, tiny_describer, tiny_inverter):
    from pixelchat.engines import GANEngine

    return GANEngine(tiny_model, describer=tiny_describer, inverter=tiny_inverter)


def error_of(response, status: int) -> dict:
    """The OpenAI-shaped error of ``response``, after checking its status and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.fixture
def server(tmp_path, tiny_model):
    """The app in-process on the tiny model, with users ada (password 'correct horse'), bob and cy, each
    with an API key: ``server.as_user("bob")`` gives the headers."""
    from fastapi.testclient import TestClient

    from pixelchat.server.admin import create_key, create_user
    from pixelchat.server.app import create_app
    from pixelchat.server.config import Settings

    settings = Settings(data_dir=tmp_path / "data", model=str(tiny_model), secret_key="test-secret")
    app = create_app(settings)
    with app.state.sessions() as db:
        create_user(db, "ada", "correct horse")
        create_user(db, "bob", "battery staple")
        create_user(db, "cy")
        keys = {name: create_key(db, name) for name in ("ada", "bob", "cy")}
    with TestClient(app) as client:
        client.keys = keys
        client.as_user = lambda who="ada": {"Authorization": f"Bearer {keys[who]}"}
        yield client


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLI = [sys.executable, "-m", "pixelchat.cli"]


def cli_account(env: dict, name: str) -> str:
    """A server account made with `pixelchat users create`, and its new API key."""
    subprocess.run([*CLI, "users", "create", name], env=env, check=True, capture_output=True)
    out = subprocess.run([*CLI, "keys", "create", name, "--json"], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["key"]


def start_serve(env: dict, port: int, log: Path) -> subprocess.Popen:
    """`pixelchat serve` on ``port``, once it answers /health (its output goes to ``log``)."""
    import httpx

    with open(log, "ab") as out:
        proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                pytest.fail(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.1)
    proc.kill()
    pytest.fail("the server did not start in time")
