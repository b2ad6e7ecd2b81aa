"""What keeps the server's per-request work small, and the behaviour it must keep: API keys remembered
for a moment (forgotten at once on revoke or delete), job rows written in groups (every one on disk
before its answer), batches stored on a finishing thread (the same bytes, while the next one draws)."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import pytest

pytest.importorskip("fastapi")
from conftest import error_of  # noqa: E402
from sqlalchemy import event, select, update  # noqa: E402

from pixelchat.server.admin import create_user, delete_user, revoke_key  # noqa: E402
from pixelchat.server.app import create_app  # noqa: E402
from pixelchat.server.config import Settings  # noqa: E402
from pixelchat.server.db import get_engine  # noqa: E402
from pixelchat.server.keycache import KeyCache, KnownKey  # noqa: E402
from pixelchat.server.models import ApiKey, ImageRow, Job, User  # noqa: E402


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lookups(monkeypatch) -> list[int]:
    """Counts the database lookups of a signed-in caller."""
    import pixelchat.server.deps as deps

    calls, authenticate = [], deps.authenticate

    def counted(request, db):
        calls.append(1)
        return authenticate(request, db)

    monkeypatch.setattr(deps, "authenticate", counted)
    return calls


# --- the key cache ---------------------------------------------------------------------------------

def test_a_key_seen_a_moment_ago_needs_no_lookup_until_its_time_runs_out(server, monkeypatch):
    calls, clock = lookups(monkeypatch), Clock()
    server.app.state.keys.clock = clock
    for _ in range(3):
        assert server.get("/api/me", headers=server.as_user("bob")).json()["name"] == "bob"
    assert len(calls) == 1
    clock.now += server.app.state.settings.auth_cache_s + 0.1
    assert server.get("/api/me", headers=server.as_user("bob")).status_code == 200
    assert len(calls) == 2


def test_a_key_revoked_through_the_api_is_refused_at_once(server):
    headers = server.as_user("bob")
    spare = server.post("/api/keys", headers=headers, json={"name": "spare"}).json()
    spare_headers = {"Authorization": f"Bearer {spare['key']}"}
    assert server.get("/api/me", headers=spare_headers).status_code == 200  # remembered now
    assert server.delete(f"/api/keys/{spare['id']}", headers=headers).status_code == 204
    assert error_of(server.get("/api/me", headers=spare_headers), 401)["code"] == "invalid_api_key"
    assert server.get("/api/me", headers=headers).status_code == 200  # the user's other key still signs in


def test_a_key_revoked_or_a_user_deleted_in_this_process_is_refused_at_once(server):
    for who in ("bob", "cy"):
        assert server.get("/api/me", headers=server.as_user(who)).status_code == 200
    with server.app.state.sessions() as db:
        revoke_key(db, "bob", server.keys["bob"])
        delete_user(db, "cy", server.app.state.store, server.app.state.jobs.uploads)
    assert error_of(server.get("/api/me", headers=server.as_user("bob")), 401)["code"] == "invalid_api_key"
    assert error_of(server.get("/api/me", headers=server.as_user("cy")), 401)["code"] == "invalid_api_key"
    assert server.get("/api/me", headers=server.as_user("ada")).status_code == 200


def test_a_revoke_by_another_process_holds_within_the_cache_time(server):
    clock = Clock()
    server.app.state.keys.clock = clock
    assert server.get("/api/me", headers=server.as_user("bob")).status_code == 200
    with server.app.state.sessions() as db:  # as `pixelchat keys revoke` from a shell writes it
        db.execute(update(ApiKey).where(ApiKey.user_id == db.scalar(select(User.id).where(User.name == "bob")))
                   .values(revoked=ApiKey.created))
        db.commit()
    assert server.get("/api/me", headers=server.as_user("bob")).status_code == 200  # still remembered
    clock.now += server.app.state.settings.auth_cache_s + 0.1
    assert error_of(server.get("/api/me", headers=server.as_user("bob")), 401)["code"] == "invalid_api_key"


def test_no_cache_time_means_a_lookup_every_request(tmp_path, tiny_model, monkeypatch):
    from fastapi.testclient import TestClient

    from pixelchat.server.admin import create_key

    app = create_app(Settings(data_dir=tmp_path / "data", model=str(tiny_model), secret_key="s", auth_cache_s=0))
    with app.state.sessions() as db:
        create_user(db, "ada")
        key = create_key(db, "ada")
    calls = lookups(monkeypatch)
    with TestClient(app) as client:
        for _ in range(3):
            assert client.get("/api/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert len(calls) == 3 and len(app.state.keys) == 0


def test_a_lookup_that_raced_a_revoke_is_not_remembered():
    cache, known = KeyCache(60), KnownKey(1, 7, "ada", None, None)
    before = cache.generation  # a lookup starts reading the database ...
    cache.drop(key_hash="h")  # ... the key is revoked meanwhile ...
    cache.put("h", known, before)  # ... and its answer, read before the revoke, comes back
    assert cache.get("h") is None
    cache.put("h", known, cache.generation)
    assert cache.get("h") == known
    cache.drop(user_id=7)
    assert cache.get("h") is None


def test_the_cache_holds_a_bounded_number_of_keys():
    cache = KeyCache(60, max_keys=3)
    for i in range(5):
        cache.put(f"h{i}", KnownKey(i, i, f"u{i}", None, None), cache.generation)
    assert len(cache) == 3 and cache.get("h0") is None and cache.get("h4") is not None


# --- job rows written in groups --------------------------------------------------------------------

def app_for(tmp_path, tiny_model, **options):
    app = create_app(Settings(data_dir=tmp_path / "data", model=str(tiny_model), secret_key="s", **options))
    with app.state.sessions() as db:
        create_user(db, "ada")
    return app


def count_commits(app) -> list[int]:
    commits = []
    event.listen(get_engine(app.state.settings.database), "commit", lambda conn: commits.append(1))
    return commits


def test_rows_submitted_together_are_written_in_one_transaction_and_all_kept(tmp_path, tiny_model):
    app = app_for(tmp_path, tiny_model)
    queue, commits = app.state.jobs, count_commits(app)
    results, threads = {}, []

    def submit(i: int) -> None:
        results[i] = queue.submit(1, "generate", {"prompt": "a lake", "n": 1, "seed": i})[0].id

    with queue._write:  # the first submitter waits for the database here, with its row in hand ...
        threads.append(threading.Thread(target=submit, args=(0,)))
        threads[0].start()
        deadline = time.monotonic() + 30
        while not queue._leader and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(1, 6):  # ... while five more arrive
            threads.append(threading.Thread(target=submit, args=(i,)))
            threads[-1].start()
        while len(queue._rows) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(queue._rows) == 5
    for t in threads:
        t.join(30)
    assert len(commits) == 2  # the first row alone, then the five that waited, together
    with app.state.sessions() as db:
        rows = db.scalars(select(Job).where(Job.id.in_(results.values()))).all()
    assert sorted(r.payload["seed"] for r in rows) == list(range(6)) and {r.status for r in rows} == {"queued"}
    assert queue.waiting == 6


def test_a_reused_key_in_a_group_fails_alone(tmp_path, tiny_model):
    from pixelchat.server.jobs import _Row

    app = app_for(tmp_path, tiny_model)
    queue = app.state.jobs
    first, _ = queue.submit(1, "generate", {"prompt": "a lake", "n": 1}, idempotency_key="k", fingerprint="f")

    def row(key: str | None, seed: int) -> _Row:
        return _Row(Job(id=f"{seed:032x}", user_id=1, kind="generate", status="queued", payload={"seed": seed},
                        progress=0.0, attempts=0, idempotency_key=key, owner=queue.owner))

    group = [row(None, 1), row("k", 2), row(None, 3)]
    queue._write_rows(group)
    assert [r.committed for r in group] == [True, False, True] and group[1].error is not None
    with app.state.sessions() as db:
        kept = set(db.scalars(select(Job.id)))
    assert kept == {first.id, group[0].job.id, group[2].job.id}
    again, new = queue.submit(1, "generate", {"prompt": "a lake", "n": 1}, idempotency_key="k", fingerprint="f")
    assert again.id == first.id and not new


def test_every_answered_job_is_on_disk_with_its_pictures_when_answered(tmp_path, tiny_model):
    app = app_for(tmp_path, tiny_model)
    queue, sessions = app.state.jobs, app.state.sessions
    ids = [queue.submit(1, "generate", {"prompt": "hills", "n": 2, "seed": i})[0].id for i in range(6)]

    def on_disk(job_id: str) -> tuple[str, int]:
        with sessions() as db:
            job = db.get(Job, job_id)
            images = db.scalars(select(ImageRow.id).where(ImageRow.id.in_(job.result["images"]))).all()
        return job.status, len(images)

    async def main():
        async def answered(job_id):
            outcome = await queue.wait(job_id)
            return outcome, on_disk(job_id)  # read the moment the waiter is answered

        return await asyncio.wait_for(asyncio.gather(*(answered(j) for j in ids)), 120)

    queue.start()
    try:
        answers = asyncio.run(main())
    finally:
        queue.stop()
    assert [outcome.status for outcome, _ in answers] == ["succeeded"] * 6
    assert [disk for _, disk in answers] == [("succeeded", 2)] * 6


# --- storing on a finishing thread -------------------------------------------------------------------

def test_pictures_stored_off_the_worker_are_the_bytes_the_encoder_makes(server):
    from pixelchat.imagefiles import png_bytes

    r = server.post("/v1/images/generations", headers=server.as_user(), json={"prompt": "a lake", "n": 2, "seed": 3})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json" and r.headers["x-content-type-options"] == "nosniff"
    data = r.json()["data"]
    assert len({item["id"] for item in data}) == 2
    for item in data:  # what was answered is what was stored
        stored = server.get(f"/api/images/{item['id']}/file", headers=server.as_user()).content
        assert base64.b64decode(item["b64_json"]) == stored
    queue = server.app.state.jobs
    job, _ = queue.submit(1, "generate", {"prompt": "a lake", "n": 1, "seed": 9})
    outcome = asyncio.run(asyncio.wait_for(queue.wait(job.id), 60))
    # encoded on a finishing thread: the very bytes the encoder makes of the picture drawn and its record
    assert outcome.pngs[0] == png_bytes(outcome.images[0], outcome.records[0])
    with server.app.state.sessions() as db:
        sha = db.get(ImageRow, outcome.ids[0]).sha256
    assert server.app.state.store.get(sha) == outcome.pngs[0]


def test_the_worker_draws_the_next_batch_while_one_is_stored(tmp_path, tiny_model, monkeypatch):
    import pixelchat.imagefiles as imagefiles

    app = app_for(tmp_path, tiny_model)
    queue = app.state.jobs
    release, blocked, encode = threading.Event(), threading.Event(), imagefiles.png_bytes

    def slow_png(image, record):
        if record.get("seed") == 100:  # the first job's picture waits to be stored
            blocked.set()
            assert release.wait(60)
        return encode(image, record)

    monkeypatch.setattr(imagefiles, "png_bytes", slow_png)
    first, _ = queue.submit(1, "generate", {"prompt": "a lake", "n": 1, "seed": 100})
    queue.start()
    try:
        assert blocked.wait(60)
        second, _ = queue.submit(1, "generate", {"prompt": "a lake", "n": 1, "seed": 200})

        async def both():
            waiting_first = asyncio.ensure_future(queue.wait(first.id))
            done = await asyncio.wait_for(queue.wait(second.id), 60)  # drawn and stored meanwhile
            assert not waiting_first.done()
            release.set()
            return done, await asyncio.wait_for(waiting_first, 60)

        done_second, done_first = asyncio.run(both())
    finally:
        release.set()
        queue.stop()
    assert done_second.status == done_first.status == "succeeded"
    with app.state.sessions() as db:
        assert {j.status for j in db.scalars(select(Job))} == {"succeeded"}


def test_stopping_stores_the_batches_drawn(tmp_path, tiny_model, monkeypatch):
    import pixelchat.imagefiles as imagefiles

    app = app_for(tmp_path, tiny_model)
    queue = app.state.jobs
    blocked, encode = threading.Event(), imagefiles.png_bytes

    def slow_png(image, record):
        blocked.set()
        time.sleep(0.5)
        return encode(image, record)

    monkeypatch.setattr(imagefiles, "png_bytes", slow_png)
    job, _ = queue.submit(1, "generate", {"prompt": "a lake", "n": 1, "seed": 1})
    queue.start()
    assert blocked.wait(60)
    queue.stop()  # while the picture is being stored
    with app.state.sessions() as db:
        row = db.get(Job, job.id)
        assert row.status == "succeeded" and db.scalar(select(ImageRow.id).where(ImageRow.id.in_(row.result["images"])))


def test_a_runtime_other_than_eager_is_prepared_before_the_first_request(tmp_path, tiny_model, monkeypatch):
    from fastapi.testclient import TestClient

    from pixelchat.engines import load_engine
    from pixelchat.engines.runtime import RuntimeUnavailable, check_available

    try:
        check_available("int8")
    except RuntimeUnavailable:
        pytest.skip("the int8 runtime is not installed here")
    monkeypatch.setenv("PIXELCHAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIXELCHAT_RUNTIME", "int8")
    app = create_app(Settings(data_dir=tmp_path / "data", model=str(tiny_model), secret_key="s"))
    with TestClient(app):
        engine = load_engine(str(tiny_model))
        assert engine.runtime == "int8" and "generator" in engine._prepared  # quantized during the start
        assert list((tmp_path / "cache" / "runtime").glob("*-int8-*.onnx"))
