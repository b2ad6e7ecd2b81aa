"""The Ray Serve backend: the same app and API with the engine in Serve replicas on a local Ray (one
cluster and one deployment for the whole file), a replica killed mid-request, and the retry rules."""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from conftest import CLI, free_port, start_serve
from pixelchat.server.errors import APIError
from pixelchat.server.ray_backend import settle

APP = "pixelchat-test"


def needs_ray():
    if os.environ.get("PIXELCHAT_REQUIRE_RAY") == "1":
        importlib.import_module("ray.serve")  # fails loudly
    else:
        pytest.importorskip("ray.serve")


@pytest.fixture(scope="module")
def ray_cluster():
    needs_ray()
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield ray
    from pixelchat.server import ray_backend

    ray_backend._engines.clear()
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_settings(ray_cluster, tmp_path_factory, tiny_model):
    from pixelchat.server.config import Settings

    # a generation batch holds 2 images and waits up to a minute to fill: a lone 1-image request
    # stays inside the replica until a second one comes
    return Settings(data_dir=tmp_path_factory.mktemp("ray-data"), model=str(tiny_model), secret_key="test-secret",
                    backend="ray", ray_app=APP, ray_min_replicas=1, ray_max_replicas=1, ray_num_cpus=0.5,
                    ray_max_batch_size=2, ray_batch_wait_timeout_s=60, ray_retries=3, ray_timeout_s=120, workers=2)


@pytest.fixture(scope="module")
def ray_server(ray_settings):
    from fastapi.testclient import TestClient

    from pixelchat.server.admin import create_key, create_user
    from pixelchat.server.app import create_app

    app = create_app(ray_settings)
    with app.state.sessions() as db:
        create_user(db, "ada")
        key = create_key(db, "ada")
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


def stats(deployment: str) -> dict:
    from ray import serve

    app = {"Generator": "generate", "Editor": "edit", "Describer": "describe"}[deployment]
    return serve.get_app_handle(f"{APP}-{app}").stats.remote().result(timeout_s=60)


def pixels(item: dict) -> tuple[bytes, dict]:
    image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    return image.convert("RGB").tobytes(), json.loads(image.text["pixelchat"])


def drawn_here(tiny_model, prompt: str, n: int, seed: int) -> list[bytes]:
    from pixelchat.engines import GenerateRequest, load_engine

    return [r.image.tobytes() for r in load_engine(tiny_model).generate(GenerateRequest(prompt, n=n, seed=seed))]


def unfinished_jobs(client) -> list:
    from sqlalchemy import select

    from pixelchat.server.jobs import FINAL
    from pixelchat.server.models import Job

    with client.app.state.sessions() as db:
        return db.scalars(select(Job).where(Job.status.not_in(FINAL))).all()


def test_generations_are_drawn_by_ray_replicas(ray_server, tiny_model):
    from pixelchat.server.handlers import engine_of
    from pixelchat.server.ray_backend import RayEngine

    assert isinstance(engine_of(ray_server.app.state.jobs), RayEngine)
    before = stats("Generator")
    r = ray_server.post("/v1/images/generations", json={"prompt": "hills at night", "n": 2, "seed": 5})
    assert r.status_code == 200, r.text
    drawn = [pixels(item) for item in r.json()["data"]]
    assert [p for p, _ in drawn] == drawn_here(tiny_model, "hills at night", 2, 5)
    assert [record["seed"] for _, record in drawn] == [5, 6]
    after = stats("Generator")
    assert after["replica"] == before["replica"] and after["calls"] == before["calls"] + 1
    # the replica's engine checks the request; its complaint is the usual 400
    r = ray_server.post("/v1/images/generations", json={"prompt": "hills", "negative_prompt": "boats"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "negative_prompt"
    from pixelchat.engines import load_engine

    assert ray_server.get("/v1/models").json()["data"][0]["id"] == load_engine(tiny_model).info.id


def test_edits_variations_and_descriptions_run_on_ray(ray_server):
    import numpy as np

    from pixelchat.data.scenes import render_scene, sample_attributes

    buf = io.BytesIO()
    render_scene(sample_attributes(np.random.default_rng(2), {"water": "lake"}), 32, 2).save(buf, format="PNG")
    picture = ("lake.png", buf.getvalue(), "image/png")
    editor, describer = stats("Editor"), stats("Describer")
    r = ray_server.post("/v1/images/edits", files={"image": picture}, data={"prompt": "make it night", "seed": "1"})
    assert r.status_code == 200, r.text
    assert "night" in r.json()["data"][0]["revised_prompt"]
    assert pixels(r.json()["data"][0])[1]["edit"]["instruction"] == "make it night"
    r = ray_server.post("/v1/images/variations", files={"image": picture}, data={"n": "2"})
    assert r.status_code == 200 and len(r.json()["data"]) == 2
    r = ray_server.post("/api/describe", files={"image": picture})
    assert r.status_code == 200, r.text
    assert r.json()["caption"] and set(r.json()["attributes"]) <= set(r.json()["confidence"])
    assert stats("Editor")["calls"] == editor["calls"] + 2  # the edit and the variation
    assert stats("Describer")["calls"] == describer["calls"] + 2  # the edit reads the picture first, then describe


def test_a_replica_killed_mid_request_is_replaced_and_the_request_answered(ray_server, ray_cluster, tiny_model):
    ray = ray_cluster
    first = stats("Generator")

    def post(prompt: str, seed: int):
        return ray_server.post("/v1/images/generations", json={"prompt": prompt, "n": 1, "seed": seed})

    with ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(post, "a lake at dawn", 7)
        for _ in range(600):  # until the request is inside the replica, waiting for its batch to fill
            if stats("Generator")["busy"]:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the request never reached the replica")
        [name] = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].endswith(f"#Generator#{first['replica']}")]
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
        # the second request fills the batch of the first one's retry on the new replica
        second = pool.submit(post, "a desert by day", 8)
        answers = [waiting.result(timeout=180), second.result(timeout=180)]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert pixels(answers[0].json()["data"][0])[0] == drawn_here(tiny_model, "a lake at dawn", 1, 7)[0]
    assert pixels(answers[1].json()["data"][0])[0] == drawn_here(tiny_model, "a desert by day", 1, 8)[0]
    replaced = stats("Generator")
    assert replaced["replica"] != first["replica"] and replaced["calls"] == 2
    assert unfinished_jobs(ray_server) == []
    r = ray_server.post("/v1/images/generations", json={"prompt": "snowy peaks", "n": 2})
    assert r.status_code == 200 and stats("Generator") == {**replaced, "calls": 3}


