"""One user must not be able to take the server from everyone else: event streams hold no database
connection and are capped, access is checked on every event, sign-ins are throttled and hashed a few
at a time, uploads are decoded small and a few at a time, limits are per user, and the schema says
what the server enforces."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time

import pytest

pytest.importorskip("fastapi")

from PIL import Image  # noqa: E402
from sqlalchemy import select  # noqa: E402

from conftest import error_of  # noqa: E402
from pixelchat.server.admin import create_key, create_user  # noqa: E402
from pixelchat.server.app import create_app  # noqa: E402
from pixelchat.server.config import Settings  # noqa: E402
from pixelchat.server.errors import APIError  # noqa: E402
from pixelchat.server.models import Job, User, Vote  # noqa: E402


@pytest.fixture
def fast_heartbeat(monkeypatch):
    """Streams send a keep-alive every 0.1 s, so a reader checks its deadline often."""
    from pixelchat.server import events

    monkeypatch.setattr(events, "HEARTBEAT_S", 0.1)


class EventReader:
    """Server-sent events of a streamed response, failing instead of hanging. Keep it while the stream
    should stay open: dropping its line iterator closes the response."""

    def __init__(self, response, seconds: float = 10.0):
        self.lines, self.seconds = response.iter_lines(), seconds

    def next(self) -> dict | None:
        """The next event, or None when the stream has ended."""
        deadline = time.monotonic() + self.seconds
        for line in self.lines:
            if line.startswith("data: "):
                return json.loads(line[len("data: "):])
            assert time.monotonic() < deadline, f"no event within {self.seconds} s"
        return None


def make_client(tmp_path, tiny_model, users=("ada", "bob"), **options):
    """An app with these options and users, each with an API key; returns the TestClient (not started)."""
    from fastapi.testclient import TestClient

    app = create_app(Settings(data_dir=tmp_path / "data", model=str(tiny_model), secret_key="s", **options))
    with app.state.sessions() as db:
        keys = {}
        for name in users:
            create_user(db, name, "correct horse")
            keys[name] = create_key(db, name)
    client = TestClient(app)
    client.as_user = lambda who="ada": {"Authorization": f"Bearer {keys[who]}"}
    return client


def pending_job(server, who="ada") -> str:
    """A queued job of ``who``'s that another (live) process holds: it stays queued while the test runs."""
    from datetime import timedelta

    from pixelchat.server.jobs import utcnow

    with server.app.state.sessions() as db:
        user_id = db.scalar(select(User.id).where(User.name == who))
        job = Job(id="j" * 32, user_id=user_id, kind="generate", status="queued", payload={"prompt": "a lake"},
                  owner="elsewhere:1:x", lease_until=utcnow() + timedelta(hours=1))
        db.add(job)
        db.commit()
    return job.id


def refused(client, url: str, headers: dict):
    """The error of a stream request expected to be refused; a stream that opens instead fails the test
    (closed at once, not read forever)."""
    with client.stream("GET", url, headers=headers) as r:
        assert r.status_code == 429, "the stream was not refused"
        r.read()
        return r


