"""An optional language-model rewriter: a chat message and the picture's attributes in, a `Revision` out.

`LLMRewriter` asks any OpenAI-compatible chat-completions endpoint (a local Ollama, a llama.cpp
server, vLLM, ...) to revise the scene attributes the way the user's message asks, in the fixed
`scenes` vocabulary. The answer is validated strictly against ``SCHEMA`` and brought within the
schema's rules by the same `repair` the built-in rewriter uses, so what comes back is exactly what
`apply_instruction` would return: a `Revision` the session can draw from.

Fall-back contract: every failure (the server is down or too slow, an HTTP error, an answer that is
not JSON or names values outside the vocabulary, an impossible scene) raises `LLMError` with a short
message naming the endpoint. Callers catch `LLMError` and use the built-in rewriter
(`pixelchat.text.instructions.apply_instruction`) instead; no other exception escapes `rewrite`
for a well-formed call. An answer that changes nothing is not an error: the `Revision` has empty
``changes`` and the caller decides what that means.

Configuration comes from the caller or from the environment (`rewriter_from_env`):
``PIXELCHAT_LLM_URL`` (base URL, e.g. ``http://127.0.0.1:11434/v1``), ``PIXELCHAT_LLM_MODEL``,
``PIXELCHAT_LLM_API_KEY`` (optional) and ``PIXELCHAT_LLM_TIMEOUT`` (seconds, default 20).
Pure string and HTTP logic: no tensors, no models.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import httpx

from pixelchat.conversation.rewriter import Rewrite, split_list
from pixelchat.data.scenes import SCHEMA
from pixelchat.engines.base import MAX_PROMPT_CHARS
from pixelchat.text.instructions import InstructionError, Revision, repair

MAX_BODY = 1 << 20  # bytes; a chat answer about ten attributes is a few hundred
MAX_REPLY = 200  # characters of the model's reply kept as the first note
RULES = (
    "- the moon is only in the sky at night (time=night);",
    "- the sun is only in the sky by day or at sunset (time=day or time=sunset);",
    "- a boat (boat=yes) needs water (water=lake or water=sea); leave boat out when water=none;",
    "- cloud_color only matters when there are clouds; leave it out when clouds=none.",
)


class LLMError(RuntimeError):
    """The endpoint was unreachable, too slow, or answered something unusable; the message says which."""


@dataclass
class LLMRewriter:
    url: str  # base URL, e.g. "http://127.0.0.1:11434/v1"; requests go to {url}/chat/completions
    model: str
    api_key: str | None = field(default=None, repr=False)  # sent as "Authorization: Bearer ..."; never printed
    timeout: float = 20.0  # seconds for the whole request

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"the language model URL must start with http:// or https://, not {self.url!r}")
        if not self.model.strip():
            raise ValueError("the language model name is empty; say which model the endpoint should run")
        if not self.timeout > 0:
            raise ValueError(f"the language model timeout must be a positive number of seconds, not {self.timeout}")

    @property
    def endpoint(self) -> str:
        return f"{self.url.rstrip('/')}/chat/completions"

    def rewrite(self, current: dict[str, str], message: str) -> Revision:
        """Revise ``current`` (the picture's attributes, full or partial) the way ``message`` asks.

        Raises LLMError on any failure of the endpoint or its answer; ValueError for unknown
        attributes in ``current`` (a caller bug, not a model failure)."""
        check_attributes(current)
        # 1. ask the model
        content = self.complete(system_prompt(current), message)
        # 2. read its answer within the vocabulary
        answer, reply = self.read_answer(content)
        # 3. merge with what it left out and repair what the schema forbids
        merged = {**current, **answer}
        asked = {k: v for k, v in merged.items() if current.get(k) != v}
        try:
            revised, notes = repair(merged, asked)
        except InstructionError as e:
            raise LLMError(f"the language model at {self.endpoint} answered an impossible scene: {e}") from None
        revised = {k: revised[k] for k in SCHEMA if k in revised}
        return Revision.between(current, revised, [reply, *notes] if reply else notes)

    def rewrite_prompt(self, prompt: str, negative_prompt: str, message: str) -> Rewrite:
        """Revise a free-text prompt (for a pipeline that draws anything) the way ``message`` asks:
        the revised prompt and negative prompt and what changed. An answer that says it cannot read
        the message is a `Rewrite` not understood; LLMError on any failure of the endpoint or an
        answer outside the form asked for."""
        where = f"the language model at {self.endpoint}"
        answer, reply = self.json_answer(self.complete(open_system_prompt(prompt, negative_prompt), message))
        if answer.get("understood") is False:
            return Rewrite(prompt, negative_prompt, [], False, reply or f"{where} did not understand {message!r}")
        revised, negative, changes = answer.get("prompt"), answer.get("negative_prompt", ""), answer.get("changes", [])
        for name, value in (("prompt", revised), ("negative_prompt", negative)):
            if not isinstance(value, str) or len(value) > MAX_PROMPT_CHARS:
                raise LLMError(f"{where} answered a \"{name}\" that is not a string of at most {MAX_PROMPT_CHARS} "
                               "characters")
        if not revised.strip():
            raise LLMError(f"{where} answered an empty prompt")
        if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
            raise LLMError(f"{where} answered \"changes\" that are not a list of strings")
        revised, negative = " ".join(revised.split()), ", ".join(split_list(negative))
        changes = [shorten(c, MAX_REPLY) for c in changes if c.strip()]
        if (revised, negative) == (prompt, negative_prompt):
            changes = []
        elif not changes:
            changes = [f"revised prompt: {revised}"]
        return Rewrite(revised, negative, changes, True, reply or "; ".join(changes) + f". Revised prompt: {revised}")

    def complete(self, system: str, user: str) -> str:
        """POST one chat completion and return the message content; every failure is an LLMError."""
        body = {"model": self.model, "temperature": 0, "response_format": {"type": "json_object"},
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        where = f"the language model at {self.endpoint}"
        deadline = time.monotonic() + self.timeout
        try:
            with httpx.Client(timeout=self.timeout) as client:
                with client.stream("POST", self.endpoint, json=body, headers=headers) as response:
                    raw = bytearray()
                    # httpx times each read; the deadline bounds a server that trickles its answer
                    for chunk in response.iter_bytes():
                        raw += chunk
                        if time.monotonic() > deadline:
                            raise httpx.ReadTimeout("deadline")
                        if len(raw) > MAX_BODY:
                            raise LLMError(f"{where} answered more than {MAX_BODY} bytes")
                    status = response.status_code
        except httpx.TimeoutException:
            raise LLMError(f"{where} did not answer within {self.timeout:g} s") from None
        except httpx.ConnectError:
            raise LLMError(f"could not connect to {where}; is the server running?") from None
        except httpx.HTTPError as e:
            raise LLMError(f"the request to {where} failed ({type(e).__name__})") from None
        text = raw.decode("utf-8", errors="replace")
        if status >= 400:
            raise LLMError(f"{where} answered HTTP {status}: {error_detail(text)}")
        try:
            data = json.loads(text)
        except ValueError:
            raise LLMError(f"{where} answered a body that is not JSON: {shorten(text, 80)!r}") from None
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMError(f"{where} answered no choices[0].message.content") from None
        if not isinstance(content, str) or not content.strip():
            raise LLMError(f"{where} answered an empty message")
        return content

    def read_answer(self, content: str) -> tuple[dict[str, str], str]:
        """The attributes and the reply in the model's message; LLMError where they leave the vocabulary."""
        where = f"the language model at {self.endpoint}"
        answer, reply = self.json_answer(content)
        attributes = answer.get("attributes")
        if not isinstance(attributes, dict):
            raise LLMError(f"{where} answered no \"attributes\" object: {shorten(content, 80)!r}")
        for k, v in attributes.items():
            if k not in SCHEMA:
                raise LLMError(f"{where} answered an unknown value: attribute {k!r} is not one of "
                               f"{', '.join(SCHEMA)}")
            if v not in SCHEMA[k]:
                raise LLMError(f"{where} answered an unknown value: {k}={v!r} is not one of {', '.join(SCHEMA[k])}")
        attributes = dict(attributes)
        if attributes.get("clouds") == "none":  # the colour of no clouds is not a request for clouds
            attributes.pop("cloud_color", None)
        return attributes, reply

    def json_answer(self, content: str) -> tuple[dict, str]:
        """The JSON object in the model's message and its "reply" (shortened); LLMError where there is no
        object or the reply is not a string."""
        where = f"the language model at {self.endpoint}"
        answer = first_json_object(content)
        if answer is None:
            raise LLMError(f"{where} answered no JSON object: {shorten(content, 80)!r}")
        reply = answer.get("reply") or ""
        if not isinstance(reply, str):
            raise LLMError(f"{where} answered a \"reply\" that is not a string")
        return answer, shorten(reply, MAX_REPLY)


def system_prompt(current: dict[str, str]) -> str:
    """The instructions for the model: the vocabulary, its rules, the picture now and the answer's form."""
    schema = "\n".join(f"- {k}: {', '.join(values)}" for k, values in SCHEMA.items())
    example = {"attributes": {k: "..." for k in SCHEMA}, "reply": "..."}
    return (
        "You revise the description of a small landscape picture. A picture is described only by these "
        "attributes, each with one of the listed values:\n"
        f"{schema}\n"
        "Rules:\n" + "\n".join(RULES) + "\n"
        f"The picture now: {json.dumps(current)}\n"
        "The user says how to change the picture. Change only what the user asks for (and what the rules then "
        "require); keep every other attribute as it is. If the user asks for something these attributes cannot "
        "express, keep the attributes and say so in the reply.\n"
        "Answer with ONLY a JSON object, no prose and no code fence, of this form:\n"
        f"{json.dumps(example)}\n"
        "where \"attributes\" holds the full revised attributes, using only the names and values above, and "
        "\"reply\" is one short sentence to the user saying what changed."
    )


def open_system_prompt(prompt: str, negative_prompt: str) -> str:
    """The instructions for revising a free-text prompt: the prompt now and the answer's form."""
    example = {"prompt": "...", "negative_prompt": "...", "changes": ["..."], "reply": "..."}
    return (
        "You revise the prompt of a text-to-image model the way the user asks, as a conversation about one "
        "picture goes on. The prompt now: " + json.dumps(prompt) + ". The negative prompt now (what the picture "
        "must not show): " + json.dumps(negative_prompt) + ".\n"
        "Change only what the user asks for and keep every other word of the prompt. Put what is removed or "
        "replaced into the negative prompt, and take what is asked for off it. Keep the prompt under "
        f"{MAX_PROMPT_CHARS} characters.\n"
        "Answer with ONLY a JSON object, no prose and no code fence, of this form:\n"
        f"{json.dumps(example)}\n"
        "where \"changes\" says each change in a few words (\"added a hat\") and \"reply\" is one short sentence "
        "to the user. If the message is not a change to the picture, answer "
        '{"understood": false, "reply": "..."} saying what you did not understand.'
    )


def first_json_object(text: str) -> dict | None:
    """The first JSON object in ``text``: models wrap it in ```json fences or prose despite being asked not to."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def check_attributes(attributes: dict[str, str]) -> None:
    unknown = sorted(f"{k}={v!r}" for k, v in attributes.items() if k not in SCHEMA or v not in SCHEMA[k])
    if unknown:
        raise ValueError(f"unknown scene attribute(s): {', '.join(unknown)}")


def error_detail(text: str) -> str:
    """The message of an OpenAI-style error body ({"error": {"message": ...}}), else the body's start."""
    try:
        error = json.loads(text).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message.strip():
            return shorten(message, 160)
    except (ValueError, AttributeError):
        pass
    return shorten(text, 160) or "(empty body)"


def shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rewriter_from_env() -> LLMRewriter | None:
    """The rewriter the environment configures (PIXELCHAT_LLM_URL, PIXELCHAT_LLM_MODEL,
    PIXELCHAT_LLM_API_KEY, PIXELCHAT_LLM_TIMEOUT), or None when PIXELCHAT_LLM_URL is unset or empty."""
    url = os.environ.get("PIXELCHAT_LLM_URL", "").strip()
    if not url:
        return None
    model = os.environ.get("PIXELCHAT_LLM_MODEL", "").strip()
    if not model:
        raise ValueError("PIXELCHAT_LLM_URL is set but PIXELCHAT_LLM_MODEL is not; set it to the model the "
                         "endpoint serves (e.g. PIXELCHAT_LLM_MODEL=llama3.2), or unset PIXELCHAT_LLM_URL")
    timeout = os.environ.get("PIXELCHAT_LLM_TIMEOUT", "").strip()
    try:
        seconds = float(timeout) if timeout else 20.0
    except ValueError:
        raise ValueError(f"PIXELCHAT_LLM_TIMEOUT must be a number of seconds, not {timeout!r}") from None
    api_key = os.environ.get("PIXELCHAT_LLM_API_KEY", "").strip() or None
    return LLMRewriter(url=url, model=model, api_key=api_key, timeout=seconds)
