"""The language-model rewriter against a real OpenAI-compatible HTTP server started by the test."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pixelchat.conversation.llm import LLMError, LLMRewriter, rewriter_from_env
from pixelchat.data.captions import scene_prompt

NOW = {"time": "day", "celestial": "sun", "clouds": "few", "cloud_color": "white", "terrain": "mountains",
       "snow": "no", "water": "lake", "trees": "few", "house": "yes", "boat": "no"}
DRY = {"time": "day", "celestial": "sun", "clouds": "none", "terrain": "hills", "snow": "no", "water": "none",
       "trees": "few", "house": "no"}


@dataclass
class Script:
    """What the server answers next; tests set it, the handler reads it."""
    content: str | None = None  # the assistant message, wrapped in a chat-completion body
    raw: str | None = None  # a body sent as is, instead of a chat completion
    status: int = 200
    delay: float = 0.0  # seconds before answering
    trickle: float = 0.0  # seconds between the body's bytes
    requests: list[dict] = field(default_factory=list)  # what the server received
    release: threading.Event = field(default_factory=threading.Event)  # wakes sleeping handlers at teardown


class ChatHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        script: Script = self.server.script
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        script.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
        if self.path != "/v1/chat/completions":
            return self.answer(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
        if script.delay:
            script.release.wait(script.delay)
        if script.raw is not None:
            return self.answer(script.status, script.raw)
        return self.answer(script.status, json.dumps(
            {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant",
                                                                               "content": script.content}}]}))

    def answer(self, status: int, text: str):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            for i in range(len(data)) if self.server.script.trickle else [None]:
                self.wfile.write(data if i is None else data[i:i + 1])
                if i is not None:
                    self.wfile.flush()
                    if self.server.script.release.wait(self.server.script.trickle):
                        return
        except OSError:  # the client gave up (a timeout test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ChatHandler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    httpd.script = Script()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield httpd
    httpd.script.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(2)


def answer(attributes: dict, reply: str | None = None) -> str:
    return json.dumps({"attributes": attributes, **({"reply": reply} if reply is not None else {})})


def test_good_answer_becomes_a_revision(server):
    server.script.content = answer({**NOW, "time": "night", "celestial": "moon"}, "It is night now, under the moon.")
    rewriter = LLMRewriter(url=server.base + "/", model="tiny-llm", api_key="sekret", timeout=5)
    revision = rewriter.rewrite(NOW, "make it night")
    assert revision.attributes == {**NOW, "time": "night", "celestial": "moon"}
    assert revision.changes == {"time": ("day", "night"), "celestial": ("sun", "moon")}
    assert revision.notes == ["It is night now, under the moon."]
    assert revision.free_text == []
    assert revision.prompt == ("mountains at night, without snow, with the moon, with a few white clouds, by a lake, "
                               "with a few trees, with a house and with no boats")
    # the request: one POST with the model, the schema, the picture now and the user's words
    [request] = server.script.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sekret"
    body = request["body"]
    assert body["model"] == "tiny-llm"
    assert body["temperature"] == 0
    assert body["response_format"] == {"type": "json_object"}
    system, user = body["messages"]
    assert system["role"] == "system" and user == {"role": "user", "content": "make it night"}
    assert json.dumps(NOW) in system["content"]
    assert "- terrain: mountains, hills, desert, plain" in system["content"]
    assert "the moon is only in the sky at night" in system["content"]


def test_no_api_key_sends_no_authorization_and_is_never_printed(server):
    server.script.content = answer(NOW)
    LLMRewriter(url=server.base, model="m").rewrite(NOW, "keep it")
    assert "Authorization" not in server.script.requests[0]["headers"]
    assert "sekret" not in repr(LLMRewriter(url=server.base, model="m", api_key="sekret"))


def test_fenced_answer_with_prose_is_read(server):
    server.script.content = ("Sure! Here is the {revised} scene:\n```json\n"
                             + answer({**NOW, "trees": "forest"}, "The trees grew into a forest.")
                             + "\n```\nLet me know if you want {more}.")
    revision = LLMRewriter(url=server.base, model="m").rewrite(NOW, "a forest please")
    assert revision.changes == {"trees": ("few", "forest")}
    assert revision.notes == ["The trees grew into a forest."]


def test_attributes_left_out_keep_their_value(server):
    server.script.content = answer({"snow": "yes"})
    revision = LLMRewriter(url=server.base, model="m").rewrite(NOW, "let it snow")
    assert revision.attributes == {**NOW, "snow": "yes"}
    assert revision.changes == {"snow": ("no", "yes")}
    assert revision.notes == []
    assert revision.prompt == scene_prompt({**NOW, "snow": "yes"})


def test_an_answer_that_changes_nothing_is_allowed(server):
    server.script.content = answer(NOW, "I cannot draw dragons here.")
    revision = LLMRewriter(url=server.base, model="m").rewrite(NOW, "add a dragon")
    assert revision.attributes == NOW and revision.changes == {}
    assert revision.notes == ["I cannot draw dragons here."]


def test_long_reply_is_shortened(server):
    server.script.content = answer({"house": "no"}, "word " * 100)
    [note] = LLMRewriter(url=server.base, model="m").rewrite(NOW, "remove the house").notes
    assert len(note) == 200 and note.endswith("…")


def test_boat_without_water_gets_a_lake(server):
    server.script.content = answer({**DRY, "boat": "yes"}, "I added a boat.")
    revision = LLMRewriter(url=server.base, model="m").rewrite(DRY, "add a boat")
    assert revision.attributes == {**DRY, "water": "lake", "boat": "yes"}
    assert revision.changes == {"water": ("none", "lake"), "boat": (None, "yes")}
    assert revision.notes == ["I added a boat.", "there is no boat without water; I added a lake"]


def test_sun_at_night_is_repaired(server):
    server.script.content = answer({"time": "night"})
    revision = LLMRewriter(url=server.base, model="m").rewrite(NOW, "make it night")
    assert revision.changes == {"time": ("day", "night"), "celestial": ("sun", "moon")}
    assert revision.notes == ["the sun set: at night the moon is in the sky"]


def test_colour_of_no_clouds_is_not_a_request_for_clouds(server):
    # a full answer names some cloud colour even under a clear sky; that must not bring clouds in
    server.script.content = answer({**DRY, "cloud_color": "white", "house": "yes"})
    revision = LLMRewriter(url=server.base, model="m").rewrite(DRY, "add a house")
    assert revision.attributes == {**DRY, "house": "yes"}
    assert revision.changes == {"house": ("no", "yes")}
    assert revision.notes == []


def test_impossible_scene_is_an_error(server):
    server.script.content = answer({**NOW, "water": "none", "boat": "yes"})
    with pytest.raises(LLMError, match="impossible scene: a boat needs water"):
        LLMRewriter(url=server.base, model="m").rewrite(NOW, "a boat on dry land")


@pytest.mark.parametrize("content, message", [
    ("I am sorry, I cannot help with that.", "answered no JSON object"),
    ("{\"attributes\": {\"time\": \"night\"", "answered no JSON object"),
    ("{\"reply\": \"done\"}", "answered no \"attributes\" object"),
    ("{\"attributes\": [\"time\", \"night\"]}", "answered no \"attributes\" object"),
    ("{\"attributes\": {\"time\": \"night\"}, \"reply\": 3}", "\"reply\" that is not a string"),
    ("   ", "answered an empty message"),
])
def test_malformed_content_is_an_error(server, content, message):
    server.script.content = content
    with pytest.raises(LLMError, match=message) as info:
        LLMRewriter(url=server.base, model="m").rewrite(NOW, "make it night")
    assert server.base in str(info.value)


@pytest.mark.parametrize("attributes, message", [
    ({"dragon": "yes"}, "unknown value: attribute 'dragon' is not one of time, celestial"),
    ({"time": "noon"}, "unknown value: time='noon' is not one of day, sunset, night"),
    ({"boat": True}, "unknown value: boat=True is not one of yes, no"),
])
def test_unknown_attribute_or_value_is_an_error(server, attributes, message):
    server.script.content = answer(attributes)
    with pytest.raises(LLMError, match=message):
        LLMRewriter(url=server.base, model="m").rewrite(NOW, "make it noon")


def test_http_error_names_the_status(server):
    server.script.status = 500
    server.script.raw = json.dumps({"error": {"message": "model crashed"}})
    with pytest.raises(LLMError, match="answered HTTP 500: model crashed") as info:
        LLMRewriter(url=server.base, model="m", api_key="sekret").rewrite(NOW, "make it night")
    assert "sekret" not in str(info.value)


def test_wrong_path_is_a_404(server):
    with pytest.raises(LLMError, match="HTTP 404: no route /chat/completions"):
        LLMRewriter(url=server.base.removesuffix("/v1"), model="m").rewrite(NOW, "make it night")


@pytest.mark.parametrize("raw, message", [
    ("<html>Bad gateway</html>", "a body that is not JSON: '<html>Bad gateway</html>'"),
    ("{\"object\": \"chat.completion\"}", r"no choices\[0\].message.content"),
    ("{\"choices\": []}", r"no choices\[0\].message.content"),
    ("{\"choices\": [{\"message\": {\"content\": null}}]}", "answered an empty message"),
])
def test_unusable_body_is_an_error(server, raw, message):
    server.script.raw = raw
    with pytest.raises(LLMError, match=message):
        LLMRewriter(url=server.base, model="m").rewrite(NOW, "make it night")


def test_slow_server_times_out(server):
    server.script.delay = 3.0
    server.script.content = answer(NOW)
    start = time.monotonic()
    with pytest.raises(LLMError, match="did not answer within 0.3 s"):
        LLMRewriter(url=server.base, model="m", timeout=0.3).rewrite(NOW, "make it night")
    assert time.monotonic() - start < 1.0


def test_trickling_server_times_out_as_a_whole(server):
    server.script.trickle = 0.1  # every read comes in time, the whole answer would take seconds
    server.script.content = answer(NOW)
    start = time.monotonic()
    with pytest.raises(LLMError, match="did not answer within 0.3 s"):
        LLMRewriter(url=server.base, model="m", timeout=0.3).rewrite(NOW, "make it night")
    assert time.monotonic() - start < 1.0


def test_connection_refused_is_an_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LLMError, match=f"could not connect to the language model at http://127.0.0.1:{port}/v1"):
        LLMRewriter(url=f"http://127.0.0.1:{port}/v1", model="m", timeout=2).rewrite(NOW, "make it night")


def test_bad_configuration_and_current_fail_at_once():
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        LLMRewriter(url="127.0.0.1:11434/v1", model="m")
    with pytest.raises(ValueError, match="model name is empty"):
        LLMRewriter(url="http://127.0.0.1:1/v1", model=" ")
    with pytest.raises(ValueError, match="unknown scene attribute"):
        LLMRewriter(url="http://127.0.0.1:1/v1", model="m").rewrite({"time": "noon"}, "make it night")


ENV = ("PIXELCHAT_LLM_URL", "PIXELCHAT_LLM_MODEL", "PIXELCHAT_LLM_API_KEY", "PIXELCHAT_LLM_TIMEOUT")


def test_rewriter_from_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    assert rewriter_from_env() is None
    monkeypatch.setenv("PIXELCHAT_LLM_URL", "http://127.0.0.1:11434/v1")
    with pytest.raises(ValueError, match="PIXELCHAT_LLM_MODEL is not"):
        rewriter_from_env()
    monkeypatch.setenv("PIXELCHAT_LLM_MODEL", "llama3.2")
    assert rewriter_from_env() == LLMRewriter(url="http://127.0.0.1:11434/v1", model="llama3.2")
    monkeypatch.setenv("PIXELCHAT_LLM_API_KEY", "sekret")
    monkeypatch.setenv("PIXELCHAT_LLM_TIMEOUT", "7.5")
    rewriter = rewriter_from_env()
    assert (rewriter.url, rewriter.model, rewriter.api_key, rewriter.timeout) == (
        "http://127.0.0.1:11434/v1", "llama3.2", "sekret", 7.5)
    monkeypatch.setenv("PIXELCHAT_LLM_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="PIXELCHAT_LLM_TIMEOUT must be a number"):
        rewriter_from_env()


def test_a_session_uses_the_language_model_and_falls_back_when_it_fails(server, tiny_model):
    from pixelchat import Session

    s = Session(model=tiny_model, seed=2, checks=0, llm=LLMRewriter(server.base, "tiny-llm", timeout=0.5))
    s.turn("hills by a lake")
    server.script.content = json.dumps({"attributes": {"time": "sunset", "house": "yes"}, "reply": "dusk and a home"})
    turn = s.turn("give it the feeling of coming home in the evening")  # beyond the built-in reader
    assert turn.kind == "edit" and turn.node.attributes["time"] == "sunset" and turn.node.attributes["house"] == "yes"
    assert "dusk and a home" in turn.reply
    body = server.script.requests[-1]["body"]
    assert body["model"] == "tiny-llm" and "coming home" in body["messages"][-1]["content"]
    server.script.content = "I think the picture is lovely"  # nonsense: the built-in reader takes over
    turn = s.turn("remove the house")
    assert turn.kind == "edit" and turn.node.attributes["house"] == "no" and "read it myself" in turn.reply
    server.script.content, server.script.delay = json.dumps({"attributes": {"snow": "yes"}}), 3.0  # too slow
    turn = s.turn("add snow")
    assert turn.kind == "edit" and turn.node.attributes["snow"] == "yes" and "did not help" in turn.reply
    server.script.delay = 0.0
    server.script.status, server.script.raw = 500, '{"error": {"message": "model not loaded"}}'
    turn = s.turn("make it better")  # neither can read it: asked back, nothing changes
    assert turn.kind == "ask" and s.current == 4