def test_pixelchat_serve_joins_a_running_cluster(ray_settings, ray_cluster, tmp_path, tiny_model):
    from pixelchat.server.admin import create_key, create_user
    from pixelchat.server.db import migrate, session_factory

    env = {**os.environ, "PIXELCHAT_DATA_DIR": str(tmp_path / "data"), "PIXELCHAT_MODEL": str(tiny_model),
           "PIXELCHAT_BACKEND": "ray", "PIXELCHAT_RAY_APP": APP,
           "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    database = f"sqlite:///{tmp_path / 'data' / 'pixelchat.db'}"
    (tmp_path / "data").mkdir()
    migrate(database)
    with session_factory(database)() as db:
        create_user(db, "ada")
        key = create_key(db, "ada")
    before = stats("Generator")
    port = free_port()
    proc = start_serve(env, port, tmp_path / "serve.log")
    try:
        import httpx

        r = httpx.post(f"http://127.0.0.1:{port}/v1/images/generations", headers={"Authorization": f"Bearer {key}"},
                       json={"prompt": "a lake", "n": 2}, timeout=120)
        assert r.status_code == 200, r.text
        assert stats("Generator")["calls"] == before["calls"] + 1  # drawn by the deployment already running
    finally:
        proc.terminate()
        proc.wait(30)
    # the flags instead of the environment; a server of another model refuses to share the deployments
    other = {name: value for name, value in env.items() if name not in ("PIXELCHAT_BACKEND", "RAY_ADDRESS")}
    other["PIXELCHAT_MODEL"] = str(tmp_path / "other.safetensors")
    out = subprocess.run([*CLI, "serve", "--port", str(free_port()), "--backend", "ray", "--ray-address",
                          env["RAY_ADDRESS"]], env=other, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "serves model" in out.stderr and "PIXELCHAT_RAY_APP" in out.stderr


# --- the retry rules, without Ray ----------------------------------------------------------------

class Died(Exception):
    """Stands for Ray's ActorDiedError."""


class Response:
    def __init__(self, outcome):
        self.outcome, self.cancelled = outcome, False

    def result(self, timeout_s):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self):
        self.cancelled = True


def sender(*outcomes):
    sent = []

    def send():
        sent.append(Response(outcomes[len(sent)]))
        return sent[-1]

    return send, sent


def test_a_call_whose_replica_died_is_sent_again():
    send, sent = sender(Died(), Died(), "pictures")
    assert settle(send, retries=2, timeout_s=5, retryable=(Died,), what="Generator.generate") == "pictures"
    assert len(sent) == 3
    send, sent = sender("pictures")
    assert settle(send, retries=1, timeout_s=5, retryable=(Died,), what="x", response=Response(Died())) == "pictures"
    assert len(sent) == 1  # the response given was the first try


def test_a_call_that_keeps_failing_or_hangs_is_a_503():
    send, sent = sender(Died(), Died(), Died(), "never")
    with pytest.raises(APIError) as failed:
        settle(send, retries=2, timeout_s=5, retryable=(Died,), what="Generator.generate")
    assert failed.value.status == 503 and failed.value.code == "engine_unavailable" and len(sent) == 3
    assert "Generator.generate" in failed.value.message and failed.value.headers["Retry-After"]
    send, sent = sender(TimeoutError(), "never")
    with pytest.raises(APIError) as slow:
        settle(send, retries=2, timeout_s=5, retryable=(Died,), what="Editor.edit")
    assert slow.value.status == 503 and "within 5 s" in slow.value.message
    assert len(sent) == 1 and sent[0].cancelled


def test_the_engines_own_errors_are_not_retried():
    send, sent = sender(ValueError("the prompt is empty"), "never")
    with pytest.raises(ValueError, match="the prompt is empty"):
        settle(send, retries=3, timeout_s=5, retryable=(Died,), what="Generator.generate")
    assert len(sent) == 1
