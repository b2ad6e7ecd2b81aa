"""The server in-process (TestClient) and as a real uvicorn process driven by the `openai` package."""

from __future__ import annotations

import base64
import io
import json
import os
import time

import pytest
from PIL import Image

fastapi = pytest.importorskip("fastapi")

from conftest import cli_account, error_of, free_port, start_serve  # noqa: E402


def test_health_needs_no_key_and_everything_else_does(server):
    assert server.get("/health").json() == {"status": "ok"}
    err = error_of(server.post("/v1/images/generations", json={"prompt": "hills"}), 401)
    assert err["code"] == "invalid_api_key" and "Bearer" in err["message"]
    err = error_of(server.get("/v1/models", headers={"Authorization": "Bearer pc-wrong"}), 401)
    assert err["message"] == "Incorrect API key provided."
    assert server.get("/v1/models", headers=server.as_user()).json()["data"][0]["object"] == "model"
    paths = server.get("/openapi.json").json()["paths"]
    assert {"/v1/images/generations", "/v1/images/edits", "/v1/images/variations", "/api/images/{image_id}"} <= set(paths)


def test_generations_return_pictures_with_their_records(server):
    r = server.post("/v1/images/generations", headers=server.as_user(),
                    json={"prompt": "hills at night", "n": 2, "seed": 5, "size": "32x32"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["data"]) == 2 and body["size"] == "32x32" and body["output_format"] == "png"
    first = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert first.size == (32, 32) and json.loads(first.text["pixelchat"])["seed"] == 5
    assert "revised_prompt" not in body["data"][0]  # drawn from the prompt as sent
    again = server.post("/v1/images/generations", headers=server.as_user("bob"),
                        json={"prompt": "hills at night", "seed": 5}).json()
    pixels = [Image.open(io.BytesIO(base64.b64decode(b["data"][0]["b64_json"]))).tobytes() for b in (again, body)]
    assert pixels[0] == pixels[1]  # same prompt, seed and model: same pixels (the records differ in their time)
    for fmt, magic in (("jpeg", b"\xff\xd8"), ("webp", b"RIFF")):
        r = server.post("/v1/images/generations", headers=server.as_user(),
                        json={"prompt": "a desert", "output_format": fmt, "output_compression": 80})
        assert base64.b64decode(r.json()["data"][0]["b64_json"]).startswith(magic)


def test_url_responses_are_signed_and_expire(server, monkeypatch):
    r = server.post("/v1/images/generations", headers=server.as_user(),
                    json={"prompt": "a lake", "response_format": "url", "style": "noir"})
    url = r.json()["data"][0]["url"]
    got = server.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert got.headers["x-content-type-options"] == "nosniff"
    import numpy as np

    pixels = np.asarray(Image.open(io.BytesIO(got.content)).convert("RGB")).astype(int)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()  # noir applied
    assert error_of(server.get(url.replace("signature=", "signature=0")), 404)["code"] == "not_found"
    assert server.get(url.replace(".png?", ".webp?")).status_code == 404  # the signature covers the format
    import pixelchat.server.routes.openai_images as routes

    later = time.time() + 10 * 3600
    monkeypatch.setattr(routes.time, "time", lambda: later)
    assert error_of(server.get(url), 404)["code"] == "expired"


@pytest.mark.parametrize("body, param, status", [
    ({"prompt": "hills", "n": 11}, "n", 400),
    ({"prompt": ""}, "prompt", 400),
    ({"prompt": "hills", "size": "1024x1024"}, "size", 400),
    ({"prompt": "hills", "response_format": "gif"}, "response_format", 400),
    ({"prompt": "hills", "n": "two"}, "n", 400),
    ({"prompt": "hills", "style": "baroque"}, "style", 400),
    ({"prompt": "hills", "negative_prompt": "boats"}, "negative_prompt", 400),
    ({"prompt": "hills", "model": "midjourney"}, "model", 404),
])
def test_bad_requests_get_openai_errors(server, body, param, status):
    err = error_of(server.post("/v1/images/generations", headers=server.as_user(), json=body), status)
    assert err["param"] == param and err["message"]


def test_migrations_go_down_and_up(tmp_path):
    from sqlalchemy import inspect

    from pixelchat.server.db import downgrade, get_engine, migrate

    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url)
    assert {"users", "api_keys", "images"} <= set(inspect(get_engine(url)).get_table_names())
    downgrade(url, "base")
    assert "users" not in inspect(get_engine(url)).get_table_names()
    migrate(url, "0001")
    migrate(url)
    assert "images" in inspect(get_engine(url)).get_table_names()


