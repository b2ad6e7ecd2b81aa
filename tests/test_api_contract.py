"""The API's contract, route by route: schemathesis fuzzes every operation against the app's own
OpenAPI schema (no server errors; only documented statuses, content types and bodies), another user
gets 404 for everything of ada's, and nothing but the public routes answers without credentials.

The route lists come from `app.routes`, so a route added later is covered or fails here by name."""

from __future__ import annotations

import base64
import json
import zlib
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import func, select

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.python import asgi  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    allow_header_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance,
    status_code_conformance, unsupported_method)

from conftest import error_of  # noqa: E402
from pixelchat.server.app import create_app  # noqa: E402
from pixelchat.server.config import Settings  # noqa: E402
from pixelchat.server.models import Vote  # noqa: E402

PUBLIC = {("GET", "/health"), ("POST", "/api/login"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"),
          ("GET", "/v1/images/files/{name}"), ("GET", "/"), ("GET", "/studio/{name}"), ("GET", "/api/local-account"), ("POST", "/api/local-account")}


def api_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, HEAD left out. FastAPI keeps an included router
    as one entry of `app.routes` since 0.16x; `iter_route_contexts` yields its routes with full paths."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is flat already
        routes = app.routes
    else:
        routes = iter_route_contexts(app.routes)
    return sorted((method, route.path) for route in routes for method in (route.methods or ()) if method != "HEAD")


# --- 1. schemathesis: every operation, fuzzed as a signed-in user --------------------------------------------

# The schema is the app's own; the app that answers is made per module, on the tiny model.
SCHEMA = schemathesis.openapi.from_dict(
    create_app(Settings(database_url="sqlite:///:memory:", secret_key="schema"), run_migrations=False).openapi(),
    config=schemathesis.Config.from_dict({"max-stream-events": 1}))  # an event stream: its first event
# body fields the fuzzer may fill with real values: a picture to upload, two of ada's to vote on, a
# prompt the reader understands, a turn of ada's session to go to
BODY_FIELDS = ("image", "image_a", "image_b", "prompt", "node")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, unsupported_method, allow_header_conformance]


class Owned:
    """Objects of ada's whose ids the fuzzer may put in paths and bodies, made again whenever a fuzzed
    request took one (a DELETE, a revoked key, a member removed): each operation starts with all there."""

    def __init__(self, app, client):
        from pixelchat.server.admin import create_key, create_user

        with app.state.sessions() as db:
            for name in ("ada", "bob"):
                create_user(db, name)
        self.app, self.client, self.create_key = app, client, create_key
        self.headers, self.ids = {}, {"name": "bob", "prompt": "add a boat"}
        self.link: tuple[str, dict] | None = None  # a signed file link: its name and query

    def call(self, method: str, path: str, **kwargs):
        return self.client.request(method, path, headers=self.headers, timeout=60, **kwargs)

    def missing(self, path: str) -> bool:
        return self.call("GET", path).status_code == 404

    def refresh(self) -> dict:
        ids = self.ids
        if not self.headers or self.call("GET", "/api/me").status_code == 401:
            with self.app.state.sessions() as db:
                self.headers = {"Authorization": f"Bearer {self.create_key(db, 'ada')}"}
        if "image_id" not in ids or self.missing(f"/api/images/{ids['image_id']}"):
            made = self.call("POST", "/v1/images/generations", json={"prompt": "a lake at dawn", "n": 2}).json()
            first, second = (d["id"] for d in made["data"])
            ids.update(image_id=first, image_a=first, image_b=second,
                       image=base64.b64decode(made["data"][0]["b64_json"]))  # a picture to upload
            self.call("PUT", f"/api/images/{first}/rating", json={"stars": 4})
        if "session_id" not in ids or self.missing(f"/api/sessions/{ids['session_id']}"):
            ids["session_id"] = self.call("POST", "/api/sessions", json={"title": "hills", "checks": 0}).json()["id"]
            turn = self.call("POST", f"/api/sessions/{ids['session_id']}/messages", json={"text": "snowy hills"})
            ids.update(job_id=turn.json()["job"], node=turn.json()["node"])
        room = self.call("GET", f"/api/rooms/{ids['room_id']}").json() if "room_id" in ids else {}
        if room.get("members") != [{"user": "ada", "role": "owner"}, {"user": "bob", "role": "editor"}]:
            ids["room_id"] = self.call("POST", "/api/rooms", json={"name": "studio"}).json()["id"]
            self.call("POST", f"/api/rooms/{ids['room_id']}/members", json={"user": "bob", "role": "editor"})
        if not any(k["id"] == ids.get("key_id") and k["revoked"] is None for k in self.call("GET", "/api/keys").json()):
            ids["key_id"] = self.call("POST", "/api/keys", json={"name": "spare"}).json()["id"]
        if self.link is None:
            made = self.call("POST", "/v1/images/generations", json={"prompt": "hills", "response_format": "url"})
            url = urlsplit(made.json()["data"][0]["url"])
            self.link = url.path.rsplit("/", 1)[-1], dict(parse_qsl(url.query))
        return ids


