"""Signing in (cookie + CSRF), API keys over HTTP and the CLI, and rate limits."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from sqlalchemy import select

fastapi = pytest.importorskip("fastapi")

from conftest import error_of  # noqa: E402
from pixelchat.server.config import Settings  # noqa: E402
from pixelchat.server.deps import SESSION_COOKIE  # noqa: E402
from pixelchat.server.models import ApiKey, Login, User, utcnow  # noqa: E402
from pixelchat.server.ratelimit import RateLimiter, duration  # noqa: E402

BAD_LOGIN = "Incorrect name or password."


def sign_in(server, name="ada", password="correct horse"):
    r = server.post("/api/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    return r


def logins(server) -> list[Login]:
    with server.app.state.sessions() as db:
        return list(db.query(Login))


def test_login_sets_an_httponly_cookie_stored_only_as_its_hash(server):
    r = sign_in(server)
    body = r.json()
    with server.app.state.sessions() as db:
        ada_id = db.scalar(select(User.id).where(User.name == "ada"))
    assert body["user"] == {"id": ada_id, "name": "ada"} and len(body["csrf_token"]) >= 32
    token = r.cookies[SESSION_COOKIE]
    cookie = r.headers["set-cookie"].lower()
    ttl = server.app.state.settings.login_ttl_s
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie and f"max-age={ttl}" in cookie
    assert "secure" not in cookie
    (row,) = logins(server)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() and token not in row.token_hash
    assert row.csrf_token == body["csrf_token"] and row.user_id == ada_id
    assert timedelta(seconds=ttl - 60) < row.expires - row.created <= timedelta(seconds=ttl)
    assert sign_in(server).cookies[SESSION_COOKIE] != token  # every sign-in gets a new token


def test_secure_cookies_when_configured(tmp_path, tiny_model):
    from fastapi.testclient import TestClient

    from pixelchat.server.admin import create_user
    from pixelchat.server.app import create_app

    app = create_app(Settings(data_dir=tmp_path / "data", model=str(tiny_model), secret_key="x", cookie_secure=True))
    with app.state.sessions() as db:
        create_user(db, "ada", "correct horse")
    with TestClient(app) as client:
        r = client.post("/api/login", json={"name": "ada", "password": "correct horse"})
    assert r.status_code == 200 and "secure" in r.headers["set-cookie"].lower()


@pytest.mark.parametrize("name, password", [("ada", "wrong horse"), ("nobody", "correct horse"),
                                            ("cy", "anything at all"), ("cy", "")])
def test_wrong_name_or_password_get_one_answer(server, name, password):
    r = server.post("/api/login", json={"name": name, "password": password})
    if password == "":
        assert error_of(r, 400)["param"] == "password"
    else:
        err = error_of(r, 401)
        assert err["message"] == BAD_LOGIN and err["code"] == "invalid_credentials"
    assert "set-cookie" not in r.headers and logins(server) == []


def test_unknown_names_cost_an_argon2_check_too(monkeypatch):
    from pixelchat.server import security

    checked = []
    real = security._hasher

    class Spy:
        def verify(self, hash, password):
            checked.append(hash)
            return real.verify(hash, password)

    monkeypatch.setattr(security, "_hasher", Spy())
    assert not security.verify_password(None, "correct horse")
    assert not security.verify_password("", "pixelchat-dummy-password")
    assert checked == [security.dummy_hash()] * 2
    assert security.verify_password(real.hash("correct horse"), "correct horse")


def test_the_cookie_signs_in_for_reading(server):
    assert error_of(server.get("/api/me"), 401)["code"] == "invalid_api_key"
    csrf = sign_in(server).json()["csrf_token"]
    me = server.get("/api/me")  # the client sends the cookie back by itself
    assert me.status_code == 200, me.text
    assert me.json()["name"] == "ada" and me.json()["via"] == "cookie" and me.json()["csrf_token"] == csrf
    assert server.get("/api/images").json() == {"data": [], "has_more": False}
    as_bob = server.get("/api/me", headers=server.as_user("bob")).json()  # a key wins over the cookie
    assert as_bob["name"] == "bob" and as_bob["via"] == "key" and as_bob["csrf_token"] is None
    err = error_of(server.get("/api/me", headers={"Authorization": "Bearer pc-wrong"}), 401)
    assert err["message"] == "Incorrect API key provided."  # a bad key is not rescued by the cookie


def test_cookie_writes_need_the_csrf_header(server):
    csrf = sign_in(server).json()["csrf_token"]
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": csrf[:-1]}):
        err = error_of(server.post("/api/keys", json={"name": "laptop"}, headers=headers), 403)
        assert err["code"] == "csrf_failed" and "X-CSRF-Token" in err["message"]
    assert [k["name"] for k in server.get("/api/keys").json()] == ["default"]  # nothing was created
    made = server.post("/api/keys", json={"name": "laptop"}, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201 and made.json()["name"] == "laptop"
    assert error_of(server.delete(f"/api/keys/{made.json()['id']}"), 403)["code"] == "csrf_failed"
    # an API key needs no CSRF token: a page on another site cannot send it
    server.cookies.clear()
    assert server.post("/api/keys", json={"name": "ci"}, headers=server.as_user()).status_code == 201


def test_logout_ends_the_login(server):
    r = sign_in(server)
    token, csrf = r.cookies[SESSION_COOKIE], r.json()["csrf_token"]
    assert error_of(server.post("/api/logout"), 403)["code"] == "csrf_failed"
    out = server.post("/api/logout", headers={"X-CSRF-Token": csrf})
    assert out.status_code == 204 and out.content == b""
    assert f'{SESSION_COOKIE}=""' in out.headers["set-cookie"] and "max-age=0" in out.headers["set-cookie"].lower()
    assert logins(server) == []
    server.cookies.set(SESSION_COOKIE, token)  # the old cookie, sent again
    assert error_of(server.get("/api/me"), 401)["code"] == "invalid_session"
    server.cookies.clear()
    assert server.post("/api/logout", headers=server.as_user()).status_code == 204  # a key: nothing to end
    assert server.get("/api/me", headers=server.as_user()).json()["name"] == "ada"


def test_an_expired_login_is_refused(server):
    sign_in(server)
    assert server.get("/api/me").status_code == 200
    with server.app.state.sessions() as db:
        db.query(Login).update({Login.expires: utcnow() - timedelta(seconds=1)})
        db.commit()
    err = error_of(server.get("/api/me"), 401)
    assert err["code"] == "invalid_session" and "sign in again" in err["message"]
    bob = sign_in(server, "bob", "battery staple").json()["user"]
    assert [row.user_id for row in logins(server)] == [bob["id"]]  # the expired one is gone


def test_keys_are_listed_created_and_revoked(server):
    bob = server.as_user("bob")
    listed = server.get("/api/keys", headers=bob).json()
    assert [k["name"] for k in listed] == ["default"] and set(listed[0]) == {"id", "name", "prefix", "created", "revoked"}
    assert listed[0]["prefix"] == server.keys["bob"][:10] and listed[0]["revoked"] is None
    made = server.post("/api/keys", headers=bob, json={"name": "laptop"})
    assert made.status_code == 201
    new = made.json()
    assert set(new) == {"id", "name", "prefix", "key"} and new["key"].startswith("pc-")
    assert new["prefix"] == new["key"][:10] and new["name"] == "laptop"
    assert server.get("/api/me", headers={"Authorization": f"Bearer {new['key']}"}).json()["name"] == "bob"
    listed = server.get("/api/keys", headers=bob).json()
    assert [k["id"] for k in listed] == [listed[0]["id"], new["id"]]
    assert new["key"] not in json.dumps(listed) and server.keys["bob"] not in json.dumps(listed)
    assert server.delete(f"/api/keys/{new['id']}", headers=bob).status_code == 204
    assert server.get("/api/keys", headers=bob).json()[1]["revoked"] is not None
    err = error_of(server.get("/api/me", headers={"Authorization": f"Bearer {new['key']}"}), 401)
    assert err["message"] == "Incorrect API key provided."
    assert server.delete(f"/api/keys/{new['id']}", headers=bob).status_code == 204  # twice: still revoked


def test_nobody_sees_or_revokes_another_users_keys(server):
    ada_keys = server.get("/api/keys", headers=server.as_user("ada")).json()
    bob_keys = server.get("/api/keys", headers=server.as_user("bob")).json()
    assert {k["id"] for k in ada_keys}.isdisjoint(k["id"] for k in bob_keys)
    assert server.keys["ada"][:10] not in json.dumps(bob_keys)
    for key_id in (ada_keys[0]["id"], 9999):
        err = error_of(server.delete(f"/api/keys/{key_id}", headers=server.as_user("bob")), 404)
        assert err["code"] == "not_found" and err["type"] == "invalid_request_error"
    assert server.get("/api/me", headers=server.as_user("ada")).json()["name"] == "ada"
    assert server.get("/api/keys", headers=server.as_user("ada")).json()[0]["revoked"] is None


def test_the_schema_describes_the_auth_routes(server):
    spec = server.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"/api/login", "/api/logout", "/api/me", "/api/keys", "/api/keys/{key_id}"} <= set(paths)
    assert paths["/api/keys"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/KeyCreated"}
    assert set(spec["components"]["schemas"]["KeyPublic"]["properties"]) == {"id", "name", "prefix", "created", "revoked"}
    assert paths["/api/login"]["post"]["tags"] == ["auth"]


def test_authenticated_responses_carry_the_rate_limit_headers(server):
    first = server.get("/api/me", headers=server.as_user())
    second = server.get("/api/keys", headers=server.as_user())
    assert first.headers["x-ratelimit-limit-requests"] == "120"  # the default burst
    assert int(first.headers["x-ratelimit-remaining-requests"]) == 119
    assert int(second.headers["x-ratelimit-remaining-requests"]) == 118
    assert first.headers["x-ratelimit-reset-requests"] == "1s"  # 600 a minute: one is back within 0.1 s
    assert "x-ratelimit-limit-requests" not in server.get("/health").headers
    assert "x-ratelimit-limit-requests" not in server.get("/api/me").headers  # 401


@pytest.fixture
def limited(tmp_path, tiny_model):
    """An app allowing 3 requests at once, then 60 a minute, on a clock the test moves."""
    from fastapi.testclient import TestClient

    from pixelchat.server.admin import create_key, create_user
    from pixelchat.server.app import create_app

    app = create_app(Settings(data_dir=tmp_path / "limited", model=str(tiny_model), secret_key="x",
                              rate_limit_per_minute=60, rate_limit_burst=3))
    now = [1000.0]
    app.state.ratelimiter.clock = lambda: now[0]
    with app.state.sessions() as db:
        create_user(db, "ada", "correct horse")
        keys = [create_key(db, "ada", name) for name in ("one", "two")]
    with TestClient(app) as client:
        client.headers_of = [{"Authorization": f"Bearer {k}"} for k in keys]
        client.now = now
        yield client


def test_the_fourth_quick_request_is_refused_with_retry_after(limited):
    one, two = limited.headers_of
    remaining = [limited.get("/api/me", headers=one).headers["x-ratelimit-remaining-requests"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    r = limited.get("/api/me", headers=one)
    err = error_of(r, 429)
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "rate_limit_error" and "1 s" in err["message"]
    assert r.headers["retry-after"] == "1"
    assert r.headers["x-ratelimit-limit-requests"] == "3" and r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-reset-requests"] == "3s"
    assert error_of(limited.get("/api/me", headers=two), 429)  # another key of the same user shares the bucket
    for _ in range(5):  # a bad key is told so, not rate limited; health is never limited
        assert error_of(limited.get("/api/me", headers={"Authorization": "Bearer pc-bad"}), 401)
        assert limited.get("/health").status_code == 200
    limited.now[0] += 1.0
    assert limited.get("/api/me", headers=one).status_code == 200
    assert limited.get("/api/me", headers=one).status_code == 429


def test_logins_share_their_users_bucket(limited):
    csrf = limited.post("/api/login", json={"name": "ada", "password": "correct horse"}).json()["csrf_token"]
    for _ in range(2):
        assert limited.get("/api/me").status_code == 200
    assert limited.get("/api/me", headers=limited.headers_of[0]).status_code == 200  # the third: ada's last
    assert error_of(limited.post("/api/keys", json={"name": "x"}, headers={"X-CSRF-Token": csrf}), 429)
    assert error_of(limited.get("/api/me", headers=limited.headers_of[1]), 429)


def test_no_limit_when_the_rate_is_zero(tmp_path, tiny_model):
    from fastapi.testclient import TestClient

    from pixelchat.server.admin import create_key, create_user
    from pixelchat.server.app import create_app

    app = create_app(Settings(data_dir=tmp_path / "free", model=str(tiny_model), secret_key="x",
                              rate_limit_per_minute=0, rate_limit_burst=1))
    assert app.state.ratelimiter is None
    with app.state.sessions() as db:
        create_user(db, "ada")
        headers = {"Authorization": f"Bearer {create_key(db, 'ada')}"}
    with TestClient(app) as client:
        replies = [client.get("/api/me", headers=headers) for _ in range(5)]
    assert [r.status_code for r in replies] == [200] * 5
    assert "x-ratelimit-remaining-requests" not in replies[-1].headers


def test_the_bucket_refills_with_time():
    now = [0.0]
    limiter = RateLimiter(60, 3, clock=lambda: now[0])
    taken = [limiter.take("a") for _ in range(4)]
    assert [d.allowed for d in taken] == [True, True, True, False]
    assert [d.remaining for d in taken] == [2, 1, 0, 0]
    assert taken[3].retry_after_s == pytest.approx(1.0) and taken[3].reset_s == pytest.approx(3.0)
    assert limiter.take("b").allowed  # buckets are per key
    now[0] = 0.5
    half = limiter.take("a")
    assert not half.allowed and half.retry_after_s == pytest.approx(0.5)
    now[0] = 1.0
    assert limiter.take("a").allowed and not limiter.take("a").allowed
    now[0] = 1000.0  # a long pause fills the bucket, never beyond the burst
    assert [limiter.take("a").allowed for _ in range(4)] == [True, True, True, False]
    slow = RateLimiter(6, 1, clock=lambda: now[0])  # one every 10 s
    assert slow.take("a").allowed and slow.take("a").retry_after_s == pytest.approx(10.0)


def test_idle_buckets_are_forgotten():
    now = [0.0]
    limiter = RateLimiter(60, 2, clock=lambda: now[0], max_buckets=3)
    for key in "abc":
        limiter.take(key)
    now[0] = 5.0  # all three are full again
    limiter.take("d")
    assert set(limiter._buckets) == {"d"}


def test_the_bucket_is_thread_safe():
    from concurrent.futures import ThreadPoolExecutor

    limiter = RateLimiter(1, 50, clock=lambda: 0.0)
    with ThreadPoolExecutor(8) as pool:
        allowed = sum(d.allowed for d in pool.map(lambda _: limiter.take("k"), range(400)))
    assert allowed == 50


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (0.2, "1s"), (1, "1s"), (59.5, "1m0s"), (360, "6m0s"),
                                           (3723, "1h2m3s")])
def test_reset_durations_read_like_openais(seconds, text):
    assert duration(seconds) == text


def test_keys_list_and_revoke_from_the_cli(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pixelchat.cli import app

    monkeypatch.setenv("PIXELCHAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("PIXELCHAT_DATABASE_URL", raising=False)
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, [str(a) for a in args])

    assert run("users", "create", "ada").exit_code == 0
    keys = [json.loads(run("keys", "create", "ada", "--name", name, "--json").stdout)["key"] for name in ("a", "b", "c")]
    listed = run("keys", "list", "ada", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["a", "b", "c"] and [r["prefix"] for r in rows] == [k[:10] for k in keys]
    assert all(r["revoked"] is None for r in rows) and not any(k in listed.stdout for k in keys)
    by_prefix = run("keys", "revoke", "ada", keys[1][:10])
    assert by_prefix.exit_code == 0 and f"revoked key {rows[1]['id']}" in by_prefix.stdout
    assert run("keys", "revoke", "ada", rows[2]["id"]).exit_code == 0
    rows = json.loads(run("keys", "list", "ada", "--json").stdout)
    assert [r["revoked"] is not None for r in rows] == [False, True, True]
    table = run("keys", "list", "ada").stdout.splitlines()
    assert len(table) == 3 and table[0].split("\t")[:3] == [str(rows[0]["id"]), keys[0][:10], "a"]
    assert table[0].endswith("active") and "revoked" in table[1]
    for args, words in ((("keys", "list", "bob"), "no user 'bob'"), (("keys", "revoke", "bob", "1"), "no user 'bob'"),
                        (("keys", "revoke", "ada", "pc-nothing"), "no key 'pc-nothing'"),
                        (("keys", "revoke", "ada", "999"), "no key '999'")):
        result = run(*args)
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output

    from pixelchat.server.db import session_factory

    with session_factory(f"sqlite:///{tmp_path / 'data' / 'pixelchat.db'}")() as db:
        revoked = {row.key_hash: row.revoked for row in db.query(ApiKey)}
    assert [revoked[hashlib.sha256(k.encode()).hexdigest()] is not None for k in keys] == [False, True, True]


def test_users_list_delete_and_passwd_from_the_cli(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pixelchat.cli import app
    from pixelchat.server.db import session_factory
    from pixelchat.server.models import Login, User
    from pixelchat.server.security import verify_password

    monkeypatch.setenv("PIXELCHAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("PIXELCHAT_DATABASE_URL", raising=False)
    runner = CliRunner()

    def run(*args, input=None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    assert run("users", "create", "ada", "--password-stdin", input="correct horse\n").exit_code == 0
    assert run("users", "create", "bob").exit_code == 0
    assert run("keys", "create", "bob").exit_code == 0
    rows = json.loads(run("users", "list", "--json").stdout)
    assert [(r["name"], r["password"], r["keys"]) for r in rows] == [("ada", True, 0), ("bob", False, 1)]
    assert run("users", "list").stdout.splitlines()[1].startswith("bob\t")

    factory = session_factory(f"sqlite:///{tmp_path / 'data' / 'pixelchat.db'}")
    with factory() as db:
        ada = db.query(User).filter_by(name="ada").one()
        db.add(Login(user_id=ada.id, token_hash="t" * 64, csrf_token="c", expires=ada.created))
        db.commit()
    changed = run("users", "passwd", "ada", "--password-stdin", input="battery staple\n")
    assert changed.exit_code == 0, changed.output
    short = run("users", "passwd", "ada", "--password-stdin", input="short\n")
    assert short.exit_code == 2 and "at least 8 characters" in short.output
    prompted = run("users", "passwd", "bob", input="a new secret\na new secret\n")
    assert prompted.exit_code == 0, prompted.output
    with factory() as db:
        ada = db.query(User).filter_by(name="ada").one()
        assert verify_password(ada.password_hash, "battery staple") and not verify_password(ada.password_hash, "correct horse")
        assert db.query(Login).count() == 0  # signed out
        assert db.query(User).filter_by(name="bob").one().password_hash

    kept = run("users", "delete", "bob", input="n\n")
    assert kept.exit_code == 1 and "delete user bob with 1 active keys" in kept.output
    assert [r["name"] for r in json.loads(run("users", "list", "--json").stdout)] == ["ada", "bob"]
    assert run("users", "delete", "bob", input="y\n").exit_code == 0
    said = run("users", "delete", "ada", "--yes").stdout.strip()
    assert said == "deleted user ada: 0 pictures, 0 conversations; removed 0 picture files and 0 uploads"
    assert json.loads(run("users", "list", "--json").stdout) == []
    with factory() as db:
        assert db.query(ApiKey).count() == 0
    for args in (("users", "delete", "cy", "--yes"), ("users", "passwd", "cy", "--password-stdin"),
                 ("users", "delete", "cy")):
        result = run(*args, input="x\n")
        assert result.exit_code == 2 and "no user 'cy'" in result.output and "Traceback" not in result.output


def test_deleting_a_user_removes_their_files_and_keeps_everyone_elses(server):
    from pixelchat.server.admin import delete_user
    from pixelchat.server.models import ImageRow, Job, SessionRow

    app = server.app
    sid = server.post("/api/sessions", headers=server.as_user(), json={"checks": 0}).json()["id"]
    turn = server.post(f"/api/sessions/{sid}/messages", headers=server.as_user(), json={"text": "a lake"}).json()
    ada = [d["id"] for d in server.post("/v1/images/generations", headers=server.as_user(),
                                        json={"prompt": "snowy peaks at night", "n": 2}).json()["data"]]
    bob = server.post("/v1/images/generations", headers=server.as_user("bob"), json={"prompt": "a desert"}).json()
    later = utcnow() + timedelta(days=1)  # held by a queue elsewhere: this server's queue leaves them alone
    with app.state.sessions() as db:
        ids = {u.name: u.id for u in db.scalars(select(User))}
        rows = {r.id: r for r in db.scalars(select(ImageRow))}
        same = rows[ada[0]]  # bob's copy of one of ada's pictures: the same file in the store
        db.add(ImageRow(id="b" * 32, user_id=ids["bob"], sha256=same.sha256, prompt=same.prompt, record=same.record))
        # unfinished jobs with their uploads: ada's, bob's turn in ada's conversation, and bob's own
        for job_id, who, session_id in (("a" * 32, "ada", None), ("c" * 32, "bob", sid), ("d" * 32, "bob", None)):
            db.add(Job(id=job_id, user_id=ids[who], kind="edit", status="queued", payload={}, session_id=session_id,
                       owner="elsewhere:1:x", lease_until=later))
        db.commit()
    uploads = app.state.settings.uploads_dir
    uploads.mkdir(parents=True, exist_ok=True)
    for job_id in ("a" * 32, "c" * 32, "d" * 32):
        (uploads / f"{job_id}-image.png").write_bytes(b"an upload")
    files = {i: app.state.store.path(rows[i].sha256) for i in [*turn["images"], *ada, bob["data"][0]["id"]]}
    assert all(f.exists() for f in files.values())

    with app.state.sessions() as db:
        gone = delete_user(db, "ada", app.state.store, uploads)
    assert (gone.pictures, gone.sessions, gone.files, gone.shared_files, gone.uploads) == (3, 1, 2, 1, 2)
    assert not files[turn["images"][0]].exists() and not files[ada[1]].exists()
    assert files[ada[0]].exists() and files[bob["data"][0]["id"]].exists()  # bob's pictures keep their files
    assert sorted(p.name for p in uploads.iterdir()) == [f"{'d' * 32}-image.png"]
    for image_id in ("b" * 32, bob["data"][0]["id"]):
        assert server.get(f"/api/images/{image_id}/file", headers=server.as_user("bob")).status_code == 200
    with app.state.sessions() as db:
        assert db.scalar(select(ImageRow.id).where(ImageRow.user_id == ids["ada"])) is None
        assert db.get(SessionRow, sid) is None and db.get(Job, "d" * 32) is not None
    with app.state.sessions() as db:
        with pytest.raises(ValueError, match="no user 'ada'"):
            delete_user(db, "ada", app.state.store, uploads)
        assert len(list(uploads.iterdir())) == 1  # nothing more removed
