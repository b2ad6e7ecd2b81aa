"""The web studio in a real browser: Playwright driving Debian's Chromium against a real `pixelchat
serve` on a free loopback port, with the shipped model. Screenshots of the main screens are saved
under test-artifacts/studio/.

`make test` installs Chromium and sets PIXELCHAT_REQUIRE_BROWSER=1, so there a missing browser fails
instead of skipping."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import CLI, free_port, start_serve  # noqa: E402

CHROMIUM = os.environ.get("PIXELCHAT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("PIXELCHAT_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts")) / "studio"
PASSWORDS = {"ada": "correct horse", "bob": "battery staple", "cy": "tr0ub4dor"}
UPLOAD_LIMIT = 300_000  # bytes, small so a real oversized upload is cheap to make
TIMEOUT = 60_000  # ms, for anything that waits on the engine (generous: CI machines may be busy)
REPLIES = "#log li.reply:not(.aside)"  # the turns on the way to the current picture

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None
if sync_playwright is None or not os.access(CHROMIUM, os.X_OK):
    reason = f"needs playwright and Chromium at {CHROMIUM} (make test installs both)"
    if os.environ.get("PIXELCHAT_REQUIRE_BROWSER") == "1":
        raise RuntimeError(reason)
    pytest.skip(reason, allow_module_level=True)
expect.set_options(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    """`pixelchat serve` on the shipped model, with accounts ada, bob and cy (passwords above)."""
    root = tmp_path_factory.mktemp("studio")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELCHAT_")}
    # every test signs in from this one address, more often than the sign-in limit allows a person
    # (tests/test_hardening.py tests that limit)
    env.update(PIXELCHAT_DATA_DIR=str(root / "data"), PIXELCHAT_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
               PIXELCHAT_LOGIN_ATTEMPTS_PER_MINUTE="0")
    for name, password in PASSWORDS.items():
        subprocess.run([*CLI, "users", "create", name, "--password-stdin"], input=password + "\n", text=True,
                       env=env, check=True, capture_output=True)
    port = free_port()
    proc = start_serve(env, port, root / "serve.log")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(60)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        yield browser
        browser.close()


@pytest.fixture
def open_as(browser, base_url):
    """A new browser context signed in as ``name`` through the sign-in form; closed after the test."""
    contexts = []

    def open_as(name: str, url: str | None = None, **context_options):
        context = browser.new_context(base_url=url or base_url, **context_options)
        context.set_default_timeout(TIMEOUT)
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.goto("/")
        form = page.locator("#login-form")
        form.get_by_label("Name").fill(name)
        form.get_by_label("Password").fill(PASSWORDS[name])
        form.get_by_label("Password").press("Enter")  # the keyboard alone signs in
        expect(page.locator("#me")).to_have_text(name)
        # signed in once the first view is shown (the page loads styles, sizes and rooms first)
        expect(page.locator("body")).to_have_attribute("data-view", re.compile(r"^(?!login$)\w+$"))
        return page

    yield open_as
    for context in contexts:
        context.close()


def tab(page, view: str) -> None:
    """Open a view by its tab, and wait until it shows: typing before then would land nowhere."""
    page.locator(f'#tabs a[data-view="{view}"]').click()
    expect(page.locator(f"#view-{view}")).to_be_visible()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def pixels(page, selector: str) -> bytes:
    """The RGBA pixels an <img> shows, read back through a canvas at the picture's own size (once it has loaded)."""
    page.wait_for_function("""(selector) => {
        const img = document.querySelector(selector);
        return img && img.complete && img.naturalWidth > 0;
    }""", arg=selector)
    data = page.evaluate("""(selector) => {
        const img = document.querySelector(selector);
        const canvas = Object.assign(document.createElement('canvas'), {width: img.naturalWidth, height: img.naturalHeight});
        const ctx = canvas.getContext('2d');
        ctx.drawImage(img, 0, 0);
        return Array.from(ctx.getImageData(0, 0, canvas.width, canvas.height).data);
    }""", selector)
    return bytes(data)


def new_conversation(page, title: str = "", room: str | None = None) -> None:
    tab(page, "chat")
    page.locator("#session-title").fill(title)
    if room:
        page.locator("#session-room").select_option(label=room)
    page.get_by_role("button", name="New conversation").click()
    opened(page)


def opened(page) -> str:
    """Wait until the page shows the conversation its address names; its id."""
    expect(page).to_have_url(re.compile(r"#chat/[0-9a-f]{32}$"))
    session_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("body")).to_have_attribute("data-session", session_id)
    return session_id


