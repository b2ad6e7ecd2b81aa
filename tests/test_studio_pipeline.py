"""A diffusion pipeline's steps, guidance and scheduler in the studio: the served model says its
defaults and the schedulers it takes (/v1/models), the create form shows them for a pipeline only,
and what is set there reaches the preview and the pictures drawn (their records say it). The
browser part drives Chromium against `pixelchat serve` on the tiny random pipeline."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).parent))
from conftest import CLI, free_port, serving, start_serve  # noqa: E402
from test_diffusers_engine import pipelines  # noqa: E402,F401  (the tiny pipeline folders)


def test_the_models_list_says_a_pipelines_settings(pipelines, tiny_model, tmp_path):  # noqa: F811
    from pixelchat.engines import load_engine

    with serving(tmp_path / "pipe", pipelines["t2i"], engine="diffusers") as client:
        model = client.get("/v1/models", headers=client.as_user()).json()["data"][0]
    assert model["pipeline"]["steps"] == load_engine(pipelines["t2i"]).steps  # the served engine's default
    assert model["pipeline"]["guidance"] == 7.5 and model["pipeline"]["scheduler"] is None
    schedulers = model["pipeline"]["schedulers"]
    assert {"ddim", "euler", "dpm++"} <= set(schedulers) and "flow-euler" not in schedulers
    with serving(tmp_path / "gan", tiny_model) as client:
        model = client.get("/v1/models", headers=client.as_user()).json()["data"][0]
    assert model.get("pipeline") is None  # the built-in models take no such settings


CHROMIUM = os.environ.get("PIXELCHAT_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def studio(tmp_path_factory, pipelines):  # noqa: F811
    """`pixelchat serve` on the tiny pipeline, with user ada, and a browser page signed in as her."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the dev extra installs it
        sync_playwright = None
    if sync_playwright is None or not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("PIXELCHAT_REQUIRE_BROWSER") == "1":
            raise RuntimeError(f"needs playwright and Chromium at {CHROMIUM}")
        pytest.skip(f"needs playwright and Chromium at {CHROMIUM}")
    root = tmp_path_factory.mktemp("studio-pipeline")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELCHAT_")}
    env.update(PIXELCHAT_DATA_DIR=str(root / "data"), PIXELCHAT_MODEL=str(pipelines["t2i"]),
               PIXELCHAT_ENGINE="diffusers", OMP_NUM_THREADS="1")
    subprocess.run([*CLI, "users", "create", "ada", "--password-stdin"], input="correct horse\n", text=True, env=env,
                   check=True, capture_output=True)
    port = free_port()
    proc = start_serve(env, port, root / "serve.log")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(base_url=f"http://127.0.0.1:{port}")
        context.set_default_timeout(60_000)
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.goto("/")
        form = page.locator("#login-form")
        form.get_by_label("Name").fill("ada")
        form.get_by_label("Password").fill("correct horse")
        form.get_by_label("Password").press("Enter")
        yield page
        browser.close()
    proc.terminate()
    proc.wait(60)


def test_the_create_form_sends_steps_guidance_and_scheduler(studio):
    from playwright.sync_api import expect

    page = studio
    expect(page.locator("#me")).to_have_text("ada")
    # signed in once the first view shows (the page loads styles, sizes and settings first)
    expect(page.locator("body")).to_have_attribute("data-view", re.compile(r"^(?!login$)\w+$"))
    page.locator('#tabs a[data-view="create"]').click()
    expect(page.locator("#pipeline-settings")).to_be_visible()
    expect(page.locator("#steps")).to_have_value("25")
    expect(page.locator("#guidance")).to_have_value("7.5")
    expect(page.locator("#scheduler")).to_have_value("")  # the pipeline's own
    page.locator("#steps").fill("2")
    page.locator("#guidance").fill("3")
    page.locator("#scheduler").select_option("euler")
    with page.expect_request(lambda r: r.url.endswith("/api/preview") and '"scheduler"' in (r.post_data or "")) as sent:
        page.locator("#prompt").fill("a lake at night")
        page.locator("#prompt").dispatch_event("input")
    preview = json.loads(sent.value.post_data)
    assert (preview["steps"], preview["guidance"], preview["scheduler"]) == (2, 3, "euler")
    expect(page.locator("#preview")).to_have_attribute("data-prompt", "a lake at night")
    with page.expect_response(lambda r: r.url.endswith("/v1/images/generations")) as answered:
        page.locator("#draw").click()
    request = json.loads(answered.value.request.post_data)
    assert (request["steps"], request["guidance"], request["scheduler"]) == (2, 3, "euler")
    first = answered.value.json()["data"][0]
    png = page.request.get(f"/api/images/{first['id']}/file").body()
    record = json.loads(Image.open(io.BytesIO(png)).text["pixelchat"])
    assert (record["steps"], record["guidance"], record["scheduler_name"]) == (2, 3, "euler")
    assert record["scheduler"] == "EulerDiscreteScheduler" and not page.errors