def test_migrations_match_the_models(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from pixelchat.server.db import get_engine, migrate
    from pixelchat.server.models import Base

    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url)
    with get_engine(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_the_openai_client_talks_to_a_real_server(tmp_path, tiny_model, picture):
    openai = pytest.importorskip("openai")
    env = {**os.environ, "PIXELCHAT_DATA_DIR": str(tmp_path / "data"), "PIXELCHAT_MODEL": str(tiny_model)}
    key = cli_account(env, "ada")
    port = free_port()
    proc = start_serve(env, port, tmp_path / "serve.log")
    try:
        base = f"http://127.0.0.1:{port}/v1"
        client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=30)
        result = client.images.generate(prompt="a lake at sunset", n=2, size="32x32", response_format="b64_json",
                                        extra_body={"seed": 3})
        assert len(result.data) == 2 and result.data[0].revised_prompt is None  # drawn from the prompt as sent
        assert Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).size == (32, 32)
        linked = client.images.generate(prompt="a desert", response_format="url")
        import httpx

        assert httpx.get(linked.data[0].url).headers["content-type"] == "image/png"
        edited = client.images.edit(image=("lake.png", picture, "image/png"), prompt="make it night", n=1)
        assert "night" in edited.data[0].revised_prompt
        with pytest.warns(DeprecationWarning):  # the client marks variations deprecated; they still work
            varied = client.images.create_variation(image=("lake.png", picture, "image/png"), n=2)
        assert len(varied.data) == 2
        with pytest.raises(openai.APIStatusError) as refused:
            client.images.edit(image=("x.png", b"<html></html>", "image/png"), prompt="add a boat")
        assert refused.value.status_code == 415
        with pytest.raises(openai.BadRequestError) as bad:
            client.images.generate(prompt="a lake", size="1024x1024")
        assert bad.value.status_code == 400 and "size" in bad.value.message
        with pytest.raises(openai.NotFoundError):
            client.images.generate(prompt="a lake", model="midjourney")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base, api_key="pc-nope", max_retries=0).images.generate(prompt="a lake")
    finally:
        proc.terminate()
        proc.wait(10)


