"""The job queue: bounded, batching, idempotent, durable across crashes, and stopping gracefully."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

pytest.importorskip("fastapi")
from conftest import cli_account, error_of, free_port, start_serve  # noqa: E402

from pixelchat.server.admin import create_user  # noqa: E402
from pixelchat.server.app import create_app  # noqa: E402
from pixelchat.server.config import Settings  # noqa: E402
from pixelchat.server.errors import APIError  # noqa: E402
from pixelchat.server.models import ImageRow, Job  # noqa: E402


def app_for(tmp_path, tiny_model, **options):
    app = create_app(Settings(data_dir=tmp_path / "data", model=str(tiny_model), secret_key="s", **options))
    with app.state.sessions() as db:
        create_user(db, "ada")
    return app


def wait_all(queue, job_ids):
    async def main():
        return await asyncio.wait_for(asyncio.gather(*(queue.wait(j) for j in job_ids)), 120)

    return asyncio.run(main())


def test_a_full_queue_refuses_at_once_and_keeps_what_it_took(tmp_path, tiny_model):
    queue = app_for(tmp_path, tiny_model, queue_size=2).state.jobs
    taken = [queue.submit(1, "generate", {"prompt": "a lake", "n": 1, "seed": i})[0].id for i in range(2)]
    with pytest.raises(APIError) as busy:
        queue.submit(1, "generate", {"prompt": "a lake", "n": 1})
    assert busy.value.status == 503 and busy.value.headers == {"Retry-After": "1"}
    queue.start()
    try:
        outcomes = wait_all(queue, taken)
    finally:
        queue.stop()
    assert [o.status for o in outcomes] == ["succeeded", "succeeded"] and queue.waiting == 0
    with pytest.raises(APIError, match="shutting down"):  # a stopped queue takes nothing new
        queue.submit(1, "generate", {"prompt": "a lake", "n": 1})


def test_waiting_generations_are_drawn_in_one_batch(tmp_path, tiny_model):
    from pixelchat.engines import GenerateRequest, load_engine

    queue = app_for(tmp_path, tiny_model, batch_images=8).state.jobs
    asked = [("a lake at night", 2, 1), ("snowy hills", 1, 2), ("a desert with a house", 3, 3), ("a forest", 4, 4)]
    ids = [queue.submit(1, "generate", {"prompt": p, "n": n, "seed": s})[0].id for p, n, s in asked]
    queue.start()
    try:
        outcomes = wait_all(queue, ids)
    finally:
        queue.stop()
    assert queue.batches == [6, 4]  # 2 + 1 + 3 together; the fourth would pass 8 images, so it went next
    engine = load_engine(tiny_model)
    for (prompt, n, seed), outcome in zip(asked, outcomes):
        alone = engine.generate(GenerateRequest(prompt, n=n, seed=seed))
        assert len(outcome.images) == n and [r["seed"] for r in outcome.records] == [a.seed for a in alone]
        assert all(np.abs(np.asarray(got, dtype=int) - np.asarray(a.image, dtype=int)).max() <= 1
                   for got, a in zip(outcome.images, alone))
        assert outcome.result["revised_prompt"] == prompt


def test_a_bad_request_in_a_batch_fails_alone(tmp_path, tiny_model):
    queue = app_for(tmp_path, tiny_model).state.jobs
    good = queue.submit(1, "generate", {"prompt": "a lake", "n": 1})[0].id
    bad = queue.submit(1, "generate", {"prompt": "a lake", "n": 1, "seed": -5})[0].id
    queue.start()
    try:
        ok, failed = wait_all(queue, [good, bad])
    finally:
        queue.stop()
    assert ok.status == "succeeded" and failed.status == "failed"
    assert failed.error["status"] == 400 and "seed" in failed.error["message"]


def test_previews_are_batched_with_generations_and_leave_nothing_behind(tmp_path, tiny_model):
    from pixelchat.engines import GenerateRequest, load_engine

    queue = app_for(tmp_path, tiny_model, batch_images=8).state.jobs
    stored = queue.submit(1, "generate", {"prompt": "a lake", "n": 2, "seed": 1})[0].id
    shown = queue.submit(1, "preview", {"prompt": "snowy hills", "n": 1, "seed": 5, "palette": ["#000000", "#ffffff"]})[0].id
    broken = queue.submit(1, "preview", {"prompt": "a lake", "n": 1, "seed": -1})[0].id
    queue.start()
    try:
        generated, previewed, failed = wait_all(queue, [stored, shown, broken])
    finally:
        queue.stop()
    assert queue.batches[0] == 4  # drawn together
    assert generated.status == previewed.status == "succeeded" and failed.status == "failed"
    assert len(generated.ids) == 2 and previewed.ids == [] and len(previewed.pngs) == 1
    # the preview is the picture that seed draws, kept to the palette, and says so in its record
    alone = load_engine(tiny_model).generate(GenerateRequest("snowy hills", n=1, seed=5))[0]
    assert previewed.records[0]["seed"] == alone.seed and previewed.records[0]["palette"] == ["#000000", "#ffffff"]
    assert set(previewed.images[0].getdata()) <= {(0, 0, 0), (255, 255, 255)}
    with queue.sessions() as db:  # only the generation's pictures were stored; no preview job is left
        assert db.query(ImageRow).count() == 2
        assert [j.kind for j in db.query(Job)] == ["generate"]


def test_the_preview_route_answers_a_png_and_refuses_what_generation_refuses(server):
    from PIL import Image
    import io

    ok = server.post("/api/preview", json={"prompt": "a lake at night", "seed": 3, "style": "noir"},
                     headers=server.as_user())
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png" and ok.headers["x-pixelchat-seed"] == "3"
    assert ok.headers["cache-control"] == "no-store"
    record = Image.open(io.BytesIO(ok.content)).info
    assert "a lake at night" in record["parameters"]
    assert server.get("/api/images", headers=server.as_user()).json()["data"] == []  # not stored
    assert error_of(server.post("/api/preview", json={"prompt": "a lake", "palette": ["red"]},
                                headers=server.as_user()), 400)["param"] == "palette.0"  # the colour at fault
    assert error_of(server.post("/api/preview", json={"prompt": "a lake", "style": "nope"},
                                headers=server.as_user()), 400)["param"] == "style"
    assert server.post("/api/preview", json={"prompt": "a lake"}).status_code == 401


def test_a_restart_runs_interrupted_jobs_once(tmp_path, tiny_model):
    app = app_for(tmp_path, tiny_model)
    first = app.state.jobs
    interrupted = first.submit(1, "generate", {"prompt": "a lake", "n": 2, "seed": 1})[0].id
    hopeless = first.submit(1, "generate", {"prompt": "a lake", "n": 1})[0].id
    with app.state.sessions() as db:  # as a crash leaves them: running, never finished
        db.get(Job, interrupted).status, db.get(Job, interrupted).attempts = "running", 1
        db.get(Job, hopeless).status, db.get(Job, hopeless).attempts = "running", 3
        db.commit()
    restarted = create_app(app.state.settings).state.jobs  # a new process on the same data
    restarted.start()
    try:
        done, given_up = wait_all(restarted, [interrupted, hopeless])
    finally:
        restarted.stop()
    assert done.status == "succeeded" and len(done.ids) == 2
    assert given_up.status == "failed" and given_up.error["code"] == "interrupted"
    with app.state.sessions() as db:
        assert db.get(Job, interrupted).attempts == 2
        assert db.query(ImageRow).count() == 2  # the interrupted job's two pictures, stored once


def test_idempotency_keys(server):
    post = lambda body, key: server.post("/v1/images/generations", json=body,  # noqa: E731
                                         headers={**server.as_user(), "Idempotency-Key": key})
    a = post({"prompt": "a lake", "n": 2}, "k1")
    b = post({"prompt": "a lake", "n": 2}, "k1")
    assert a.status_code == b.status_code == 200
    assert [d["id"] for d in a.json()["data"]] == [d["id"] for d in b.json()["data"]]  # one job, same answer
    assert a.json()["data"][0]["b64_json"] == b.json()["data"][0]["b64_json"]
    assert error_of(post({"prompt": "a desert", "n": 2}, "k1"), 409)["code"] == "idempotency_key_reused"
    assert post({"prompt": "a lake", "n": 2}, "k2").json()["data"][0]["id"] != a.json()["data"][0]["id"]
    other = server.post("/v1/images/generations", json={"prompt": "a lake", "n": 2},
                        headers={**server.as_user("bob"), "Idempotency-Key": "k1"})
    assert other.status_code == 200 and other.json()["data"][0]["id"] != a.json()["data"][0]["id"]  # keys are per user
    jobs = server.get("/api/jobs", headers=server.as_user()).json()["data"]
    assert len(jobs) == 2
    sid = server.post("/api/sessions", headers=server.as_user(), json={}).json()["id"]
    turns = [server.post(f"/api/sessions/{sid}/messages", json={"text": "a lake"},
                         headers={**server.as_user(), "Idempotency-Key": "t1"}).json() for _ in range(2)]
    assert turns[0] == turns[1]
    assert len(server.get(f"/api/sessions/{sid}", headers=server.as_user()).json()["nodes"]) == 1  # said once


class HangingLLM(BaseHTTPRequestHandler):
    """A language model that takes the request and then never answers (until released)."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.hit.set()
        self.server.release.wait(60)
        body = b'{"choices": [{"message": {"content": "{}"}}]}'
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def hanging_llm(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), HangingLLM)
    httpd.daemon_threads, httpd.block_on_close = True, False
    httpd.hit, httpd.release = threading.Event(), threading.Event()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()