def until(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- 1. event streams hold no database connection, and are capped ---------------------------------------------

def test_event_streams_hold_no_database_connection(server, fast_heartbeat):
    from pixelchat.server.db import get_engine

    pool = get_engine(server.app.state.settings.database).pool
    session_id = server.post("/api/sessions", headers=server.as_user(), json={}).json()["id"]
    job_id = pending_job(server)
    idle = pool.checkedout()
    with server.stream("GET", f"/api/sessions/{session_id}/events", headers=server.as_user()) as a, \
            server.stream("GET", f"/api/jobs/{job_id}/events", headers=server.as_user()) as b:
        session_events, job_events = EventReader(a), EventReader(b)
        assert session_events.next()["type"] == "hello" and job_events.next()["status"] == "queued"
        assert pool.checkedout() == idle  # no connection held for them
        assert server.app.state.streams.count() == 2  # while both are open
        assert server.get("/api/me", headers=server.as_user("bob")).status_code == 200


def test_open_streams_are_capped_per_user_and_per_server(tmp_path, tiny_model, fast_heartbeat):
    with make_client(tmp_path, tiny_model, users=("ada", "bob", "cy"), streams_per_user=2, streams_total=3) as client:
        sessions = {who: client.post("/api/sessions", headers=client.as_user(who), json={}).json()["id"]
                    for who in ("ada", "bob", "cy")}
        url = lambda who: f"/api/sessions/{sessions[who]}/events"  # noqa: E731
        streams = client.app.state.streams
        with client.stream("GET", url("ada"), headers=client.as_user("ada")) as one, \
                client.stream("GET", url("ada"), headers=client.as_user("ada")) as two:
            open_ones = [EventReader(one), EventReader(two)]
            assert [reader.next()["type"] for reader in open_ones] == ["hello", "hello"]
            third = refused(client, url("ada"), client.as_user("ada"))
            err = error_of(third, 429)
            assert err["code"] == "too_many_streams" and third.headers["retry-after"] == "5"
            with client.stream("GET", url("bob"), headers=client.as_user("bob")) as bobs:
                bob_reads = EventReader(bobs)
                assert bob_reads.next()["type"] == "hello"  # another user still gets one
                assert error_of(refused(client, url("cy"), client.as_user("cy")), 429)["code"] == "too_many_streams"
            assert until(lambda: streams.count() == 2)  # bob's closed: its place is free again
            with client.stream("GET", url("cy"), headers=client.as_user("cy")) as cys:
                assert EventReader(cys).next()["type"] == "hello"
            assert until(lambda: streams.count() == 2)  # ada's two, still open
        assert until(lambda: streams.count() == 0)


def test_a_refused_or_failed_stream_keeps_no_place(server):
    streams = server.app.state.streams
    assert error_of(server.get("/api/sessions/nope/events", headers=server.as_user()), 404)
    assert error_of(server.get("/api/jobs/nope/events", headers=server.as_user()), 404)
    assert streams.count() == 0 and server.app.state.events._subs == {}


# --- 2. sign-ins: throttled, a few password checks at a time, constant work -------------------------------------

def test_sign_in_attempts_are_throttled_per_account_and_per_address(tmp_path, tiny_model, monkeypatch):
    from fastapi.testclient import TestClient

    from pixelchat.server import security

    hashed = []
    real = security._hasher

    class Spy:
        def verify(self, hash, password):
            hashed.append(hash)
            return real.verify(hash, password)

    with make_client(tmp_path, tiny_model, login_attempts_per_minute=1, login_attempts_burst=3) as client:
        monkeypatch.setattr(security, "_hasher", Spy())
        wrong = {"name": "ada", "password": "wrong horse"}
        assert [client.post("/api/login", json=wrong).status_code for _ in range(3)] == [401] * 3
        refused = client.post("/api/login", json={"name": "ada", "password": "correct horse"})
        err = error_of(refused, 429)
        assert err["code"] == "rate_limit_exceeded" and int(refused.headers["retry-after"]) >= 1
        assert len(hashed) == 3  # the refused attempt cost no password check
        # the account is throttled from any address
        elsewhere = TestClient(client.app, client=("203.0.113.7", 40000))
        assert error_of(elsewhere.post("/api/login", json={"name": "ada", "password": "correct horse"}), 429)
        # and an address is throttled whatever names it tries; another address signs in bob
        assert error_of(client.post("/api/login", json={"name": "bob", "password": "correct horse"}), 429)
        assert elsewhere.post("/api/login", json={"name": "bob", "password": "correct horse"}).status_code == 200
        assert client.get("/api/me", headers=client.as_user()).status_code == 200  # keys are not throttled


def test_password_checks_run_a_few_at_a_time(tmp_path, tiny_model, monkeypatch):
    from pixelchat.server import security

    running, most = [0], [0]
    lock = threading.Lock()
    real = security._hasher

    class Slow:
        def verify(self, hash, password):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.3)
            with lock:
                running[0] -= 1
            return real.verify(hash, password)

    with make_client(tmp_path, tiny_model, login_concurrency=2) as client:
        monkeypatch.setattr(security, "_hasher", Slow())
        statuses = []

        def attempt(i):
            statuses.append(client.post("/api/login", json={"name": f"user{i}", "password": "a password"}).status_code)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        health = []
        while any(t.is_alive() for t in threads):
            started = time.monotonic()
            assert client.get("/health").status_code == 200
            health.append(time.monotonic() - started)
        for t in threads:
            t.join()
    assert sorted(statuses) == [401] * 6 and most[0] == 2
    assert max(health) < 1.0  # the waiting sign-ins hold no thread the rest of the server needs


