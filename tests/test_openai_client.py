"""Apps written for OpenAI work unchanged: the official `openai` client against a real uvicorn server
(127.0.0.1, a free port) on the tiny model, sending what DALL·E and gpt-image-1 apps send."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time

import pytest
from PIL import Image

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from conftest import free_port  # noqa: E402

OPENAI_MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5")
BLOCKED = "a photo of a mutilated corpse"


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_model):
    """The app served by uvicorn in this process; ``live.client`` is an `openai.OpenAI` for ada and
    ``live.app`` the application (its engine, queue and settings)."""
    from pixelchat.server.admin import create_key, create_user
    from pixelchat.server.app import create_app
    from pixelchat.server.config import Settings

    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("live") / "data", model=str(tiny_model),
                              secret_key="live"))
    with app.state.sessions() as db:
        create_user(db, "ada")
        key = create_key(db, "ada")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(600):
        if server.started:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the server did not start")

    class Live:
        pass

    live = Live()
    live.app, live.base = app, f"http://127.0.0.1:{port}/v1"
    live.client = openai.OpenAI(base_url=live.base, api_key=key, max_retries=0, timeout=60)
    yield live
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def picture() -> bytes:
    import numpy as np

    from pixelchat.data.scenes import render_scene, sample_attributes

    return png_of(render_scene(sample_attributes(np.random.default_rng(2), {"water": "lake"}), 32, 2))


def png_of(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def decoded(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def record_of(b64: str) -> dict:
    return json.loads(decoded(b64).text["pixelchat"])


def served_id(live) -> str:
    from pixelchat.server.handlers import engine_of

    return engine_of(live.app.state.jobs).info.id


# --- models --------------------------------------------------------------------------------------------------

def test_openai_model_names_are_aliases_listed_by_models(live, picture):
    listed = {m.id: m for m in live.client.models.list().data}
    assert set(OPENAI_MODELS) | {served_id(live)} == set(listed)
    assert all(m.model_extra["root"] == served_id(live) for m in listed.values())
    assert all(m.model_extra["sizes"] == ["32x32"] and m.model_extra["default_size"] == "32x32" for m in listed.values())
    for name in OPENAI_MODELS:
        drawn = live.client.images.generate(model=name, prompt="hills at night")
        assert drawn.model_extra["model"] == served_id(live)  # the answer names the model that drew it
        assert record_of(drawn.data[0].b64_json)["model"]["id"] == served_id(live)
    edited = live.client.images.edit(model="gpt-image-1", image=("lake.png", picture, "image/png"),
                                     prompt="make it night")
    assert edited.model_extra["model"] == served_id(live)
    with pytest.warns(DeprecationWarning):  # the client marks variations deprecated; they still work
        varied = live.client.images.create_variation(model="dall-e-2", image=("lake.png", picture, "image/png"))
    assert varied.model_extra["model"] == served_id(live)
    with pytest.raises(openai.NotFoundError) as missing:
        live.client.images.generate(model="midjourney", prompt="hills")
    assert "gpt-image-1" in missing.value.message  # it says which names do exist


def test_aliases_are_configurable(tmp_path, tiny_model):
    from fastapi.testclient import TestClient

    from pixelchat.server.admin import create_key, create_user
    from pixelchat.server.app import create_app
    from pixelchat.server.config import Settings

    app = create_app(Settings(data_dir=tmp_path / "d", model=str(tiny_model), secret_key="s",
                              model_aliases="house-model"))
    with app.state.sessions() as db:
        create_user(db, "ada")
        headers = {"Authorization": f"Bearer {create_key(db, 'ada')}"}
    with TestClient(app) as client:
        ids = [m["id"] for m in client.get("/v1/models", headers=headers).json()["data"]]
        assert "house-model" in ids and "dall-e-3" not in ids
        assert client.post("/v1/images/generations", headers=headers,
                           json={"model": "house-model", "prompt": "a lake"}).status_code == 200
        assert client.post("/v1/images/generations", headers=headers,
                           json={"model": "dall-e-3", "prompt": "a lake"}).status_code == 404


# --- sizes ---------------------------------------------------------------------------------------------------

def test_sizes_the_model_draws_are_honoured_and_the_rest_refused_with_the_list(live):
    for size in ("auto", "32x32"):
        drawn = live.client.images.generate(prompt="a desert", size=size)
        assert drawn.size == "32x32" and decoded(drawn.data[0].b64_json).size == (32, 32)
    for size in ("256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "32x64", "big"):
        with pytest.raises(openai.BadRequestError) as refused:
            live.client.images.generate(prompt="a desert", size=size)
        assert refused.value.body["param"] == "size" and "'32x32'" in refused.value.message


def test_the_chosen_size_reaches_the_engine(live, monkeypatch, tmp_path, picture):
    """An engine with an upsampler draws every size it lists, on generate, edit and variations; 'auto'
    is its default size."""
    from pixelchat.server.handlers import engine_of
    from pixelchat.training.upsampler import train_upsampler

    up = train_upsampler(tmp_path / "up", n_images=6, in_size=32, scales=(2, 4), features=4, body=1, steps=1,
                         minutes=0, batch_size=2, patch=16, n_test=2, progress=False)
    engine = engine_of(live.app.state.jobs)
    for name in ("info", "_upsampler", "_upsampler_path"):  # put back afterwards
        monkeypatch.setattr(engine, name, getattr(engine, name))
    engine.attach_upsampler({}, up)
    listed = live.client.models.list().data[0].model_extra
    assert listed["sizes"] == ["32x32", "64x64", "128x128"] and listed["default_size"] == "32x32"
    drawn = live.client.images.generate(prompt="a lake", size="128x128")
    assert drawn.size == "128x128" and decoded(drawn.data[0].b64_json).size == (128, 128)
    assert record_of(drawn.data[0].b64_json)["upsampler"]["scale"] == 4
    assert live.client.images.generate(prompt="a lake", size="auto").size == "32x32"
    edited = live.client.images.edit(image=("p.png", picture), prompt="add a boat", size="64x64")
    assert decoded(edited.data[0].b64_json).size == (64, 64)
    with pytest.warns(DeprecationWarning):  # the client marks variations deprecated; they still work
        varied = live.client.images.create_variation(image=("p.png", picture), size="128x128")
    assert decoded(varied.data[0].b64_json).size == (128, 128)
    with pytest.raises(openai.BadRequestError) as refused:
        live.client.images.generate(prompt="a lake", size="1024x1024")
    assert "'32x32', '64x64', '128x128'" in refused.value.message


# --- gpt-image-1 parameters ----------------------------------------------------------------------------------

def test_output_format_and_compression(live):
    sizes = {}
    for fmt, magic in (("jpeg", b"\xff\xd8"), ("webp", b"RIFF"), ("png", b"\x89PNG")):
        for compression in (5, 95):
            drawn = live.client.images.generate(prompt="a lake at sunset", output_format=fmt,
                                                output_compression=compression, extra_body={"seed": 4})
            raw = base64.b64decode(drawn.data[0].b64_json)
            assert raw.startswith(magic) and drawn.output_format == fmt
            sizes[fmt, compression] = len(raw)
    assert sizes["jpeg", 5] < sizes["jpeg", 95] and sizes["webp", 5] < sizes["webp", 95]
    assert sizes["png", 5] == sizes["png", 95]  # PNG is lossless: compression is for JPEG and WebP


def test_quality_sets_how_many_candidates_the_self_check_compares(live):
    low = live.client.images.generate(prompt="snowy mountains at night", quality="low", extra_body={"seed": 10})
    record = record_of(low.data[0].b64_json)
    assert low.quality == "low" and record["seed"] == 10 and "self_check" not in record
    high = live.client.images.generate(prompt="snowy mountains at night", quality="high", n=2,
                                       extra_body={"seed": 10})
    checks = [record_of(d.b64_json)["self_check"] for d in high.data]
    assert high.quality == "high"
    assert [c["seeds"] for c in checks] == [[10, 11, 12, 13], [14, 15, 16, 17]]
    assert all(record_of(d.b64_json)["seed"] in c["seeds"] for d, c in zip(high.data, checks))
    assert checks[0]["attributes_named"] == 3  # snow, terrain, time
    medium = live.client.images.generate(prompt="a lake", quality="medium", extra_body={"seed": 1})
    assert record_of(medium.data[0].b64_json)["self_check"]["seeds"] == [1, 2]


def test_a_transparent_background_is_refused_clearly(live):
    with pytest.raises(openai.BadRequestError) as refused:
        live.client.images.generate(prompt="a lake", background="transparent")
    assert refused.value.body["param"] == "background" and "opaque" in refused.value.message
    assert live.client.images.generate(prompt="a lake", background="opaque").background == "opaque"


def test_moderation_low_never_switches_moderation_off(live):
    for level in ("low", "auto"):
        with pytest.raises(openai.BadRequestError) as refused:
            live.client.images.generate(prompt=BLOCKED, moderation=level)
        assert refused.value.code == "content_policy_violation"


def test_the_end_user_is_named_in_the_moderation_log(live, caplog):
    with caplog.at_level(logging.INFO, logger="pixelchat.safety"):
        live.client.images.generate(prompt="a lake", user="app-user-42")
    decisions = [json.loads(r.getMessage()) for r in caplog.records if r.name == "pixelchat.safety"]
    assert decisions and decisions[-1]["user"] == "ada/app-user-42"


def test_stream_sends_partial_pictures_then_the_final_one(live):
    events = list(live.client.images.generate(prompt="a lake with a boat", stream=True, partial_images=2,
                                              extra_body={"seed": 3}))
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    final = record_of(events[-1].b64_json)
    assert final["self_check"]["seeds"] == [3, 4, 5]
    partial_seeds = [record_of(e.b64_json)["seed"] for e in events[:2]]
    assert sorted(partial_seeds + [final["seed"]]) == [3, 4, 5]  # the runners-up, then the one kept
    assert events[-1].usage.output_tokens == 3 and events[-1].size == "32x32"
    plain = list(live.client.images.generate(prompt="a lake", stream=True))
    assert [e.type for e in plain] == ["image_generation.completed"]


def test_a_streamed_refusal_is_an_error(live):
    with pytest.raises(openai.BadRequestError):
        list(live.client.images.generate(prompt=BLOCKED, stream=True, partial_images=1))


def test_edit_streams_and_takes_several_images_and_input_fidelity(live, picture):
    other = png_of(Image.new("RGB", (32, 32), "red"))
    events = list(live.client.images.edit(image=[("lake.png", picture, "image/png"), ("red.png", other, "image/png")],
                                          prompt="make it night", stream=True, partial_images=1))
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    several = live.client.images.edit(image=[("lake.png", picture, "image/png"), ("red.png", other, "image/png")],
                                      prompt="make it night", input_fidelity="high", quality="low")
    assert "first" in several.model_extra["notes"][0]
    record = record_of(several.data[0].b64_json)
    assert record["edit"]["strength"] == 0.2 and several.quality == "low"
    assert "night" in several.data[0].revised_prompt  # the instruction was read into a whole prompt
    assert several.usage.input_tokens_details.image_tokens == 2


def test_unknown_parameters_are_ignored_and_wrong_types_are_openai_errors(live, picture):
    drawn = live.client.images.generate(prompt="a lake", extra_body={"colour": "red", "safety_identifier": "x"})
    assert len(drawn.data) == 1
    for body in ({"n": "two"}, {"stream": "sometimes"}, {"partial_images": 9}, {"quality": "ultra"}):
        with pytest.raises(openai.BadRequestError) as bad:
            live.client.images.generate(prompt="a lake", extra_body=body)
        assert bad.value.body["param"] == next(iter(body)) and bad.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as bad:
        live.client.images.generate(prompt=["not", "a", "string"])
    assert bad.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as bad:
        live.client.images.edit(image=("lake.png", picture, "image/png"), prompt="add a boat", extra_body={"n": "x"})
    assert bad.value.body["param"] == "n"


def test_answers_carry_usage_created_and_revised_prompt_only_when_rewritten(live):
    before = int(time.time())
    drawn = live.client.images.generate(prompt="a lake at sunset", n=2)
    assert before <= drawn.created <= time.time() + 1
    assert drawn.data[0].revised_prompt is None  # drawn from the prompt as sent
    usage = drawn.usage
    assert usage.input_tokens_details.text_tokens == 4 and usage.output_tokens == 2
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_the_self_check_keeps_the_candidate_that_shows_most_of_the_prompt():
    """Pure: the reading that agrees with more named attributes wins, then the surer one, then the earlier seed."""
    from types import SimpleNamespace

    from pixelchat.engines import GeneratedImage
    from pixelchat.server.quality import self_check

    readings = {1: ({"water": "sea", "boat": "yes"}, 0.9), 2: ({"water": "lake", "boat": "yes"}, 0.6),
                3: ({"water": "lake", "boat": "yes"}, 0.8), 4: ({"water": "lake", "boat": "no"}, 0.9),
                5: ({"water": "lake", "boat": "yes"}, 0.5), 6: ({"water": "lake", "boat": "yes"}, 0.5)}
    engine = SimpleNamespace(describe=lambda image: SimpleNamespace(
        attributes=readings[image.info["seed"]][0], confidence=dict.fromkeys(("water", "boat"),
                                                                             readings[image.info["seed"]][1])))

    def drawn(seed):
        image = Image.new("RGB", (4, 4))
        image.info["seed"] = seed
        return GeneratedImage(image, "a lake with a boat", seed, {"seed": seed})

    kept, runners_up = self_check(engine, "a lake with a boat", [drawn(s) for s in range(1, 7)], 3)
    assert [k.seed for k in kept] == [3, 5]  # 2 and 3 show both; 3 is surer. 5 and 6 tie: the earlier seed
    assert [r.seed for r in runners_up] == [1, 2]  # weakest first
    assert kept[0].record["self_check"] == {"candidates": 3, "seeds": [1, 2, 3], "attributes_named": 2,
                                            "attributes_seen": 2}
    one = [drawn(1)]
    assert self_check(engine, "a lake", one, 1) == (one, []) and "self_check" not in one[0].record