def test_stopping_finishes_the_running_job_and_keeps_the_queued_one(tmp_path, tiny_model, hanging_llm, monkeypatch):
    monkeypatch.setenv("PIXELCHAT_LLM_URL", f"http://127.0.0.1:{hanging_llm.server_port}/v1")
    monkeypatch.setenv("PIXELCHAT_LLM_MODEL", "test")
    app = app_for(tmp_path, tiny_model)
    from fastapi.testclient import TestClient

    from pixelchat.server.admin import create_key

    with app.state.sessions() as db:
        key = create_key(db, "ada")
    headers = {"Authorization": f"Bearer {key}", "Prefer": "respond-async"}
    with TestClient(app) as client:
        sid = client.post("/api/sessions", headers=headers, json={}).json()["id"]
        client.post(f"/api/sessions/{sid}/messages", headers={"Authorization": headers["Authorization"]},
                    json={"text": "a lake by day"})
        running = client.post(f"/api/sessions/{sid}/messages", headers=headers, json={"text": "add a boat"}).json()["id"]
        queued = client.post(f"/api/sessions/{sid}/messages", headers=headers, json={"text": "make it night"}).json()["id"]
        assert hanging_llm.hit.wait(60)  # the turn is running, waiting for the language model
        threading.Timer(0.5, hanging_llm.release.set).start()
    # leaving the block shut the app down: the running turn finished, the queued one waits for the next start
    with app.state.sessions() as db:
        assert db.get(Job, running).status == "succeeded"
        assert db.get(Job, queued).status == "queued"


