"""Conversations kept by the server: turns as jobs, the history tree, undo and branching, rooms."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from conftest import error_of  # noqa: E402


def say(server, session_id: str, text: str, who: str = "ada", headers: dict | None = None):
    return server.post(f"/api/sessions/{session_id}/messages", headers={**server.as_user(who), **(headers or {})},
                       json={"text": text})


def test_a_conversation_over_the_api(server):
    created = server.post("/api/sessions", headers=server.as_user(), json={"title": "lake", "seed": 3, "checks": 1})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    assert created.json()["nodes"] == [] and created.json()["role"] == "owner"
    first = say(server, sid, "a lake at sunset with a boat")
    assert first.status_code == 200, first.text
    turn = first.json()
    assert turn["kind"] == "generate" and turn["prompt"] == "a lake at sunset with a boat" and len(turn["images"]) == 1
    image = server.get(f"/api/images/{turn['images'][0]}", headers=server.as_user()).json()
    assert image["record"]["session_node"] == turn["node"] and image["record"]["seed"] == 3
    second = say(server, sid, "remove the boat").json()
    assert second["kind"] == "edit" and turn["attributes"]["boat"] != second["attributes"]["boat"], (turn, second)
    tree = server.get(f"/api/sessions/{sid}", headers=server.as_user()).json()
    assert tree["path"] == [turn["node"], second["node"]] and tree["current"] == second["node"]
    assert {n["image_id"] for n in tree["nodes"]} == {turn["images"][0], second["images"][0]}
    undone = server.post(f"/api/sessions/{sid}/undo", headers=server.as_user()).json()
    assert undone["kind"] == "undo" and undone["node"] == turn["node"] and undone["images"] == []
    branch = say(server, sid, "make it night").json()
    tree = server.get(f"/api/sessions/{sid}", headers=server.as_user()).json()
    assert [n["parent"] for n in tree["nodes"] if n["id"] == branch["node"]] == [turn["node"]]  # a branch
    assert len(tree["nodes"]) == 3
    back = server.post(f"/api/sessions/{sid}/goto", headers=server.as_user(), json={"node": second["node"]}).json()
    assert back["kind"] == "goto" and back["prompt"] == second["prompt"]
    err = error_of(server.post(f"/api/sessions/{sid}/goto", headers=server.as_user(), json={"node": 99}), 400)
    assert "no turn 99" in err["message"]
    exported = server.get(f"/api/sessions/{sid}/export", headers=server.as_user())
    from pixelchat import Session

    assert len(Session.from_json(exported.text).nodes) == 3
    jobs = server.get("/api/jobs", headers=server.as_user()).json()["data"]
    assert [j["kind"] for j in jobs][:2] == ["message", "message"] and jobs[0]["status"] == "failed"


def test_sessions_are_private_and_rooms_share_them_by_role(server):
    mine = server.post("/api/sessions", headers=server.as_user(), json={}).json()["id"]
    for method, path in (("get", ""), ("get", "/export"), ("post", "/undo"), ("delete", "")):
        assert error_of(getattr(server, method)(f"/api/sessions/{mine}{path}", headers=server.as_user("bob")), 404)
    assert error_of(say(server, mine, "a desert", who="bob"), 404)
    assert mine not in [s["id"] for s in server.get("/api/sessions", headers=server.as_user("bob")).json()["data"]]

    with server.app.state.sessions() as db:  # a room: ada owns it, bob edits, cy views
        from pixelchat.server.models import Room, RoomMember

        db.add(Room(id="r1", name="team"))
        db.flush()
        db.add_all([RoomMember(room_id="r1", user_id=1, role="owner"), RoomMember(room_id="r1", user_id=2, role="editor"),
                    RoomMember(room_id="r1", user_id=3, role="viewer")])
        db.commit()
    assert error_of(server.post("/api/sessions", headers=server.as_user("cy"), json={"room_id": "r1"}), 403)
    shared = server.post("/api/sessions", headers=server.as_user("bob"), json={"room_id": "r1"}).json()["id"]
    made = say(server, shared, "snowy hills", who="bob").json()
    assert say(server, shared, "add trees", who="ada").json()["kind"] == "edit"
    view = server.get(f"/api/sessions/{shared}", headers=server.as_user("cy")).json()
    assert view["role"] == "viewer" and len(view["nodes"]) == 2
    assert server.get(f"/api/images/{made['images'][0]}", headers=server.as_user("cy")).status_code == 200
    err = error_of(say(server, shared, "remove the trees", who="cy"), 403)  # the server refuses, not the page
    assert err["code"] == "forbidden"
    assert error_of(server.post(f"/api/sessions/{shared}/undo", headers=server.as_user("cy")), 403)
    assert error_of(server.delete(f"/api/sessions/{shared}", headers=server.as_user("cy")), 403)
    assert len(server.get(f"/api/sessions/{shared}", headers=server.as_user()).json()["nodes"]) == 2  # unchanged
    listed = server.get("/api/sessions", headers=server.as_user("cy"), params={"room_id": "r1"}).json()["data"]
    assert [s["id"] for s in listed] == [shared]
    assert server.delete(f"/api/sessions/{shared}", headers=server.as_user()).status_code == 204  # the room's owner


def test_a_turn_can_run_as_a_job_to_follow(server):
    sid = server.post("/api/sessions", headers=server.as_user(), json={}).json()["id"]
    r = say(server, sid, "a forest by day", headers={"Prefer": "respond-async"})
    assert r.status_code == 202 and r.headers["location"] == f"/api/jobs/{r.json()['id']}"
    job_id = r.json()["id"]
    with server.stream("GET", f"/api/jobs/{job_id}/events", headers=server.as_user()) as events:
        statuses = [line for line in events.iter_lines() if line.startswith("data:")]
    assert '"status": "succeeded"' in statuses[-1]
    job = server.get(f"/api/jobs/{job_id}", headers=server.as_user()).json()
    assert job["status"] == "succeeded" and job["result"]["turn"]["kind"] == "generate" and len(job["result"]["images"]) == 1
    assert error_of(server.get(f"/api/jobs/{job_id}", headers=server.as_user("bob")), 404)
    assert error_of(server.get(f"/api/jobs/{job_id}/events", headers=server.as_user("bob")), 404)


def test_a_session_keeps_the_size_it_was_created_with(server):
    created = server.post("/api/sessions", headers=server.as_user(), json={"title": "small", "size": 32, "checks": 0})
    assert created.status_code == 201, created.text
    assert created.json()["size"] == 32
    err = error_of(server.post("/api/sessions", headers=server.as_user(), json={"size": 256}), 400)
    assert err["param"] == "size" and "it draws 32" in err["message"]


def test_the_preview_draws_the_size_asked(server):
    import io

    from PIL import Image

    drawn = server.post("/api/preview", headers=server.as_user(), json={"prompt": "a lake", "size": "32x32"})
    assert drawn.status_code == 200 and Image.open(io.BytesIO(drawn.content)).size == (32, 32)
    err = error_of(server.post("/api/preview", headers=server.as_user(), json={"prompt": "a lake", "size": "256x256"}), 400)
    assert err["param"] == "size" and "'32x32'" in err["message"]


def test_a_declined_prompt_is_drawn_when_the_client_asks(server):
    sid = server.post("/api/sessions", headers=server.as_user(), json={"seed": 1, "checks": 0}).json()["id"]
    declined = say(server, sid, "a cat on a sofa").json()
    assert declined["declined"] is True and declined["kind"] == "ask" and declined["images"] == [], declined
    assert declined["reply"].startswith("this model draws landscapes")
    assert server.get(f"/api/sessions/{sid}", headers=server.as_user()).json()["nodes"] == []  # nothing drawn
    drawn = server.post(f"/api/sessions/{sid}/messages", headers=server.as_user(),
                        json={"text": "a cat on a sofa", "anyway": True}).json()
    assert drawn["declined"] is False and drawn["kind"] == "generate" and len(drawn["images"]) == 1, drawn
    again = say(server, sid, "start over: a bowl of fruit on a table").json()  # 'anyway' held for one turn only
    assert again["declined"] is True and again["images"] == [], again
    assert say(server, sid, "a lake at sunset").json()["declined"] is False
    assert say(server, sid, "start over: a portrait of a woman").json()["declined"] is True
    typed = say(server, sid, "draw it anyway").json()  # typed: the session, saved between turns, kept the prompt
    assert typed["kind"] == "generate" and typed["node"] is not None and len(typed["images"]) == 1, typed
    assert error_of(server.post(f"/api/sessions/{sid}/messages", headers=server.as_user(),
                                json={"text": "a cat", "anyway": "yes"}), 400)

    session = server.post("/api/sessions", headers=server.as_user(), json={"draw_anyway": True, "checks": 0}).json()
    assert session["draw_anyway"] is True
    turn = say(server, session["id"], "a portrait of a woman").json()
    assert turn["kind"] == "generate" and not turn["declined"] and len(turn["images"]) == 1, turn
    assert server.get(f"/api/sessions/{session['id']}", headers=server.as_user()).json()["draw_anyway"] is True
    assert error_of(server.post("/api/sessions", headers=server.as_user(), json={"draw_anyway": "on"}), 400)
