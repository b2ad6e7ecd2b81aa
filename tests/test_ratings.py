"""Star ratings, pairwise votes and the model leaderboard over HTTP."""

from __future__ import annotations

import io
import secrets

import pytest

pytest.importorskip("fastapi")

from PIL import Image  # noqa: E402
from sqlalchemy import select  # noqa: E402

from conftest import error_of  # noqa: E402
from pixelchat.server.models import ImageRow, SessionRow, User  # noqa: E402


def add_image(server, owner="ada", model=None, session_id=None, shade=0, prompt="hills") -> str:
    """A stored PNG and its row, as if ``model`` had drawn it for ``owner``."""
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 40, 90)).save(png, "PNG")
    sha = server.app.state.store.put(png.getvalue())
    with server.app.state.sessions() as db:
        user = db.scalar(select(User).where(User.name == owner))
        row = ImageRow(id=secrets.token_hex(16), user_id=user.id, sha256=sha, prompt=prompt, record={},
                       model=model, session_id=session_id)
        db.add(row)
        db.commit()
        return row.id


def room_image(server, **members) -> str:
    """A picture of ada's in a session of a room with ``members``."""
    ada = server.as_user("ada")
    room_id = server.post("/api/rooms", headers=ada, json={"name": "studio"}).json()["id"]
    for who, role in members.items():
        assert server.post(f"/api/rooms/{room_id}/members", headers=ada, json={"user": who, "role": role}).status_code == 201
    with server.app.state.sessions() as db:
        ada_id = db.scalar(select(User.id).where(User.name == "ada"))
        session = SessionRow(id=secrets.token_hex(16), user_id=ada_id, room_id=room_id, title="chat", data="{}")
        db.add(session)
        db.commit()
    return add_image(server, session_id=session.id)


def test_ratings_replace_average_and_delete(server):
    ada, bob = server.as_user("ada"), server.as_user("bob")
    image_id = room_image(server, bob="viewer")
    url = f"/api/images/{image_id}/rating"
    assert server.get(url, headers=ada).json() == {"mine": None, "mean": None, "count": 0}
    r = server.put(url, headers=ada, json={"stars": 4})
    assert r.status_code == 200 and r.json()["stars"] == 4 and r.json()["image_id"] == image_id
    assert server.put(url, headers=ada, json={"stars": 2}).json()["stars"] == 2
    assert server.get(url, headers=ada).json() == {"mine": 2, "mean": 2.0, "count": 1}
    assert server.put(url, headers=bob, json={"stars": 5}).status_code == 200  # a viewer in the room may rate
    assert server.get(url, headers=bob).json() == {"mine": 5, "mean": 3.5, "count": 2}
    assert server.delete(url, headers=ada).status_code == 204
    assert server.get(url, headers=ada).json() == {"mine": None, "mean": 5.0, "count": 1}
    assert server.delete(url, headers=ada).status_code == 204  # nothing left to withdraw


@pytest.mark.parametrize("stars", [0, 6, 2.5, "many", None])
def test_stars_are_one_to_five(server, stars):
    image_id = add_image(server)
    err = error_of(server.put(f"/api/images/{image_id}/rating", headers=server.as_user(), json={"stars": stars}), 400)
    assert err["param"] == "stars"


def test_someone_elses_picture_cannot_be_rated(server):
    image_id = room_image(server, bob="viewer")
    cy = server.as_user("cy")
    url = f"/api/images/{image_id}/rating"
    for response in (server.put(url, headers=cy, json={"stars": 3}), server.get(url, headers=cy),
                     server.delete(url, headers=cy)):
        assert error_of(response, 404)["param"] == "image_id"
    assert error_of(server.get("/api/images/nope/rating", headers=cy), 404)["code"] == "not_found"