def test_killing_the_server_mid_job_loses_nothing(tmp_path, tiny_model, hanging_llm):
    httpx = pytest.importorskip("httpx")
    env = {**os.environ, "PIXELCHAT_DATA_DIR": str(tmp_path / "data"), "PIXELCHAT_MODEL": str(tiny_model),
           "PIXELCHAT_LLM_URL": f"http://127.0.0.1:{hanging_llm.server_port}/v1", "PIXELCHAT_LLM_MODEL": "test",
           "PIXELCHAT_LLM_TIMEOUT": "120"}
    key = cli_account(env, "ada")
    port = free_port()
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    log = tmp_path / "serve.log"

    proc = start_serve(env, port, log)
    try:
        sid = httpx.post(f"{base}/api/sessions", headers=headers, json={}).json()["id"]
        first = httpx.post(f"{base}/api/sessions/{sid}/messages", headers=headers, json={"text": "a lake by day"},
                           timeout=60)
        assert first.status_code == 200, first.text
        job = httpx.post(f"{base}/api/sessions/{sid}/messages", json={"text": "add a boat"},
                         headers={**headers, "Prefer": "respond-async"}).json()["id"]
        assert hanging_llm.hit.wait(60)  # mid-job: the turn waits on the language model
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc = start_serve({k: v for k, v in env.items() if not k.startswith("PIXELCHAT_LLM")}, port, log)  # restart
        for _ in range(600):
            status = httpx.get(f"{base}/api/jobs/{job}", headers=headers).json()
            if status["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        assert status["status"] == "succeeded" and len(status["result"]["images"]) == 1
        tree = httpx.get(f"{base}/api/sessions/{sid}", headers=headers).json()
        assert len(tree["nodes"]) == 2 and tree["nodes"][-1]["message"] == "add a boat"  # completed once
        images = httpx.get(f"{base}/api/images", headers=headers).json()["data"]
        assert len(images) == 2
    finally:
        proc.kill()
        proc.wait(30)