def test_every_failed_sign_in_costs_one_check_with_the_hashers_parameters(monkeypatch):
    from argon2 import extract_parameters

    from pixelchat.server import security

    assert extract_parameters(security.dummy_hash()) == extract_parameters(security._hasher.hash("x" * 12))
    checked = []
    real = security._hasher

    class Spy:
        def verify(self, hash, password):
            checked.append(extract_parameters(hash))
            return real.verify(hash, password)

    monkeypatch.setattr(security, "_hasher", Spy())
    stored = real.hash("correct horse")
    for password_hash, password in [(None, "correct horse"), ("", "x"), (stored, "wrong horse")]:
        assert not security.verify_password(password_hash, password)
    assert checked == [extract_parameters(stored)] * 3


# --- 3. uploads: decoded at the working size, a few at a time, off the event loop --------------------------------

def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_small_file_declaring_many_pixels_is_decoded_at_the_working_size(fmt):
    from pixelchat.server.uploads import WORK_SIDE, Limits, decode_image

    big = Image.new("RGB", (4096, 3072), (30, 120, 200))
    data = encoded(big, fmt, **({"quality": 50} if fmt != "PNG" else {}))
    assert len(data) < 512 * 1024  # inside the byte limit by far
    picture = decode_image(data)
    assert picture.size == (WORK_SIDE, WORK_SIDE * 3 // 4) and picture.mode == "RGB"
    r, g, b = picture.getpixel((500, 400))
    assert abs(r - 30) < 6 and abs(g - 120) < 6 and abs(b - 200) < 6
    assert decode_image(data, limits=Limits(work_side=None)).size == (4096, 3072)  # full size only when asked


def test_an_image_and_its_mask_shrink_alike():
    from pixelchat.imagefiles import mask_array
    from pixelchat.server.uploads import decode_image

    picture = decode_image(encoded(Image.new("RGB", (3000, 2000), "white"), "PNG"))
    mask = Image.new("RGBA", (3000, 2000), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 1500, 2000))  # the left half may change
    shrunk = decode_image(encoded(mask, "PNG"), param="mask", mode="RGBA")
    assert shrunk.size == picture.size == (1024, 683)
    m = mask_array(shrunk, picture.size)
    assert m[:, :500].min() == 1.0 and m[:, -500:].max() == 0.0


def test_uploads_are_decoded_a_few_at_a_time_off_the_event_loop(monkeypatch):
    from pixelchat.server import uploads
    from pixelchat.server.ratelimit import Gate

    running, most = [0], [0]
    lock = threading.Lock()

    def slow_decode(data, **options):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.3)  # the thread sleeps; the event loop must not
        with lock:
            running[0] -= 1
        return Image.new("RGB", (8, 8))

    monkeypatch.setattr(uploads, "decode_image", slow_decode)

    class Upload:
        def __init__(self):
            self.data = encoded(Image.new("RGB", (8, 8)), "PNG")

        async def read(self, n):
            data, self.data = self.data[:n], self.data[n:]
            return data

    async def main():
        gate, gaps = Gate(2, 64, "uploads"), []

        async def ticker():
            while True:
                started = time.monotonic()
                await asyncio.sleep(0.01)
                gaps.append(time.monotonic() - started)

        tick = asyncio.create_task(ticker())
        pictures = await asyncio.gather(*(uploads.read_picture(Upload(), param="image", gate=gate) for _ in range(6)))
        tick.cancel()
        return pictures, max(gaps)

    pictures, worst_gap = asyncio.run(main())
    assert len(pictures) == 6 and most[0] == 2 and worst_gap < 0.2