def say(page, text: str, turns: int) -> None:
    """Send a message and wait until the conversation shows ``turns`` turns."""
    page.locator("#message").fill(text)
    page.locator("#message").press("Enter")
    try:
        expect(page.locator(REPLIES)).to_have_count(turns)
    except AssertionError:
        raise AssertionError(f"no turn {turns}; the page says {page.locator('#notice').inner_text()!r}, "
                             f"shows {page.locator('#log').inner_text()!r}") from None


def test_the_page_is_one_file_set_with_a_strict_policy(base_url):
    import httpx

    page = httpx.get(base_url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name in ("studio.js", "studio.css", "icon.svg"):
        assert httpx.get(f"{base_url}/studio/{name}").status_code == 200
    assert httpx.get(f"{base_url}/studio/..%2Fapp.py").status_code == 404
    assert httpx.get(f"{base_url}/studio/index.html.bak").status_code == 404


def test_sign_in_refine_in_two_turns_and_branch_from_history(browser, base_url, open_as):
    # a wrong password is said plainly and changes nothing
    context = browser.new_context(base_url=base_url)
    page = context.new_page()
    page.goto("/")
    shot(page, "sign-in")
    page.locator("#login-form").get_by_label("Name").fill("ada")
    page.locator("#login-form").get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#notice")).to_contain_text("ncorrect")
    expect(page.locator("#tabs")).to_be_hidden()
    expect(page.locator("#local-account")).to_be_hidden()  # this server has accounts: no one-click account
    # the right password: signed in, and the earlier error is gone
    page.locator("#login-form").get_by_label("Password").fill(PASSWORDS["ada"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#me")).to_have_text("ada")
    expect(page.locator("#notice")).to_be_hidden()
    context.close()

    page = open_as("ada")
    new_conversation(page, "Lake")
    say(page, "a lake at sunset", 1)
    expect(page.locator("#current")).to_be_visible()
    first = page.locator("#current").get_attribute("data-id")
    # a change the model cannot make is answered in the conversation, and draws nothing
    page.locator("#message").fill("make the sky pink")
    page.locator("#message").press("Enter")
    expect(page.locator("#log li.aside")).to_contain_text("only clouds can change colour")
    expect(page.locator("#current")).to_have_attribute("data-id", first)
    say(page, "make the clouds pink, keep the rest", 2)
    revised = page.locator("#log li.reply:not(.aside) .revised q").last
    expect(revised).to_contain_text("pink")
    second = page.locator("#current").get_attribute("data-id")
    assert second != first
    shot(page, "chat-two-turns")

    # back to the first picture in the history tree, then a new branch from it
    page.locator("#tree button.node").first.click()
    expect(page.locator("#current")).to_have_attribute("data-id", first)
    expect(page.locator(REPLIES)).to_have_count(1)
    say(page, "add a boat", 2)
    expect(page.locator("#tree > li > ul > li")).to_have_count(2)  # two branches from the first turn
    expect(page.locator("#tree button.node[aria-current=true]")).to_contain_text("add a boat")

    # undo goes back to the first picture; the undone turn stays in the tree
    page.get_by_role("button", name="Undo").click()
    expect(page.locator("#current")).to_have_attribute("data-id", first)
    expect(page.locator("#tree button.node")).to_have_count(3)
    shot(page, "chat-history-tree")
    assert not page.errors


def test_live_preview_follows_the_words_while_typing(open_as):
    page = open_as("ada")
    tab(page, "create")
    page.locator("#seed").fill("7")
    page.locator("#seed").dispatch_event("change")
    prompt = page.locator("#prompt")
    prompt.press_sequentially("a red house by a lake", delay=40)
    expect(page.locator("#preview")).to_have_attribute("data-prompt", "a red house by a lake")
    house = pixels(page, "#preview")
    assert len(house) == 256 * 256 * 4  # the default size
    prompt.press_sequentially(" under snowy peaks at night", delay=40)
    expect(page.locator("#preview")).to_have_attribute("data-prompt", "a red house by a lake under snowy peaks at night")
    night = pixels(page, "#preview")
    assert night != house
    assert int(page.locator("#preview").get_attribute("data-count")) >= 2  # it updated while typing, not only at the end
    # the same words and seed again: the same picture
    prompt.fill("")
    prompt.press_sequentially("a red house by a lake", delay=10)
    expect(page.locator("#preview")).to_have_attribute("data-prompt", "a red house by a lake")
    assert pixels(page, "#preview") == house
    # a variations grid, stored in the gallery
    page.get_by_role("button", name="Draw 4").click()
    expect(page.locator("#variations li.card")).to_have_count(4)
    shot(page, "create-live-preview")
    # a prompt the content policy blocks: the server refuses it, and the page says why, once
    prompt.fill("a photo of a mutilated corpse")
    prompt.dispatch_event("input")
    expect(page.locator("#notice")).to_contain_text("blocked by the content policy")
    said = page.locator("#notice-text").inner_text()
    assert said.lower().count("content policy") == 1 and said.count(".") <= 1, said
    # the next picture drawn clears it
    prompt.fill("a lake at noon")
    prompt.dispatch_event("input")
    expect(page.locator("#preview")).to_have_attribute("data-prompt", "a lake at noon")
    expect(page.locator("#notice")).to_be_hidden()
    assert not page.errors


def test_draw_4_keeps_the_previewed_seed_and_shows_seeds(open_as):
    page = open_as("ada")
    tab(page, "create")
    page.locator("#prompt").press_sequentially("hills by a lake at dawn", delay=20)
    expect(page.locator("#preview")).to_have_attribute("data-prompt", "hills by a lake at dawn")
    seed = int(re.search(r"seed (\d+)", page.locator("#preview-caption").inner_text())[1])
    page.get_by_role("button", name="Draw 4").click()
    cards = page.locator("#variations li.card")
    expect(cards).to_have_count(4)
    expect(cards.locator(".seed")).to_have_text([f"seed {seed + i}" for i in range(4)])
    first = cards.first.get_attribute("data-id")
    record = page.evaluate("async (id) => (await fetch(`/api/images/${id}`)).json()", first)["record"]
    assert record["seed"] == seed and record["prompt"] == "hills by a lake at dawn"  # the preview's picture
    assert not page.errors


def test_describe_an_upload_then_edit_a_painted_region(open_as, tmp_path):
    out = subprocess.run([*CLI, "generate", "a house by a lake at noon", "--seed", "3", "--out", str(tmp_path),
                          "--json"], capture_output=True, text=True, check=True)
    picture = json.loads(out.stdout)["files"][0]
    page = open_as("ada")
    tab(page, "describe")
    page.locator("#file").set_input_files(picture)
    expect(page.locator("#description")).to_be_visible()
    assert page.locator("#caption").inner_text().strip()
    expect(page.locator("#attributes tbody tr")).not_to_have_count(0)

    # paint a mask over the top half and edit only there
    box = page.locator("#mask-canvas").bounding_box()
    page.mouse.move(box["x"] + 10, box["y"] + 20)
    page.mouse.down()
    for x in range(10, int(box["width"]) - 10, 20):
        page.mouse.move(box["x"] + x, box["y"] + 20)
    page.mouse.up()
    expect(page.locator("#mask-canvas")).to_have_attribute("data-painted", "1")
    page.locator("#instruction").fill("make the clouds pink")
    page.get_by_role("button", name="Edit", exact=True).click()
    expect(page.locator("#edits li.card").or_(page.locator("#notice:visible"))).to_have_count(1)
    expect(page.locator("#notice")).to_be_hidden()
    expect(page.locator("#edits li.card")).to_have_count(1)
    shot(page, "describe-and-edit")

    # not a picture, and a picture over the server's upload limit: the server's reasons, said plainly
    text_file = tmp_path / "notes.png"
    text_file.write_text("not a picture at all")
    page.locator("#file").set_input_files(str(text_file))
    expect(page.locator("#notice")).to_contain_text("not a picture pixelchat can read")
    big = tmp_path / "big.png"
    big.write_bytes(Path(picture).read_bytes() + os.urandom(UPLOAD_LIMIT))
    page.locator("#file").set_input_files(str(big))
    expect(page.locator("#notice")).to_contain_text("too large")
    assert not page.errors


@pytest.mark.parametrize("status, headers, error, said", [
    (429, {"Retry-After": "7"}, {"message": "Rate limit reached.", "code": "rate_limit_exceeded"}, "Too many requests. Try again in 7 s."),
    (503, {"Retry-After": "2"}, {"message": "The server is busy.", "code": "server_busy"}, "The server is busy. Try again in 2 s."),
    (400, {}, {"message": "the prompt was blocked (violence)", "code": "content_policy_violation"},
     "Blocked by the content policy: the prompt was blocked (violence)"),
])
def test_every_refusal_is_said_plainly(open_as, status, headers, error, said):
    """The page's words for refusals that are hard to cause on demand (the server's own answers are
    replayed to the page with these statuses)."""
    page = open_as("ada")
    body = json.dumps({"error": {"type": "invalid_request_error", "param": None, **error}})
    page.route("**/api/preview", lambda route: route.fulfill(status=status, headers=headers, body=body,
                                                              content_type="application/json"))
    tab(page, "create")
    page.locator("#prompt").press_sequentially("a lake", delay=20)
    expect(page.locator("#notice")).to_contain_text(said)


def test_a_room_shares_turns_live_and_the_server_refuses_a_viewer(open_as):
    ada, bob = open_as("ada"), open_as("bob")
    tab(ada, "rooms")
    ada.locator("#room-name").fill("Lakeside")
    ada.get_by_role("button", name="Create").click()
    expect(ada.locator("#room-title")).to_have_text("Lakeside")
    ada.locator("#member-name").fill("bob")
    ada.locator("#member-role").select_option("editor")
    ada.get_by_role("button", name="Invite").click()
    expect(ada.locator('#members tr[data-user="bob"]')).to_be_visible()

    ada.get_by_role("button", name="New conversation in this room").click()
    session_id = opened(ada)
    bob.goto(f"/#chat/{session_id}")
    opened(bob)
    expect(bob.locator("#message")).to_be_enabled()

    say(ada, "a lake at night", 1)
    expect(bob.locator(REPLIES)).to_have_count(1)  # arrived live, no reload
    say(bob, "add a boat", 2)
    expect(ada.locator(REPLIES)).to_have_count(2)
    turns = ada.locator("#log li.user")
    expect(turns.last).to_contain_text("add a boat")
    expect(turns.locator(".author")).to_have_text(["you", "bob"])  # who said each turn
    expect(bob.locator("#log li.user .author")).to_have_text(["ada", "you"])
    shot(bob, "room-shared-conversation")

    # ada makes bob a viewer: his page offers nothing to change, and a forced attempt is refused by the server
    tab(ada, "rooms")
    ada.locator("#rooms a", has_text="Lakeside").click()
    ada.get_by_label("Role of bob").select_option("viewer")
    expect(ada.locator("#status")).to_contain_text("bob is now viewer")
    bob.reload()
    expect(bob.locator("#session-role")).to_contain_text("viewer")
    expect(bob.locator("#message")).to_be_disabled()
    bob.evaluate("document.querySelectorAll('#say [disabled]').forEach((e) => e.disabled = false)")
    say_attempt = bob.locator("#message")
    say_attempt.fill("make the sky pink")
    bob.locator("#send").click()
    expect(bob.locator("#notice")).to_contain_text("Not allowed")
    expect(bob.locator(REPLIES)).to_have_count(2)
    shot(ada, "room-members")
    assert not ada.errors and not bob.errors


def test_rate_vote_gallery_search_and_download(open_as):
    page = open_as("cy")
    tab(page, "create")
    page.locator("#prompt").fill("snowy peaks at dawn")
    page.get_by_role("button", name="Draw 4").click()
    expect(page.locator("#variations li.card")).to_have_count(4)

    tab(page, "gallery")
    expect(page.locator("#gallery li.card")).to_have_count(4)
    page.locator("#q").fill("lighthouse")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#gallery")).to_contain_text("No pictures match")
    page.locator("#q").fill("snowy")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#gallery li.card")).to_have_count(4)

    card = page.locator("#gallery li.card").first
    image_id = card.get_attribute("data-id")
    card.locator("label", has_text="★").nth(3).click()  # four stars
    expect(card.locator(".stars")).to_have_attribute("data-rated", "4")
    rating = page.evaluate("async (id) => (await fetch(`/api/images/${id}/rating`)).json()", image_id)
    assert rating["mine"] == 4
    page.reload()  # the stars come back from the server
    tab(page, "gallery")
    rated = page.locator(f'#gallery li.card[data-id="{image_id}"] .stars')
    expect(rated).to_have_attribute("data-rated", "4")
    expect(rated.locator("input:checked")).to_have_value("4")
    with page.expect_download() as download:
        card.get_by_role("link", name="Download").click()
    from PIL import Image

    with Image.open(download.value.path()) as saved:
        assert "pixelchat" in saved.info and "snowy peaks at dawn" in saved.info["parameters"]
    shot(page, "gallery")

    assert not page.errors


def test_votes_between_two_models_rank_them_on_the_leaderboard(open_as, tmp_path, tiny_model):
    """Pictures from two models (the server restarted on another checkpoint), compared in the page."""
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELCHAT_")}
    env["PIXELCHAT_DATA_DIR"] = str(tmp_path / "data")
    subprocess.run([*CLI, "users", "create", "ada", "--password-stdin"], input=PASSWORDS["ada"] + "\n", text=True,
                   env=env, check=True, capture_output=True)
    key = json.loads(subprocess.run([*CLI, "keys", "create", "ada", "--json"], env=env, check=True,
                                    capture_output=True, text=True).stdout)["key"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    for model in (None, str(tiny_model)):
        proc = start_serve({**env, **({"PIXELCHAT_MODEL": model} if model else {})}, port, tmp_path / "serve.log")
        try:
            answer = httpx.post(f"{url}/v1/images/generations", json={"prompt": "a lake at noon", "n": 2},
                                headers={"Authorization": f"Bearer {key}"}, timeout=60)
            assert answer.status_code == 200, answer.text
        finally:
            if model is None:
                proc.terminate()
                proc.wait(60)
    try:
        page = open_as("ada", url)
        tab(page, "compare")
        expect(page.locator("#duel-a")).to_have_attribute("data-id", re.compile(r"[0-9a-f]{32}"))
        page.keyboard.press("ArrowLeft")  # the left one wins
        expect(page.locator("#leaderboard tbody tr")).to_have_count(2)
        expect(page.locator("#leaderboard tbody td.votes")).to_have_text(["1", "1"])
        page.get_by_role("button", name="Right is better").click()
        expect(page.locator("#leaderboard tbody td.votes")).to_have_text(["2", "2"])
        shot(page, "compare-and-leaderboard")
        assert not page.errors
    finally:
        proc.terminate()
        proc.wait(60)


def test_a_phone_sized_screen_has_no_sideways_scrolling(open_as):
    page = open_as("ada", viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                   has_touch=True)
    for view in ("create", "chat", "describe", "gallery", "compare", "rooms"):
        tab(page, view)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{view} is {overflow}px wider than the screen"
    for link in page.locator("#tabs a").all():  # every tab on screen, none cut off
        box = link.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, link.inner_text()

    def on_screen(selector: str) -> None:
        box = page.locator(selector).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 844, f"{selector} is off screen: {box}"

    # Create: the live preview and the prompt together
    tab(page, "create")
    page.locator("#prompt").press_sequentially("a lake at noon", delay=20)
    expect(page.locator("#preview")).to_have_attribute("data-prompt", "a lake at noon")
    page.evaluate("window.scrollTo(0, 0)")
    on_screen("#preview")
    on_screen("#prompt")
    shot(page, "phone-create")
    # Chat: the picture and the message box together, after a few turns
    new_conversation(page, "phone")
    say(page, "a lake at noon", 1)
    say(page, "add a boat", 2)
    say(page, "make it night", 3)
    expect(page.locator("#current")).to_be_visible()
    page.evaluate("window.scrollTo(0, 0)")
    on_screen("#current")
    on_screen("#message")
    shot(page, "phone-chat")
    assert not page.errors


def test_compare_pairs_pictures_of_one_prompt_and_counts_the_vote(open_as):
    page = open_as("cy")
    for prompt in ("a desert at night", "hills with a house"):
        drawn = page.evaluate("""async (prompt) => {
            const csrf = (await (await fetch('/api/me')).json()).csrf_token;
            const r = await fetch('/v1/images/generations', {method: 'POST', headers: {'Content-Type':
                'application/json', 'X-CSRF-Token': csrf}, body: JSON.stringify({prompt, n: 3})});
            return r.status;
        }""", prompt)
        assert drawn == 200  # three pictures a prompt: three pairs each, more than the rounds below
    tab(page, "compare")
    for _ in range(3):  # every pair shown is like with like
        expect(page.locator("#duel-a")).to_have_attribute("data-id", re.compile(r"[0-9a-f]{32}"))
        assert page.locator("#duel-a-caption").inner_text() == page.locator("#duel-b-caption").inner_text()
        before = page.locator("#duel-a").get_attribute("data-id"), page.locator("#duel-b").get_attribute("data-id")
        page.get_by_role("button", name="Left is better").click()
        expect(page.locator("#status")).to_contain_text("vote counted")
        # the next pair is another pair (it may share one picture with the last, on either side)
        page.wait_for_function("""(before) => {
            const now = ['#duel-a', '#duel-b'].map((id) => document.querySelector(id).dataset.id);
            return now.sort().join(' ') !== [...before].sort().join(' ');
        }""", arg=list(before))
    # one model drew them all: its row counts the votes, which leave its score alone
    expect(page.locator("#leaderboard tbody tr")).to_have_count(1)
    expect(page.locator("#leaderboard tbody td.votes")).to_have_text(["3"])
    # a vote between pictures of two prompts says nothing about either: the server refuses it
    refused = page.evaluate("""async () => {
        const me = await (await fetch('/api/me')).json();
        const {data} = await (await fetch('/api/images?limit=200')).json();
        const a = data.find((d) => d.prompt === 'a desert at night'), b = data.find((d) => d.prompt !== a.prompt);
        const r = await fetch('/api/votes', {method: 'POST', headers: {'Content-Type': 'application/json',
            'X-CSRF-Token': me.csrf_token}, body: JSON.stringify({image_a: a.id, image_b: b.id, winner: 'a'})});
        return [r.status, (await r.json()).error.message];
    }""")
    assert refused[0] == 400 and "same prompt" in refused[1]
    assert not page.errors


def test_a_first_run_on_loopback_offers_a_one_click_local_account(browser, tmp_path):
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELCHAT_")}
    env["PIXELCHAT_DATA_DIR"] = str(tmp_path / "data")  # no accounts at all
    port = free_port()
    proc = start_serve(env, port, tmp_path / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        # a page that reached this server under another name (DNS rebinding) is refused
        forged = httpx.post(f"{url}/api/local-account", json={}, headers={"Host": "evil.example"})
        assert forged.status_code == 403
        context = browser.new_context(base_url=url)
        page = context.new_page()
        page.goto("/")
        page.get_by_role("button", name="Start with a local account").click()
        expect(page.locator("#me")).to_have_text("local")
        tab(page, "create")
        expect(page.locator("#view-create")).to_be_visible()
        page.locator("#prompt").press_sequentially("a lake at noon", delay=20)
        expect(page.locator("#preview")).to_have_attribute("data-prompt", "a lake at noon")
        shot(page, "first-run")
        context.close()
        # once someone else has an account, everyone signs in
        from pixelchat.server.admin import create_user
        from pixelchat.server.db import session_factory

        with session_factory(f"sqlite:///{tmp_path / 'data' / 'pixelchat.db'}")() as db:
            create_user(db, "ada", "a long password")
        assert httpx.get(f"{url}/api/local-account").json()["available"] is False
        assert httpx.post(f"{url}/api/local-account", json={}).status_code == 403
    finally:
        proc.terminate()
        proc.wait(60)


def test_the_size_choice_lists_what_the_model_draws_and_the_preview_follows_it(open_as):
    page = open_as("ada")
    tab(page, "create")
    expect(page.locator("#size option")).to_have_text(["64 × 64", "256 × 256", "512 × 512"])
    expect(page.locator("#size")).to_have_value("256x256")  # the model's default
    page.locator("#size").select_option("64x64")
    page.locator("#prompt").press_sequentially("a lake at noon", delay=20)
    expect(page.locator("#preview")).to_have_attribute("data-prompt", "a lake at noon")
    expect(page.locator("#preview-caption")).to_contain_text("64 × 64")
    assert page.evaluate("() => document.querySelector('#preview').naturalWidth") == 64
    page.reload()
    tab(page, "create")
    expect(page.locator("#size")).to_have_value("64x64")  # the choice is kept
    assert not page.errors


def test_a_declined_prompt_offers_draw_anyway(open_as):
    page = open_as("ada")
    new_conversation(page, "Cat")
    page.locator("#message").fill("a cat on a sofa")
    page.locator("#message").press("Enter")
    declined = page.locator("#log li.aside")
    expect(declined).to_contain_text("this model draws landscapes")
    expect(page.locator(REPLIES)).to_have_count(0)  # nothing drawn
    expect(page.locator("#current")).to_be_hidden()
    # a reply that only answers (no prompt declined) offers nothing
    page.locator("#message").fill("undo")
    page.locator("#message").press("Enter")
    expect(page.locator("#log li.aside")).to_have_count(2)
    expect(page.locator("#log li.aside").last.get_by_role("button")).to_have_count(0)
    declined.first.get_by_role("button", name="Draw anyway").click()
    expect(page.locator(REPLIES)).to_have_count(1)
    expect(page.locator("#current")).to_be_visible()
    expect(page.locator("#log li.user").first).to_have_text("a cat on a sofa")
    expect(page.get_by_role("button", name="Draw anyway")).to_have_count(0)
    assert not page.errors