@pytest.fixture(scope="module")
def owned(tmp_path_factory, tiny_model):
    config = Settings(data_dir=tmp_path_factory.mktemp("contract"), model=str(tiny_model), secret_key="test-secret",
                      rate_limit_per_minute=0)
    app = create_app(config)
    with asgi.get_client(app) as client:  # starts the app: engine, job queue
        yield Owned(app, client)
    asgi.shutdown_lifespans()  # and stops it


@pytest.fixture
def ids(owned) -> dict:
    """ada's objects, all there at the start of each operation's run."""
    return owned.refresh()


def with_adas_objects(case) -> bool:
    """About half the cases, chosen by their content, so that a rerun or Hypothesis shrinking a case
    chooses the same. (A drawn choice would need `@SCHEMA.given`, which turns off schemathesis'
    coverage phase: its boundary values, missing parameters and unsupported methods.)"""
    return zlib.crc32(repr((case.method, case.path_parameters, case.query, case.body)).encode()) % 2 == 0


@SCHEMA.parametrize()
@settings(max_examples=4, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_to_its_schema(case, owned, ids):
    """Generated requests, valid and invalid, about half of them with ada's real ids and pictures in
    place of generated ones: never a 5xx, and every answer's status, content type and body as the
    schema documents."""
    if with_adas_objects(case):
        if case.path == "/v1/images/files/{name}":
            case.path_parameters["name"], case.query = owned.link[0], dict(owned.link[1])
        else:
            for name in case.path_parameters or {}:
                case.path_parameters[name] = ids.get(name, case.path_parameters[name])
        for name in BODY_FIELDS if isinstance(case.body, dict) else ():
            if name in case.body:
                case.body[name] = ids[name]
    case.call_and_validate(app=owned.app, headers=owned.headers, checks=CHECKS, timeout=60)


# --- 2. IDOR: bob, not in ada's room, gets 404 for everything of hers -------------------------------------------

# Routes whose path names something no one owns: the signature in a file link is its only key.
UNOWNED = {"/v1/images/files/{name}", "/studio/{name}"}  # a signed link; the studio's own files


def idor_table(ada: dict) -> dict[str, dict[str, str]]:
    """Each route that takes an id, with its path parameters filled from ada's objects."""
    image, session, job, room = ({"image_id": ada["image"]}, {"session_id": ada["session"]}, {"job_id": ada["job"]},
                                 {"room_id": ada["room"]})
    return {
        "/api/images/{image_id}": image, "/api/images/{image_id}/file": image, "/api/images/{image_id}/rating": image,
        "/api/keys/{key_id}": {"key_id": ada["key"]},
        "/api/sessions/{session_id}": session, "/api/sessions/{session_id}/messages": session,
        "/api/sessions/{session_id}/undo": session, "/api/sessions/{session_id}/goto": session,
        "/api/sessions/{session_id}/events": session, "/api/sessions/{session_id}/export": session,
        "/api/jobs/{job_id}": job, "/api/jobs/{job_id}/events": job,
        "/api/rooms/{room_id}": room, "/api/rooms/{room_id}/members": room,
        "/api/rooms/{room_id}/members/{name}": {**room, "name": "ada"}, "/api/rooms/{room_id}/events": room,
    }


def bodies(ada: dict) -> dict[tuple[str, str], dict]:
    """Bodies that would be valid were the objects bob's, so that only access can refuse them."""
    return {("PATCH", "/api/sessions/{session_id}"): {"title": "mine now"},
            ("POST", "/api/sessions/{session_id}/messages"): {"text": "add a boat"},
            ("POST", "/api/sessions/{session_id}/goto"): {"node": ada["node"]},
            ("PATCH", "/api/rooms/{room_id}"): {"name": "mine now"},
            ("POST", "/api/rooms/{room_id}/members"): {"user": "bob", "role": "owner"},
            ("PATCH", "/api/rooms/{room_id}/members/{name}"): {"role": "viewer"},
            ("PUT", "/api/images/{image_id}/rating"): {"stars": 1}}


def send(server, method: str, url: str, who: str | None, body: dict | None = None) -> tuple[int, str]:
    """The status and body text; an event stream that answers 200 is not read (it would not end)."""
    headers = server.as_user(who) if who else {}
    with server.stream(method, url, headers=headers, json=body) as r:
        return r.status_code, "" if r.status_code == 200 else r.read().decode()


def adas_objects(server) -> dict[str, str]:
    ada = server.as_user("ada")
    made = server.post("/v1/images/generations", headers=ada, json={"prompt": "ada's secret lake", "n": 2}).json()
    first, second = (d["id"] for d in made["data"])
    session = server.post("/api/sessions", headers=ada, json={"title": "ada's secret chat", "checks": 0}).json()["id"]
    turn = server.post(f"/api/sessions/{session}/messages", headers=ada, json={"text": "a secret garden"}).json()
    room = server.post("/api/rooms", headers=ada, json={"name": "ada's secret room"}).json()["id"]
    key = server.post("/api/keys", headers=ada, json={"name": "ada's laptop"}).json()["id"]
    assert server.put(f"/api/images/{first}/rating", headers=ada, json={"stars": 5}).status_code == 200
    assert turn["job"] and turn["images"], turn
    return {"image": first, "image2": second, "session": session, "job": turn["job"], "node": turn["node"],
            "room": room, "key": key}


def snapshot(server, ada: dict) -> dict:
    """Everything ada can read about her objects."""
    def read(path: str):
        r = server.get(path, headers=server.as_user("ada"))
        assert r.status_code == 200, (path, r.text)
        return r.content if path.endswith("/file") else r.json() if "json" in r.headers["content-type"] else r.text

    image, session = f"/api/images/{ada['image']}", f"/api/sessions/{ada['session']}"
    paths = [image, f"{image}/file", f"{image}/rating", f"/api/images/{ada['image2']}", session, f"{session}/export",
             f"/api/jobs/{ada['job']}", f"/api/rooms/{ada['room']}", "/api/keys", "/api/images", "/api/jobs",
             "/api/sessions", "/api/rooms", "/api/leaderboard"]
    return {path: read(path) for path in paths}


def test_another_user_gets_404_for_everything_of_adas(server):
    ada = adas_objects(server)
    before = snapshot(server, ada)
    private = ["secret", server.get("/api/keys", headers=server.as_user("ada")).json()[-1]["prefix"]]
    table, sent = idor_table(ada), bodies(ada)
    with_ids = [(method, path) for method, path in api_routes(server.app) if "{" in path and path not in UNOWNED]
    missing = sorted({path for _, path in with_ids} - set(table))
    assert not missing, f"routes taking an id with no entry in idor_table: {missing}"

    refused = []
    for method, path in with_ids:
        status, text = send(server, method, path.format(**table[path]), "bob", sent.get((method, path)))
        if status != 404 or any(word in text for word in private):
            refused.append(f"{method} {path}: {status} {text[:200]}")
        else:
            assert json.loads(text)["error"]["code"] == "not_found"
    bobs = server.post("/v1/images/generations", headers=server.as_user("bob"), json={"prompt": "bob's own"}).json()
    for body, param in (({"image_a": ada["image"], "image_b": ada["image2"], "winner": "a"}, "image_a"),
                        ({"image_a": bobs["data"][0]["id"], "image_b": ada["image"], "winner": "tie"}, "image_b")):
        err = error_of(server.post("/api/votes", headers=server.as_user("bob"), json=body), 404)
        assert err["param"] == param and "secret" not in err["message"]
    assert not refused, "bob was not refused with a bare 404:\n" + "\n".join(refused)
    assert snapshot(server, ada) == before  # all there, unchanged: no rating, member, turn or rename of bob's
    with server.app.state.sessions() as db:
        assert db.scalar(select(func.count()).select_from(Vote)) == 0


# --- 3. no credentials: 401 everywhere but the public routes ----------------------------------------------------

def test_every_route_but_the_public_ones_needs_credentials(server):
    routes = api_routes(server.app)
    assert PUBLIC <= set(routes), f"public routes that no longer exist: {sorted(PUBLIC - set(routes))}"
    let_in = []
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        status, text = send(server, method, path.replace("{", "").replace("}", ""), None)  # e.g. /api/jobs/job_id
        if status != 401:
            let_in.append(f"{method} {path}: {status} {text[:200]}")
            continue
        body = json.loads(text)
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, text
        assert body["error"]["code"] == "invalid_api_key", text
    assert not let_in, "answered without credentials:\n" + "\n".join(let_in)
    # the schema marks exactly these as needing an API key or a sign-in
    secured = {(method.upper(), path) for path, operations in server.get("/openapi.json").json()["paths"].items()
               for method, operation in operations.items() if operation.get("security")}
    assert secured == set(routes) - PUBLIC