def test_votes_need_two_visible_distinct_pictures(server):
    ada = server.as_user("ada")
    mine, other = add_image(server, model="big"), add_image(server, model="small", shade=9)
    bobs = add_image(server, owner="bob", model="small")
    r = server.post("/api/votes", headers=ada, json={"image_a": mine, "image_b": other, "winner": "tie"})
    assert r.status_code == 201, r.text
    assert {k: r.json()[k] for k in ("image_a", "image_b", "winner")} == {"image_a": mine, "image_b": other,
                                                                          "winner": "tie"}
    err = error_of(server.post("/api/votes", headers=ada, json={"image_a": mine, "image_b": bobs, "winner": "a"}), 404)
    assert err["param"] == "image_b"
    err = error_of(server.post("/api/votes", headers=ada, json={"image_a": bobs, "image_b": mine, "winner": "a"}), 404)
    assert err["param"] == "image_a"
    err = error_of(server.post("/api/votes", headers=ada, json={"image_a": mine, "image_b": mine, "winner": "a"}), 400)
    assert err["param"] == "image_b"
    err = error_of(server.post("/api/votes", headers=ada, json={"image_a": mine, "image_b": other, "winner": "c"}), 400)
    assert err["param"] == "winner"


def test_votes_compare_like_with_like(server):
    """Two pictures of one prompt (whatever its case and spacing); pictures of two prompts are refused."""
    ada = server.as_user("ada")
    lake, lake_too = add_image(server, model="big", prompt="a lake"), add_image(server, model="small", prompt=" A  lake")
    desert = add_image(server, model="small", prompt="a desert")
    assert server.post("/api/votes", headers=ada, json={"image_a": lake, "image_b": lake_too,
                                                        "winner": "a"}).status_code == 201
    err = error_of(server.post("/api/votes", headers=ada, json={"image_a": lake, "image_b": desert, "winner": "a"}), 400)
    assert err["param"] == "image_b" and "same prompt" in err["message"]


def test_leaderboard_ranks_models_by_votes_with_their_ratings(server):
    ada = server.as_user("ada")
    big = [add_image(server, model="big", shade=i) for i in range(3)]
    small = [add_image(server, model="small", shade=10 + i) for i in range(3)]
    unknown = add_image(server, shade=30)
    votes = [(big[0], small[0], "a"), (big[1], small[1], "a"), (small[0], big[1], "b"), (big[0], small[1], "a"),
             (small[2], big[2], "a"), (big[2], small[0], "tie"),
             (big[0], big[1], "a"),  # two of big's own: counted in its votes, not in its score
             (unknown, small[0], "a")]  # an unknown model: skipped
    for a, b, winner in votes:
        r = server.post("/api/votes", headers=ada, json={"image_a": a, "image_b": b, "winner": winner})
        assert r.status_code == 201, r.text
    for image_id, stars in ((big[0], 5), (big[1], 4), (small[0], 2), (unknown, 1)):
        assert server.put(f"/api/images/{image_id}/rating", headers=ada, json={"stars": stars}).status_code == 200

    board = server.get("/api/leaderboard", headers=server.as_user("cy")).json()  # anyone signed in may read it
    assert board["method"] == "bradley-terry"
    assert [m["model"] for m in board["models"]] == ["big", "small"]
    first, second = board["models"]
    keys = ("votes", "own_votes", "wins", "losses", "ties", "mean_stars", "ratings")
    assert {k: first[k] for k in keys} == {
        "votes": 7, "own_votes": 1, "wins": 4, "losses": 1, "ties": 1, "mean_stars": 4.5, "ratings": 2}
    assert {k: second[k] for k in keys} == {
        "votes": 6, "own_votes": 0, "wins": 1, "losses": 4, "ties": 1, "mean_stars": 2.0, "ratings": 1}
    assert first["score"] > 1000 > second["score"]
    assert first["score"] - 1000 == pytest.approx(1000 - second["score"], abs=0.2)
    assert error_of(server.get("/api/leaderboard"), 401)


def test_an_empty_leaderboard(server):
    assert server.get("/api/leaderboard", headers=server.as_user()).json() == {"models": [],
                                                                                "method": "bradley-terry"}