def test_describe_decodes_an_upload_at_the_working_size(server, monkeypatch):
    from pixelchat.server.uploads import WORK_SIDE

    queue, sizes = server.app.state.jobs, []
    submit = queue.submit

    def spy(*args, files=None, **kwargs):
        sizes.extend(image.size for image in (files or {}).values())
        return submit(*args, files=files, **kwargs)

    monkeypatch.setattr(queue, "submit", spy)
    data = encoded(Image.new("RGB", (4096, 4096), (90, 160, 60)), "PNG")
    r = server.post("/api/describe", headers=server.as_user(), files={"image": ("big.png", data, "image/png")})
    assert r.status_code == 200, r.text
    assert sizes == [(WORK_SIDE, WORK_SIDE)]


# --- 4. revoked access stops an open stream ----------------------------------------------------------------------

def shared_session(server) -> tuple[str, str]:
    room_id = server.post("/api/rooms", headers=server.as_user(), json={"name": "studio"}).json()["id"]
    added = server.post(f"/api/rooms/{room_id}/members", headers=server.as_user(), json={"user": "bob", "role": "viewer"})
    assert added.status_code == 201, added.text
    session = server.post("/api/sessions", headers=server.as_user(), json={"room_id": room_id})
    assert session.status_code == 201, session.text
    return room_id, session.json()["id"]


def test_a_member_removed_from_the_room_stops_receiving_its_turns(server, fast_heartbeat):
    room_id, session_id = shared_session(server)
    events = server.app.state.events
    with server.stream("GET", f"/api/sessions/{session_id}/events", headers=server.as_user("bob")) as r:
        stream = EventReader(r)
        assert stream.next()["type"] == "hello"
        events.publish(f"session:{session_id}", {"type": "turn", "turn": {"prompt": "a lake"}})
        assert stream.next()["turn"] == {"prompt": "a lake"}
        assert server.delete(f"/api/rooms/{room_id}/members/bob", headers=server.as_user()).status_code == 204
        events.publish(f"session:{session_id}", {"type": "turn", "turn": {"prompt": "a secret"}})
        assert stream.next() is None  # ended, without the turn


def test_a_revoked_key_stops_its_streams(server, fast_heartbeat):
    room_id, session_id = shared_session(server)
    made = server.post("/api/keys", headers=server.as_user("bob"), json={"name": "laptop"}).json()
    key = {"Authorization": f"Bearer {made['key']}"}
    events = server.app.state.events
    with server.stream("GET", f"/api/rooms/{room_id}/events", headers=key) as room, \
            server.stream("GET", f"/api/sessions/{session_id}/events", headers=key) as session:
        room_events, session_events = EventReader(room), EventReader(session)
        assert room_events.next()["type"] == session_events.next()["type"] == "hello"
        assert server.delete(f"/api/keys/{made['id']}", headers=server.as_user("bob")).status_code == 204
        turn = {"type": "turn", "session": session_id, "turn": {"prompt": "a secret"}}
        events.publish(f"room:{room_id}", turn)
        events.publish(f"session:{session_id}", turn)
        assert room_events.next() is None and session_events.next() is None


def test_a_job_stream_ends_when_its_key_is_revoked(server, fast_heartbeat):
    job_id = pending_job(server, "bob")
    made = server.post("/api/keys", headers=server.as_user("bob"), json={"name": "laptop"}).json()
    with server.stream("GET", f"/api/jobs/{job_id}/events", headers={"Authorization": f"Bearer {made['key']}"}) as r:
        stream = EventReader(r)
        assert stream.next()["status"] == "queued"
        assert server.delete(f"/api/keys/{made['id']}", headers=server.as_user("bob")).status_code == 204
        server.app.state.events.publish(f"job:{job_id}", {"type": "job", "status": "running", "progress": 0.5})
        assert stream.next() is None


# --- 5. limits per user: one rate, a key cap, a fair share of the queue -------------------------------------------

