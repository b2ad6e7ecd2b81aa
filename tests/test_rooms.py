"""Rooms over HTTP: lifecycle, roles, the last-owner rule, leaving, and the live event stream."""

from __future__ import annotations

import json
import secrets
import time

import pytest

pytest.importorskip("fastapi")

from sqlalchemy import select  # noqa: E402

from conftest import error_of  # noqa: E402
from pixelchat.server.models import SessionRow, User  # noqa: E402


def make_room(server, name="studio", owner="ada", **members) -> str:
    r = server.post("/api/rooms", headers=server.as_user(owner), json={"name": name})
    assert r.status_code == 201, r.text
    room_id = r.json()["id"]
    for who, role in members.items():
        added = server.post(f"/api/rooms/{room_id}/members", headers=server.as_user(owner), json={"user": who, "role": role})
        assert added.status_code == 201, added.text
    return room_id


def add_session(server, room_id: str, owner="ada", title="a shared chat") -> str:
    with server.app.state.sessions() as db:
        user = db.scalar(select(User).where(User.name == owner))
        row = SessionRow(id=secrets.token_hex(16), user_id=user.id, room_id=room_id, title=title, data="{}")
        db.add(row)
        db.commit()
        return row.id


def test_room_lifecycle(server):
    ada = server.as_user("ada")
    r = server.post("/api/rooms", headers=ada, json={"name": "  studio  "})
    assert r.status_code == 201, r.text
    room = r.json()
    assert room["name"] == "studio" and room["role"] == "owner" and len(room["id"]) == 32
    assert room["members"] == [{"user": "ada", "role": "owner"}] and room["sessions"] == []
    listed = server.get("/api/rooms", headers=ada).json()["data"]
    assert [(x["id"], x["name"], x["role"]) for x in listed] == [(room["id"], "studio", "owner")]
    assert server.get("/api/rooms", headers=server.as_user("bob")).json()["data"] == []

    session_id = add_session(server, room["id"], title="sketches")
    got = server.get(f"/api/rooms/{room['id']}", headers=ada).json()
    assert [(s["id"], s["title"]) for s in got["sessions"]] == [(session_id, "sketches")]

    r = server.patch(f"/api/rooms/{room['id']}", headers=ada, json={"name": "atelier"})
    assert r.status_code == 200 and r.json()["name"] == "atelier"
    assert server.get(f"/api/rooms/{room['id']}", headers=ada).json()["name"] == "atelier"

    assert server.delete(f"/api/rooms/{room['id']}", headers=ada).status_code == 204
    assert error_of(server.get(f"/api/rooms/{room['id']}", headers=ada), 404)["code"] == "not_found"
    assert server.get("/api/rooms", headers=ada).json()["data"] == []
    with server.app.state.sessions() as db:
        assert db.get(SessionRow, session_id) is None  # the room's sessions go with it


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_room_names_are_validated(server, name):
    err = error_of(server.post("/api/rooms", headers=server.as_user(), json={"name": name}), 400)
    assert err["param"] == "name"
    room_id = make_room(server)
    assert error_of(server.patch(f"/api/rooms/{room_id}", headers=server.as_user(), json={"name": name}), 400)


def test_members_are_added_changed_and_listed(server):
    ada = server.as_user("ada")
    room_id = make_room(server, bob="viewer")
    r = server.post(f"/api/rooms/{room_id}/members", headers=ada, json={"user": "cy", "role": "editor"})
    assert r.status_code == 201 and r.json() == {"user": "cy", "role": "editor"}
    members = server.get(f"/api/rooms/{room_id}", headers=server.as_user("cy")).json()["members"]
    assert members == [{"user": "ada", "role": "owner"}, {"user": "bob", "role": "viewer"},
                       {"user": "cy", "role": "editor"}]
    r = server.patch(f"/api/rooms/{room_id}/members/bob", headers=ada, json={"role": "editor"})
    assert r.status_code == 200 and r.json() == {"user": "bob", "role": "editor"}
    assert server.get("/api/rooms", headers=server.as_user("bob")).json()["data"][0]["role"] == "editor"

    err = error_of(server.post(f"/api/rooms/{room_id}/members", headers=ada, json={"user": "nobody"}), 404)
    assert err["param"] == "user"
    err = error_of(server.post(f"/api/rooms/{room_id}/members", headers=ada, json={"user": "bob"}), 409)
    assert err["code"] == "already_member"
    err = error_of(server.post(f"/api/rooms/{room_id}/members", headers=ada, json={"user": "bob", "role": "admin"}), 400)
    assert err["param"] == "role"
    assert error_of(server.patch(f"/api/rooms/{room_id}/members/nobody", headers=ada, json={"role": "viewer"}), 404)


def test_roles_are_enforced(server):
    room_id = make_room(server, bob="viewer", cy="editor")
    for who in ("bob", "cy"):  # members, but not owners
        headers = server.as_user(who)
        assert server.get(f"/api/rooms/{room_id}", headers=headers).status_code == 200
        for response in (
            server.post(f"/api/rooms/{room_id}/members", headers=headers, json={"user": "ada", "role": "viewer"}),
            server.patch(f"/api/rooms/{room_id}/members/ada", headers=headers, json={"role": "viewer"}),
            server.delete(f"/api/rooms/{room_id}/members/ada", headers=headers),
            server.patch(f"/api/rooms/{room_id}", headers=headers, json={"name": "mine now"}),
            server.delete(f"/api/rooms/{room_id}", headers=headers),
        ):
            assert error_of(response, 403)["code"] == "forbidden"
    assert server.get(f"/api/rooms/{room_id}", headers=server.as_user()).json()["name"] == "studio"