def png_of(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def picture() -> bytes:
    import numpy as np

    from pixelchat.data.scenes import render_scene, sample_attributes

    return png_of(render_scene(sample_attributes(np.random.default_rng(2), {"water": "lake"}), 32, 2))


def test_edits_and_variations_take_uploads(server, picture):
    r = server.post("/v1/images/edits", headers=server.as_user(), files={"image": ("lake.png", picture, "image/png")},
                    data={"prompt": "make it night", "n": "2", "seed": "1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["data"]) == 2 and "night" in body["data"][0]["revised_prompt"]
    edited = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert json.loads(edited.text["pixelchat"])["edit"]["instruction"] == "make it night"
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 12))  # transparent: the sky may change
    r = server.post("/v1/images/edits", headers=server.as_user(),
                    files={"image": ("lake.png", picture, "image/png"), "mask": ("m.png", png_of(mask), "image/png")},
                    data={"prompt": "add clouds", "response_format": "url"})
    assert r.status_code == 200, r.text and server.get(r.json()["data"][0]["url"]).status_code == 200
    r = server.post("/v1/images/variations", headers=server.as_user(),
                    files={"image": ("lake.png", picture, "image/png")}, data={"n": "3"})
    assert r.status_code == 200 and len(r.json()["data"]) == 3


def test_hostile_uploads_are_refused_with_the_right_status(server, picture):
    def post(files, data=None):
        return server.post("/v1/images/edits", headers=server.as_user(), files=files,
                           data={"prompt": "add a boat", **(data or {})})

    err = error_of(post({"image": ("x.png", b"<html><script>alert(1)</script></html>", "image/png")}), 415)
    assert err["param"] == "image" and err["code"] == "unsupported_format"
    assert error_of(post({"image": ("x.png", picture[: len(picture) // 2], "image/png")}), 400)["code"] == "corrupt_image"
    big = png_of(Image.new("L", (5000, 5000)))  # small file, too many pixels
    assert error_of(post({"image": ("x.png", big, "image/png")}), 413)["code"] in ("too_many_pixels", "too_large")
    assert error_of(post({"image": ("x.png", b"\x89PNG" + b"0" * (5 * 1024 * 1024), "image/png")}), 413)
    wrong = png_of(Image.new("L", (16, 16)))
    assert error_of(post({"image": ("x.png", picture, "image/png"), "mask": ("m.png", wrong, "image/png")}), 400)["param"] == "mask"
    assert error_of(post({"image": ("x.png", picture, "image/png")}, {"prompt": "make it better"}), 400)["param"] == "prompt"
    assert error_of(server.post("/v1/images/variations", headers=server.as_user(), data={"n": "1"}), 400)["param"] == "image"


def test_our_images_api_is_per_user(server):
    made = server.post("/v1/images/generations", headers=server.as_user(),
                       json={"prompt": "snowy peaks at night", "n": 2}).json()["data"]
    server.post("/v1/images/generations", headers=server.as_user(), json={"prompt": "a desert by day"})
    ids = [d["id"] for d in made]
    listed = server.get("/api/images", headers=server.as_user()).json()
    assert len(listed["data"]) == 3 and not listed["has_more"]
    found = server.get("/api/images", headers=server.as_user(), params={"q": "PEAKS night"}).json()["data"]
    assert sorted(i["id"] for i in found) == sorted(ids)
    assert server.get("/api/images", headers=server.as_user(), params={"limit": 1}).json()["has_more"]
    one = server.get(f"/api/images/{ids[0]}", headers=server.as_user()).json()
    assert one["prompt"] == "snowy peaks at night" and "latent" in one["record"]
    png = server.get(f"/api/images/{ids[0]}/file", headers=server.as_user())
    assert png.headers["content-type"] == "image/png"
    assert json.loads(Image.open(io.BytesIO(png.content)).text["pixelchat"])["prompt"] == "snowy peaks at night"
    # another user sees nothing of it, and cannot delete it
    assert server.get("/api/images", headers=server.as_user("bob")).json()["data"] == []
    for method, path in (("get", f"/api/images/{ids[0]}"), ("get", f"/api/images/{ids[0]}/file"),
                         ("delete", f"/api/images/{ids[0]}")):
        err = error_of(getattr(server, method)(path, headers=server.as_user("bob")), 404)
        assert "snowy" not in json.dumps(err)
    assert server.get(f"/api/images/{ids[0]}").status_code == 401
    stored = server.app.state.store.path(one["sha256"])
    assert stored.exists()
    assert server.delete(f"/api/images/{ids[0]}", headers=server.as_user()).status_code == 204
    assert server.get(f"/api/images/{ids[0]}", headers=server.as_user()).status_code == 404
    assert not stored.exists() and len(server.get("/api/images", headers=server.as_user()).json()["data"]) == 2


def test_describe_an_upload(server, picture):
    r = server.post("/api/describe", headers=server.as_user(), files={"image": ("lake.png", picture, "image/png")})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["caption"] and d["prompt"] and set(d["attributes"]) <= set(d["confidence"])
    assert all(0.0 <= p <= 1.0 for p in d["confidence"].values())
    err = error_of(server.post("/api/describe", headers=server.as_user(),
                               files={"image": ("x.png", b"GIF89a....", "image/png")}), 415)
    assert err["param"] == "image"
    assert server.post("/api/describe", files={"image": ("lake.png", picture, "image/png")}).status_code == 401