def test_the_keys_of_a_user_share_one_rate_limit(tmp_path, tiny_model):
    with make_client(tmp_path, tiny_model, rate_limit_per_minute=1, rate_limit_burst=3) as client:
        more = [client.post("/api/keys", headers=client.as_user(), json={"name": f"k{i}"}).json()["key"]
                for i in range(3)]  # three requests: ada's bucket is empty
        for key in more:
            assert error_of(client.get("/api/me", headers={"Authorization": f"Bearer {key}"}), 429)
        assert client.get("/api/me", headers=client.as_user("bob")).status_code == 200


def test_a_user_holds_a_bounded_number_of_keys(tmp_path, tiny_model):
    with make_client(tmp_path, tiny_model, keys_per_user=3) as client:
        made = [client.post("/api/keys", headers=client.as_user(), json={"name": f"k{i}"}) for i in range(2)]
        assert [r.status_code for r in made] == [201, 201]  # with the fixture's key: three
        err = error_of(client.post("/api/keys", headers=client.as_user(), json={"name": "more"}), 409)
        assert err["code"] == "too_many_keys"
        assert len(client.get("/api/keys", headers=client.as_user()).json()) == 3  # nothing was made
        assert client.delete(f"/api/keys/{made[0].json()['id']}", headers=client.as_user()).status_code == 204
        assert client.post("/api/keys", headers=client.as_user(), json={"name": "more"}).status_code == 201


def test_one_user_gets_a_fair_share_of_the_queue(tmp_path, tiny_model):
    client = make_client(tmp_path, tiny_model, users=("ada", "bob", "cy"), queue_size=5, queue_per_user=3)
    queue = client.app.state.jobs  # not started: whatever is submitted waits
    ada, bob, cy = 1, 2, 3
    for seed in range(3):
        queue.submit(ada, "generate", {"prompt": "a lake", "n": 1, "seed": seed})
    with pytest.raises(APIError) as share:
        queue.submit(ada, "generate", {"prompt": "a lake", "n": 1})
    assert (share.value.status, share.value.code, share.value.headers) == (429, "queue_share_exceeded",
                                                                            {"Retry-After": "1"})
    for seed in range(2):
        queue.submit(bob, "generate", {"prompt": "a lake", "n": 1, "seed": seed})  # bob still gets in
    with pytest.raises(APIError) as full:
        queue.submit(cy, "generate", {"prompt": "a lake", "n": 1})
    assert full.value.status == 503 and queue.waiting == 5