def test_non_members_see_nothing(server):
    room_id = make_room(server, bob="viewer")
    cy = server.as_user("cy")
    for response in (
        server.get(f"/api/rooms/{room_id}", headers=cy),
        server.get(f"/api/rooms/{room_id}/events", headers=cy),
        server.post(f"/api/rooms/{room_id}/members", headers=cy, json={"user": "cy", "role": "owner"}),
        server.patch(f"/api/rooms/{room_id}/members/bob", headers=cy, json={"role": "owner"}),
        server.delete(f"/api/rooms/{room_id}/members/bob", headers=cy),
        server.delete(f"/api/rooms/{room_id}/members/cy", headers=cy),
        server.patch(f"/api/rooms/{room_id}", headers=cy, json={"name": "x"}),
        server.delete(f"/api/rooms/{room_id}", headers=cy),
    ):
        assert error_of(response, 404)["code"] == "not_found"
    missing = error_of(server.get("/api/rooms/" + "0" * 32, headers=cy), 404)
    assert missing["message"].startswith("No room") and missing["param"] == "room_id"
    assert error_of(server.get(f"/api/rooms/{room_id}"), 401)["code"] == "invalid_api_key"


def test_a_room_keeps_its_last_owner(server):
    ada, bob = server.as_user("ada"), server.as_user("bob")
    room_id = make_room(server, bob="editor")
    assert error_of(server.patch(f"/api/rooms/{room_id}/members/ada", headers=ada, json={"role": "editor"}),
                    409)["code"] == "last_owner"
    assert error_of(server.delete(f"/api/rooms/{room_id}/members/ada", headers=ada), 409)["code"] == "last_owner"
    assert server.patch(f"/api/rooms/{room_id}/members/ada", headers=ada, json={"role": "owner"}).status_code == 200

    assert server.patch(f"/api/rooms/{room_id}/members/bob", headers=ada, json={"role": "owner"}).status_code == 200
    assert server.patch(f"/api/rooms/{room_id}/members/ada", headers=bob, json={"role": "viewer"}).status_code == 200
    assert error_of(server.patch(f"/api/rooms/{room_id}/members/bob", headers=bob, json={"role": "viewer"}),
                    409)["code"] == "last_owner"
    assert error_of(server.delete(f"/api/rooms/{room_id}/members/bob", headers=bob), 409)["code"] == "last_owner"
    members = server.get(f"/api/rooms/{room_id}", headers=ada).json()["members"]
    assert {m["user"]: m["role"] for m in members} == {"ada": "viewer", "bob": "owner"}


def test_members_may_leave_and_owners_may_remove(server):
    ada = server.as_user("ada")
    room_id = make_room(server, bob="viewer", cy="editor")
    assert server.delete(f"/api/rooms/{room_id}/members/bob", headers=server.as_user("bob")).status_code == 204
    assert error_of(server.get(f"/api/rooms/{room_id}", headers=server.as_user("bob")), 404)
    assert server.get("/api/rooms", headers=server.as_user("bob")).json()["data"] == []
    assert server.delete(f"/api/rooms/{room_id}/members/cy", headers=ada).status_code == 204
    assert error_of(server.get(f"/api/rooms/{room_id}", headers=server.as_user("cy")), 404)
    assert error_of(server.delete(f"/api/rooms/{room_id}/members/cy", headers=ada), 404)["param"] == "name"
    assert server.get(f"/api/rooms/{room_id}", headers=ada).json()["members"] == [{"user": "ada", "role": "owner"}]


class EventReader:
    """Server-sent events from a streamed response, failing instead of hanging: the heartbeat is
    shortened, so a keep-alive arrives often and the deadline is checked."""

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


def test_room_events_stream_changes_until_the_member_is_removed(server, monkeypatch):
    from pixelchat.server import events

    monkeypatch.setattr(events, "HEARTBEAT_S", 0.1)
    ada = server.as_user("ada")
    room_id = make_room(server, bob="viewer")
    with server.stream("GET", f"/api/rooms/{room_id}/events", headers=server.as_user("bob")) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        stream = EventReader(r)
        assert stream.next() == {"type": "hello", "room": room_id, "role": "viewer"}

        assert server.post(f"/api/rooms/{room_id}/members", headers=ada, json={"user": "cy", "role": "editor"}).status_code == 201
        event = stream.next()
        assert (event["type"], event["action"], event["user"], event["role"]) == ("member", "added", "cy", "editor")
        assert event["room"] == room_id and event["topic"] == f"room:{room_id}"

        server.app.state.events.publish(f"room:{room_id}", {"type": "turn", "session": "s1"})
        assert stream.next()["type"] == "turn"

        assert server.patch(f"/api/rooms/{room_id}", headers=ada, json={"name": "atelier"}).status_code == 200
        assert (lambda e: (e["type"], e["name"]))(stream.next()) == ("room", "atelier")

        assert server.delete(f"/api/rooms/{room_id}/members/bob", headers=ada).status_code == 204
        event = stream.next()
        assert (event["type"], event["action"], event["user"]) == ("member", "removed", "bob")
        assert stream.next() is None  # removed: bob's stream ends


def test_room_events_end_when_the_room_is_deleted(server, monkeypatch):
    from pixelchat.server import events

    monkeypatch.setattr(events, "HEARTBEAT_S", 0.1)
    room_id = make_room(server, cy="editor")
    with server.stream("GET", f"/api/rooms/{room_id}/events", headers=server.as_user("cy")) as r:
        stream = EventReader(r)
        assert stream.next()["role"] == "editor"
        assert server.delete(f"/api/rooms/{room_id}", headers=server.as_user()).status_code == 204
        assert stream.next() == {"type": "deleted", "room": room_id, "topic": f"room:{room_id}"}
        assert stream.next() is None
