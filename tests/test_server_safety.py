"""Safety in the server: prompts checked by the content policy before any work (OpenAI's 400
``content_policy_violation``), every decision logged for the operator, output checkers run on every
picture before it is returned or stored, and provenance on every picture served."""

from __future__ import annotations

import io
import json
import logging

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from conftest import error_of  # noqa: E402

BLOCKED = "a photo of a mutilated corpse"


def test_a_blocked_prompt_is_refused_before_any_work_and_logged_without_its_text(server, caplog):
    ada = server.as_user()
    session = server.post("/api/sessions", headers=ada, json={"checks": 0}).json()["id"]
    with caplog.at_level(logging.INFO, logger="pixelchat.safety"):
        refusals = [server.post("/v1/images/generations", headers=ada, json={"prompt": BLOCKED}),
                    server.post("/api/preview", headers=ada, json={"prompt": BLOCKED}),
                    server.post(f"/api/sessions/{session}/messages", headers=ada, json={"text": BLOCKED}),
                    server.post("/v1/images/edits", headers=ada, data={"prompt": BLOCKED},
                                files={"image": ("a.png", png(), "image/png")})]
        allowed = server.post("/v1/images/generations", headers=ada, json={"prompt": "a killer view of the sea"})
    for refused in refusals:
        error = error_of(refused, 400)
        assert error["code"] == "content_policy_violation" and "graphic violence" in error["message"]
    assert allowed.status_code == 200
    with server.app.state.sessions() as db:  # nothing was queued or stored for the refused ones
        from pixelchat.server.models import ImageRow, Job

        assert [j.payload.get("prompt") for j in db.query(Job)] == ["a killer view of the sea"]
        assert db.query(ImageRow).count() == 1
    decisions = [json.loads(r.getMessage()) for r in caplog.records if r.name == "pixelchat.safety"]
    assert [d["allowed"] for d in decisions] == [False] * 4 + [True]
    assert all(d["user"] == "ada" and d["time"] for d in decisions)
    assert decisions[0]["category"] == "violence_gore" and "prompt" not in decisions[0]


def test_the_operator_may_log_prompts_and_allow_a_category(tmp_path, tiny_model, caplog):
    from fastapi.testclient import TestClient

    from pixelchat.server.admin import create_key, create_user
    from pixelchat.server.app import create_app
    from pixelchat.server.config import Settings

    settings = Settings(data_dir=tmp_path / "data", model=str(tiny_model), secret_key="s", log_prompts=True,
                        moderation_allow="violence_gore")
    app = create_app(settings)
    with app.state.sessions() as db:
        create_user(db, "ada")
        key = create_key(db, "ada")
    with TestClient(app) as client, caplog.at_level(logging.INFO, logger="pixelchat.safety"):
        answer = client.post("/api/preview", headers={"Authorization": f"Bearer {key}"}, json={"prompt": BLOCKED})
    assert answer.status_code == 200
    decision = json.loads([r for r in caplog.records if r.name == "pixelchat.safety"][-1].getMessage())
    assert decision["allowed"] and decision["prompt"] == BLOCKED
    with pytest.raises(ValueError, match="never be allowed"):
        create_app(Settings(data_dir=tmp_path / "d2", secret_key="s", moderation_allow="sexual_minors"))
    with pytest.raises(ValueError, match="nope"):
        create_app(Settings(data_dir=tmp_path / "d3", secret_key="s", output_checkers="nope"))


def test_output_checkers_withhold_a_picture_before_it_is_stored(tmp_path, tiny_model):
    """The operator's checkers run on every picture; a picture that fails is neither returned nor stored."""
    from fastapi.testclient import TestClient

    from pixelchat.server.admin import create_key, create_user
    from pixelchat.server.app import create_app
    from pixelchat.server.config import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", model=str(tiny_model), secret_key="s", output_checkers="blank"))
    with app.state.sessions() as db:
        create_user(db, "ada")
        key = create_key(db, "ada")
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        drawn = client.post("/v1/images/generations", headers=headers, json={"prompt": "a lake at noon"})
        assert drawn.status_code == 200, drawn.text
        # a flat picture is what the "blank" checker withholds: a one-colour palette makes one
        flat = client.post("/v1/images/generations", headers=headers,
                           json={"prompt": "a lake at noon", "palette": ["#808080"]})
        error = error_of(flat, 400)
        assert error["code"] == "content_policy_violation" and "blank" in error["message"]
        assert len(client.get("/api/images", headers=headers).json()["data"]) == 1


def test_pictures_served_in_every_format_say_how_they_were_made(server):
    from pixelchat.safety.provenance import read_provenance

    for fmt in ("png", "jpeg", "webp"):
        answer = server.post("/v1/images/generations", headers=server.as_user(),
                             json={"prompt": "a house by a lake", "seed": 4, "output_format": fmt})
        assert answer.status_code == 200, answer.text
        import base64

        p = read_provenance(base64.b64decode(answer.json()["data"][0]["b64_json"]))
        assert p.format == fmt and p.record["prompt"] == "a house by a lake" and p.record["seed"] == 4
        assert p.digital_source_type.endswith("trainedAlgorithmicMedia") and "Seed: 4" in p.parameters


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 140, 200)).save(buf, format="PNG")
    return buf.getvalue()