def test_the_moderators_encoder_is_loaded_once_before_the_first_request(tmp_path, tiny_model, monkeypatch):
    from pixelchat.text import encoder

    loads = []
    real = encoder.load_text_encoder

    def counted(*args, **kwargs):
        loads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(encoder, "load_text_encoder", counted)
    with make_client(tmp_path, tiny_model) as client:
        assert len(loads) == 1  # at start-up, not by whichever prompts come first
        replies = []
        threads = [threading.Thread(target=lambda i=i: replies.append(client.post(
            "/api/preview", headers=client.as_user(), json={"prompt": f"a lake at night {i}"}).status_code))
            for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert replies == [200] * 4 and len(loads) == 1


# --- 6. smaller gaps ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key_id", ["9223372036854775808", "0", "-1"])
def test_ids_out_of_the_databases_range_are_400(server, key_id):
    assert error_of(server.delete(f"/api/keys/{key_id}", headers=server.as_user()), 400)["param"] == "key_id"


def test_a_chunked_body_over_the_limit_is_413(tmp_path, tiny_model):
    limit = 2 * 1024 * 1024 + 64 * 1024  # two uploads of max_upload_bytes and the form

    def chunks(head: bytes = b""):  # no Content-Length: sent chunked, its size known only as it comes
        yield head
        for _ in range(40):
            yield b"x" * 64 * 1024

    form = (b'--edge\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n")
    with make_client(tmp_path, tiny_model, max_upload_bytes=1024 * 1024) as client:
        for route, kind, head in [("/api/describe", "multipart/form-data; boundary=edge", form),
                                  ("/api/sessions", "application/json", b'{"title": "')]:
            r = client.post(route, headers={**client.as_user(), "Content-Type": kind}, content=chunks(head))
            err = error_of(r, 413)
            assert err["code"] == "too_large" and str(limit) in err["message"]


def test_a_session_refuses_a_seed_it_could_not_draw(server):
    from pixelchat.engines.base import MAX_SEED
    from pixelchat.server.routes import MAX_JSON_INT

    top = MAX_JSON_INT
    for seed in (top + 1, MAX_SEED, 2**64):
        err = error_of(server.post("/api/sessions", headers=server.as_user(), json={"seed": seed}), 400)
        assert err["param"] == "seed"
    sid = server.post("/api/sessions", headers=server.as_user(), json={"seed": top}).json()["id"]
    r = server.post(f"/api/sessions/{sid}/messages", headers=server.as_user(), json={"text": "a lake at night"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("route", ["/v1/images/variations", "/v1/images/edits"])
def test_an_upload_with_a_seed_past_the_largest_is_400(server, route):
    from pixelchat.engines.base import MAX_IMAGES, MAX_SEED

    picture = encoded(Image.new("RGB", (32, 32), (90, 160, 60)), "PNG")
    for seed in (2**64, MAX_SEED - MAX_IMAGES + 1):
        r = server.post(route, headers=server.as_user(), files={"image": ("a.png", picture, "image/png")},
                        data={"seed": str(seed), "prompt": "add a boat"})
        err = error_of(r, 400)
        assert err["param"] == "seed" and "seed must be between" in err["message"]


def test_a_preview_idempotency_key_is_bound_to_its_request(server):
    headers = {**server.as_user(), "Idempotency-Key": "typing-1"}
    first = server.post("/api/preview", headers=headers, json={"prompt": "a lake at night"})
    assert first.status_code == 200, first.text
    again = server.post("/api/preview", headers=headers, json={"prompt": "a lake at night"})
    pixels = [Image.open(io.BytesIO(r.content)).convert("RGB").tobytes() for r in (first, again)]
    assert again.status_code == 200 and pixels[0] == pixels[1]  # the same picture, drawn again
    assert again.headers["x-pixelchat-seed"] == first.headers["x-pixelchat-seed"]
    other = server.post("/api/preview", headers=headers, json={"prompt": "a desert by day"})
    assert error_of(other, 409)["code"] == "idempotency_key_reused"
    assert server.get("/api/images", headers=server.as_user()).json()["data"] == []  # still nothing stored


def test_a_vote_on_a_pair_is_one_vote_replaced_by_the_next(server):
    ids = [server.post("/v1/images/generations", headers=server.as_user(),
                       json={"prompt": "a lake", "seed": s}).json()["data"][0]["id"] for s in (1, 2)]
    first = server.post("/api/votes", headers=server.as_user(), json={"image_a": ids[0], "image_b": ids[1], "winner": "a"})
    assert first.status_code == 201, first.text
    for winner in ("b", "a"):  # the same pair in the other order: the same vote
        again = server.post("/api/votes", headers=server.as_user(),
                            json={"image_a": ids[1], "image_b": ids[0], "winner": winner})
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        assert again.json()["image_a"] == ids[1] and again.json()["winner"] == winner
    with server.app.state.sessions() as db:
        (vote,) = db.scalars(select(Vote)).all()
    # stored with the smaller id first; the last vote (ids[1] wins) kept
    assert (vote.image_a, vote.image_b) == tuple(sorted(ids)) and {"a": vote.image_a, "b": vote.image_b}[vote.winner] == ids[1]
    bob = server.post("/api/votes", headers=server.as_user("bob"), json={"image_a": ids[0], "image_b": ids[1], "winner": "a"})
    assert bob.status_code == 404  # another user may not see ada's pictures at all


@pytest.mark.parametrize("route, body, param", [
    ("/api/sessions", {"seed": False}, "seed"),
    ("/api/sessions", {"checks": "3"}, "checks"),
    ("/api/sessions", {"style": "baroque"}, "style"),
    ("/api/sessions", {"palette": ["red"]}, "palette.0"),
    ("/api/preview", {"prompt": "a lake", "seed": True}, "seed"),
    ("/api/preview", {"prompt": "a lake", "seed": 1.0}, "seed"),
    ("/api/rooms", {"name": 7}, "name"),
    ("/api/votes", {"image_a": 1, "image_b": 2, "winner": "a"}, "image_a"),
])
def test_bodies_are_not_coerced(server, route, body, param):
    assert error_of(server.post(route, headers=server.as_user(), json=body), 400)["param"] == param


def test_the_schema_states_the_rules_the_server_enforces(server):
    from pixelchat.server.routes import MAX_JSON_INT
    from pixelchat.vision.style import load_styles

    schema = server.get("/openapi.json").json()
    create = schema["components"]["schemas"]["SessionCreate"]["properties"]
    seed = next(s for s in create["seed"]["anyOf"] if s.get("type") == "integer")
    assert seed["maximum"] == MAX_JSON_INT == 2**53 - 1 and seed["minimum"] == 0
    assert set(create["style"]["enum"]) == set(load_styles())
    assert "pattern" in create["palette"]["anyOf"][0]["items"]
    preview = schema["components"]["schemas"]["PreviewRequest"]["properties"]
    assert set(next(s for s in preview["style"]["anyOf"] if "enum" in s)["enum"]) == {*load_styles(), "natural"}
    key_id = schema["paths"]["/api/keys/{key_id}"]["delete"]["parameters"][0]["schema"]
    assert key_id["maximum"] == 2**63 - 1 and key_id["minimum"] == 1
    assert {"429", "503"} <= set(schema["paths"]["/api/login"]["post"]["responses"])
    r = server.post("/api/sessions", headers=server.as_user(), json={"style": "Noir"})  # any case, as documented
    assert r.status_code == 201 and r.json()["nodes"] == []


# --- 7. deployment: links and the API browser -------------------------------------------------------------------

def test_the_api_browser_is_served_on_loopback_only_by_default(tmp_path, tiny_model):
    from fastapi.testclient import TestClient

    with make_client(tmp_path, tiny_model) as client:
        local = TestClient(client.app, client=("127.0.0.1", 50000))
        assert local.get("/docs").status_code == 200 and "swagger" in local.get("/docs").text.lower()
        assert local.get("/redoc").status_code == 200
        remote = TestClient(client.app, client=("198.51.100.4", 50000))
        for page in ("/docs", "/redoc"):
            assert error_of(remote.get(page), 404)["code"] == "not_found"
        assert remote.get("/openapi.json").status_code == 200  # the schema itself stays public
    with make_client(tmp_path / "on", tiny_model, docs=True) as client:
        assert TestClient(client.app, client=("198.51.100.4", 50000)).get("/docs").status_code == 200
    with make_client(tmp_path / "off", tiny_model, docs=False) as client:
        assert error_of(TestClient(client.app, client=("127.0.0.1", 50000)).get("/docs"), 404)


def test_an_unset_public_url_is_reported_once_when_reached_off_loopback(tmp_path, tiny_model, caplog):
    from fastapi.testclient import TestClient

    from pixelchat.server.origin import public_url_notice

    settings = Settings(public_url=None)
    assert public_url_notice(settings, "127.0.0.1") is None and public_url_notice(settings, "::1") is None
    assert "PIXELCHAT_PUBLIC_URL" in public_url_notice(settings, "192.0.2.10")
    assert public_url_notice(Settings(public_url="https://images.example.org"), "192.0.2.10") is None
    with make_client(tmp_path, tiny_model) as client, caplog.at_level("WARNING", logger="pixelchat.server"):
        client.get("/health")  # TestClient's server is "testserver": not loopback
        client.get("/health")
        told = [r for r in caplog.records if "PIXELCHAT_PUBLIC_URL" in r.getMessage()]
        assert len(told) == 1 and "testserver" in told[0].getMessage()
    caplog.clear()
    with make_client(tmp_path / "set", tiny_model, public_url="https://images.example.org") as client, \
            caplog.at_level("WARNING", logger="pixelchat.server"):
        client.get("/health")
        assert not [r for r in caplog.records if "PIXELCHAT_PUBLIC_URL" in r.getMessage()]
