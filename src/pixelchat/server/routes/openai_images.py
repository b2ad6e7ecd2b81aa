"""The OpenAI-compatible images API: `POST /v1/images/generations`, `/v1/images/edits`,
`/v1/images/variations`, `GET /v1/models`, and the signed image links that
``response_format="url"`` returns.

Requests take OpenAI's fields, so an app written for DALL·E or gpt-image-1 works unchanged (what
each field does here: docs/openai-api.md). OpenAI's model names are aliases of the served model
(`Settings.model_aliases`); fields OpenAI does not know are ignored, as OpenAI ignores them; a field
of the wrong type is a 400 in OpenAI's error shape. The extras other compatible servers accept
(``seed``, ``negative_prompt``, ``style``) work the same here, and so do a diffusion pipeline's
settings (``steps``, ``guidance``, ``scheduler``: what the OpenAI client's ``extra_body`` sends).
Every picture made is stored (PNG with its record) under the user's account.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from pixelchat.server.deps import CurrentUser, SessionDep, SettingsDep
from pixelchat.server.errors import APIError, error_body, responses
from pixelchat.server.events import frame
from pixelchat.server.handlers import client_errors, generate_request
from pixelchat.server.jobs import Outcome, request_hash
from pixelchat.server.models import ImageRow
from pixelchat.server.quality import (MAX_PARTIAL_IMAGES, drawn_quality, edit_options, generation_candidates,
                                      takes)
from pixelchat.server.security import sign, signature_ok

router = APIRouter(prefix="/v1", tags=["openai"])
MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# what a route that runs a job may answer besides its own errors: an unknown model, a reused
# Idempotency-Key, a full queue
JOB_ERRORS = responses(404, 409, 503)
UPLOAD_ERRORS = {**JOB_ERRORS, **responses(413, 415)}
STREAMED = {200: {"content": {"text/event-stream": {}},
                  "description": "With stream=true: server-sent events, partial pictures first, then each final one"}}
# input_fidelity on an edit: how far the redraw may move from the picture (high keeps closer to it)
FIDELITY_STRENGTH = {"high": 0.2}
ENGINE_RECHECK_S = 1.0  # how often a request looks whether the served model's files changed
Quality = Literal["auto", "standard", "hd", "low", "medium", "high"]
async def submit_job(request: Request, user, kind: str, payload: dict, fingerprint: dict, *,
                     files: dict | None = None, session_id: str | None = None, end_user: str | None = None):
    """Queue the work as a job. An ``Idempotency-Key`` header binds the key to this route and
    ``fingerprint`` (the request's fields): sent again, it returns the first job. ``end_user``: the
    app's own user (OpenAI's ``user``), named in the moderation log."""
    text = payload.get("prompt") or (payload.get("text") if kind == "message" else None)
    key = request.headers.get("idempotency-key")

    def moderated_submit():  # one trip to a worker thread for both
        if text:
            moderate(request, user, text, end_user)
        return request.app.state.jobs.submit(user.id, kind, payload, session_id=session_id, idempotency_key=key,
                                             files=files,
                                             fingerprint=request_hash(request.url.path, fingerprint) if key else None)

    job, _ = await run_in_threadpool(moderated_submit)
    return job


def moderate(request: Request, user, text: str, end_user: str | None = None) -> None:
    """The content policy on a prompt or message, before any work: a blocked one is OpenAI's 400
    ``content_policy_violation``. Every decision goes to the operator's log (the text only if asked).
    OpenAI's ``moderation`` field does not reach here: no request can relax the operator's policy."""
    from pixelchat.safety.moderation import log_decision

    decision = request.app.state.moderator.check(text)
    who = f"{user.name}/{end_user}" if end_user else user.name
    log_decision(decision, user=who, prompt=text, log_prompts=request.app.state.settings.log_prompts)
    if not decision.allowed:
        raise APIError(400, decision.reason, param="prompt", code="content_policy_violation")


async def run_job(request: Request, user, kind: str, payload: dict, fingerprint: dict, *,
                  files: dict | None = None, session_id: str | None = None, end_user: str | None = None) -> Outcome:
    """Queue the work as a job (see `submit_job`) and wait for it; a failed job raises its error."""
    job = await submit_job(request, user, kind, payload, fingerprint, files=files, session_id=session_id,
                           end_user=end_user)
    outcome = await request.app.state.jobs.wait(job.id)
    outcome.raise_error()
    return outcome


class GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # as OpenAI: a field it does not know is not an error

    prompt: str = Field(min_length=1, max_length=1000)
    model: str | None = Field(None, description="The served model's id or one of its aliases (GET /v1/models).")
    n: int = Field(1, ge=1, le=10)
    size: str | None = Field(None, description="'WxH' (W = H) among the sizes the served model draws, or 'auto'.")
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int | None = Field(None, ge=0, le=100, description="JPEG and WebP quality, 0–100.")
    quality: Quality | None = Field(None, description="How many candidates the self-check compares per picture: "
                                                      "low/auto/standard 1, medium 2, high/hd 4.")
    background: Literal["auto", "opaque", "transparent"] | None = Field(
        None, description="'transparent' is refused: the model draws opaque pictures.")
    moderation: Literal["auto", "low"] | None = Field(
        None, description="Both apply the operator's content policy; 'low' does not relax it.")
    stream: bool = Field(False, description="Answer with server-sent events: partial pictures, then the final ones.")
    partial_images: int = Field(0, ge=0, le=MAX_PARTIAL_IMAGES,
                                description="Runners-up of the self-check to stream before the final picture.")
    user: str | None = Field(None, max_length=256, description="Your end user, for the moderation log.")
    # extras accepted by other OpenAI-compatible image servers
    seed: int | None = Field(None, ge=0)
    negative_prompt: str | None = Field(None, max_length=1000)
    style: str | None = Field(None, description="A style preset ('vivid', 'noir', ...; 'natural' means none).")
    palette: list[str] | None = Field(None, max_length=16, description="Hex colours the pictures keep to.")
    steps: int | None = Field(None, description="A diffusion pipeline's denoising steps (1–1000).")
    guidance: float | None = Field(None, description="A diffusion pipeline's guidance scale (0–50).")
    scheduler: str | None = Field(None, max_length=40, description="A diffusion pipeline's scheduler by name "
                                                                    "('euler', 'dpm++', 'ddim', ...).")


def pipeline_settings(engine, values: dict) -> dict:
    """A request's diffusion settings (steps, guidance, scheduler) that are set; a 400 naming the first
    where the served engine has none."""
    from pixelchat.engines import UnsupportedOperation
    from pixelchat.engines.base import check_pipeline_settings

    given = {k: v for k, v in values.items() if v is not None}
    try:
        check_pipeline_settings(engine, **given)
    except UnsupportedOperation as e:
        raise APIError(400, str(e), param=next(iter(given)), code="unsupported_parameter") from None
    return given


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = Field(None, description="The prompt drawn, where it is not the one sent "
                                                         "(an edit's instruction read into a whole prompt).")
    id: str | None = Field(None, description="The stored picture (GET /api/images/{id}); not in OpenAI's API.")


class TokenDetails(BaseModel):
    image_tokens: int
    text_tokens: int


class Usage(BaseModel):
    """OpenAI's usage block. The model has no tokens; here a text token is a word of the prompt, an
    image token an uploaded picture, and an output token a picture handed back (partial ones included)."""

    input_tokens: int
    input_tokens_details: TokenDetails
    output_tokens: int
    total_tokens: int


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    model: str = Field(description="The model that drew the pictures (whichever alias was asked for).")
    output_format: str
    size: str
    background: Literal["opaque"] = "opaque"
    quality: Literal["low", "medium", "high"] | None = Field(
        None, description="The quality the pictures were drawn at; absent where the engine has no such setting.")
    usage: Usage
    notes: list[str] | None = Field(None, description="What was done differently from the request, and why.")


class PipelineDefaults(BaseModel):
    steps: int = Field(description="Denoising steps when a request names none.")
    guidance: float = Field(description="Guidance scale when a request names none.")
    scheduler: str | None = Field(description="The scheduler name used when a request names none (null: the "
                                  "pipeline's own).")
    schedulers: list[str] = Field(description="The scheduler names this pipeline takes.")


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "pixelchat"
    root: str = Field(description="The model that answers to this id (itself, or the model an alias names).")
    sizes: list[str] = Field(description="The sizes it draws, as 'WxH'.")
    default_size: str = Field(description="What 'auto' (or no size) draws.")
    pipeline: PipelineDefaults | None = Field(None, description="A diffusion pipeline's settings and their defaults "
                                              "(absent for the built-in models, which take none).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def served(request: Request):
    """The served engine, asked of `engine_of` at most every ``ENGINE_RECHECK_S`` (it reads the checkpoint's
    files to see whether they changed: not work for every request, on the event loop)."""
    from pixelchat.server.handlers import engine_of

    state, now = request.app.state, time.monotonic()
    known = getattr(state, "served_engine", None)
    if known is None or known[0] <= now:
        known = state.served_engine = (now + ENGINE_RECHECK_S, engine_of(state.jobs))
    return known[1]


def aliases(settings) -> list[str]:
    return list(dict.fromkeys(a.strip() for a in settings.model_aliases.split(",") if a.strip()))


def check_model(request: Request, model: str | None):
    """The served engine, asked for by its id, one of its aliases, or not at all."""
    engine = served(request)
    names = [engine.info.id, *aliases(request.app.state.settings)]
    if model not in (None, "", *names):
        raise APIError(404, f"The model '{model}' does not exist; this server has {', '.join(map(repr, names))} "
                            "(GET /v1/models).", param="model", code="model_not_found")
    return engine


def drawable_sizes(engine) -> tuple[int, ...]:
    """The square sides the engine draws (several where it has an upsampler)."""
    return tuple(getattr(engine.info, "sizes", None) or (engine.info.size,))


def check_size(engine, size: str | None, sides: tuple[int, ...] | None = None) -> int:
    """OpenAI's ``size`` ('WxH' or 'auto') → the side to draw; a size the model does not draw is a 400
    naming those it does."""
    sides = sides or drawable_sizes(engine)
    default = getattr(engine.info, "default_size", engine.info.size)
    if size in (None, "", "auto"):
        return default if default in sides else sides[0]
    m = re.fullmatch(r"(\d+)x(\d+)", size.strip())
    if m and m[1] == m[2] and int(m[1]) in sides:
        return int(m[1])
    listed = ", ".join(f"'{s}x{s}'" for s in sides)
    raise APIError(400, f"size {size!r} is not drawn by {engine.info.id}; it draws {listed} or 'auto'.",
                   param="size", code="invalid_size")


def check_background(background: str | None) -> None:
    if background == "transparent":
        raise APIError(400, "background 'transparent' is not supported: this model draws opaque pictures; "
                            "send 'auto' or 'opaque'.", param="background", code="unsupported_value")


def encode(image, fmt: str, compression: int | None, record: dict) -> bytes:
    """The picture as ``fmt`` with its record, parameters, XMP and watermark (as the stored PNG)."""
    from pixelchat.safety.provenance import image_bytes

    return image_bytes(image, record, fmt, quality=compression if compression is not None else 90)


def image_url(request: Request, settings, image_id: str, fmt: str) -> str:
    expires = int(time.time()) + settings.url_ttl_s
    signature = sign(request.app.state.signing_key, f"{image_id}.{fmt}:{expires}")
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    return f"{base}/v1/images/files/{image_id}.{fmt}?expires={expires}&signature={signature}"


def usage(prompt: str, images_in: int, images_out: int) -> Usage:
    words = len(re.findall(r"\w+", prompt))
    return Usage(input_tokens=words + images_in, input_tokens_details=TokenDetails(image_tokens=images_in,
                                                                                  text_tokens=words),
                 output_tokens=images_out, total_tokens=words + images_in + images_out)


class Answer(BaseModel):
    """How the pictures of one request go back: its format choices and what the response says about them."""

    kind: Literal["generation", "edit", "variation"]
    prompt: str
    model: str
    size: int
    response_format: str = "b64_json"
    output_format: str = "png"
    compression: int | None = None
    quality: str | None = None
    images_in: int = 0
    partial_images: int = 0
    notes: list[str] = []


@router.get("/models", response_model=ModelList)
def list_models(request: Request, user: CurrentUser) -> ModelList:
    """The served model, and the OpenAI model names that answer with it."""
    engine = served(request)
    info, created = engine.info, int(request.app.state.started)
    sizes = [f"{s}x{s}" for s in drawable_sizes(engine)]
    default = check_size(engine, "auto")
    pipeline = (PipelineDefaults(steps=engine.steps, guidance=engine.guidance, scheduler=engine.scheduler,
                                 schedulers=engine.fitting_schedulers())
                if getattr(engine, "pipeline_settings", False) else None)
    return ModelList(data=[Model(id=name, created=created, root=info.id, sizes=sizes, default_size=f"{default}x{default}",
                                 pipeline=pipeline)
                           for name in dict.fromkeys([info.id, *aliases(request.app.state.settings)])])


@router.post("/images/generations", response_model=ImagesResponse, response_model_exclude_none=True,
             responses={**STREAMED, **JOB_ERRORS})
async def create_images(body: GenerationRequest, request: Request, user: CurrentUser, settings: SettingsDep):
    engine = check_model(request, body.model)
    side = check_size(engine, body.size)
    check_background(body.background)
    payload = {**generation_payload(engine, body), "size": side,
               "candidates": generation_candidates(body.quality, body.partial_images if body.stream else 0)}
    answer_as = Answer(kind="generation", prompt=body.prompt, model=engine.info.id, size=side,
                       response_format=body.response_format, output_format=body.output_format,
                       compression=body.output_compression, quality=drawn_quality("generation", body.quality),
                       partial_images=body.partial_images if body.stream else 0)
    fingerprint = body.model_dump()
    if body.stream:
        return await streamed(request, user, "generate", payload, fingerprint, answer_as, end_user=body.user)
    outcome = await run_job(request, user, "generate", payload, fingerprint, end_user=body.user)
    return await run_in_threadpool(answered, outcome, request, settings, answer_as)


def generation_payload(engine, body) -> dict:
    """A generation job's payload, checked now (a bad style, palette or prompt is refused here, not in a batch)."""
    from pixelchat.vision.style import get_style, palette_hex

    from pixelchat.engines.base import PIPELINE_SETTINGS

    payload = {"prompt": body.prompt, "n": getattr(body, "n", 1), "seed": body.seed, "style": body.style,
               "negative_prompt": body.negative_prompt,
               **pipeline_settings(engine, {k: getattr(body, k, None) for k in PIPELINE_SETTINGS})}
    if body.style and body.style != "natural":
        try:
            get_style(body.style)
        except ValueError as e:
            raise APIError(400, str(e), param="style", code="invalid_value") from None
    if body.palette:
        try:
            payload["palette"] = palette_hex(body.palette)
        except ValueError as e:
            raise APIError(400, str(e), param="palette", code="invalid_value") from None
    client_errors(lambda: engine.check_inputs(generate_request(payload)))
    return payload


def answer(outcome: Outcome, request: Request, settings, how: Answer) -> ImagesResponse:
    """A finished job's pictures in OpenAI's shape."""
    revised = outcome.result.get("revised_prompt") or None
    revised = revised if revised and revised != how.prompt else None
    data = []
    for image_id, png, image, record in zip(outcome.ids, outcome.pngs, outcome.images, outcome.records):
        if how.response_format == "url":
            data.append(ImageData(url=image_url(request, settings, image_id, how.output_format),
                                  revised_prompt=revised, id=image_id))
        else:
            raw = png if how.output_format == "png" else encode(image, how.output_format, how.compression, record)
            data.append(ImageData(b64_json=base64.b64encode(raw).decode(), revised_prompt=revised, id=image_id))
    return ImagesResponse(created=int(time.time()), data=data, model=how.model, output_format=how.output_format,
                          size=f"{how.size}x{how.size}", quality=how.quality,
                          usage=usage(how.prompt, how.images_in, len(data)), notes=how.notes or None)


def answered(outcome: Outcome, request: Request, settings, how: Answer) -> Response:
    """`answer` as the JSON response itself: returned as a model, FastAPI would validate and encode it
    again against the response model, copying every picture's base64 text on the way."""
    body = answer(outcome, request, settings, how).model_dump_json(exclude_none=True)
    return Response(body, media_type="application/json")


async def streamed(request: Request, user, kind: str, payload: dict, fingerprint: dict, how: Answer, *,
                   files: dict | None = None, end_user: str | None = None) -> StreamingResponse:
    """The job's pictures as OpenAI streams them: ``image_generation.partial_image`` (or
    ``image_edit.…``) events with the runners-up the job publishes, weakest first, then one
    ``….completed`` event per picture; a failed job ends with an ``error`` event. A refusal before the
    job runs (moderation, a full queue) is an ordinary error response."""
    topic = f"partials:{secrets.token_hex(12)}"
    sub = request.app.state.events.subscribe(topic)  # before the job exists, so no partial is missed
    try:
        job = await submit_job(request, user, kind, {**payload, "partials": topic}, fingerprint, files=files,
                               end_user=end_user)
    except BaseException:
        sub.close()
        raise
    prefix = "image_generation" if kind == "generate" else "image_edit"
    checkers = request.app.state.jobs.checkers

    def partial_events(event: dict, first: int) -> list[dict]:
        from pixelchat.safety.checkers import run_checkers

        out = []
        for image, record in zip(event["images"], event["records"]):
            if first + len(out) >= how.partial_images:
                break
            if checkers and run_checkers(checkers, image, record) is not None:
                continue  # a partial picture an output check would withhold is not sent
            out.append({**common(), "type": f"{prefix}.partial_image", "partial_image_index": first + len(out),
                        "b64_json": b64(encode(image, how.output_format, how.compression, record))})
        return out

    def common() -> dict:
        return {"created_at": int(time.time()), "background": "opaque", "output_format": how.output_format,
                "quality": how.quality or "auto", "size": f"{how.size}x{how.size}"}

    def completed(outcome: Outcome, sent: int) -> list[dict]:
        final = answer(outcome, request, request.app.state.settings, how.model_copy(update={"response_format":
                                                                                           "b64_json"}))
        spent = usage(how.prompt, how.images_in, len(final.data) + sent).model_dump()
        return [{**common(), "type": f"{prefix}.completed", "b64_json": item.b64_json, "usage": spent,
                 "model": how.model, "id": item.id, **({"revised_prompt": item.revised_prompt}
                                                        if item.revised_prompt else {})} for item in final.data]

    async def body():
        try:
            outcome = await request.app.state.jobs.wait(job.id)
            sent = 0
            while not sub.queue.empty():  # published on this loop before the job was resolved
                for event in await run_in_threadpool(partial_events, sub.queue.get_nowait(), sent):
                    sent += 1
                    yield frame(event)
            if outcome.error is not None:
                e = outcome.error
                yield frame({"type": "error", **error_body(e.get("status", 500), e.get("message", "the job failed"),
                                                            e.get("param"), e.get("code"))})
                return
            for event in await run_in_threadpool(completed, outcome, sent):
                yield frame(event)
        finally:
            sub.close()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def fingerprint_of(image) -> str:
    return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()


async def read_upload(request: Request, files: list[UploadFile], param: str, mode: str):
    """The first uploaded picture, read under the byte cap and decoded as hostile input on a worker
    thread, a few at a time (see `routes.images.read_picture`)."""
    from pixelchat.server.routes.images import read_picture

    if not files:
        raise APIError(400, f"send a '{param}' file", param=param, code="invalid_value")
    return await read_picture(request, files[0], param, mode)


def uploaded(single: UploadFile | None, many: list[UploadFile] | None) -> list[UploadFile]:
    return [f for f in [single, *(many or [])] if f is not None]


def sized(engine, kind: str, side: int) -> dict:
    """The job's ``size`` where the engine takes one for this operation (edits and variations of other
    engines come back at the size the engine draws them)."""
    return {"size": side} if takes(getattr(engine, "edit" if kind == "edit" else "vary"), "size") else {}


def picture_size(engine, kind: str, size: str | None) -> int:
    """The side an edit or variation is drawn at: any the model draws where the engine takes a size
    for this operation, else its own size."""
    takes_size = takes(getattr(engine, "edit" if kind == "edit" else "vary"), "size")
    return check_size(engine, size, None if takes_size else (engine.info.size,))


@router.post("/images/edits", response_model=ImagesResponse, response_model_exclude_none=True,
             responses={**STREAMED, **UPLOAD_ERRORS})
async def create_edit(
    request: Request, user: CurrentUser, settings: SettingsDep,
    prompt: Annotated[str, Form(min_length=1, max_length=1000)],
    image: Annotated[UploadFile | None, File(description="PNG, JPEG or WebP")] = None,
    images: Annotated[list[UploadFile] | None,
                      File(alias="image[]", description="Several pictures: the first is edited (the answer says so)")
                      ] = None,
    mask: Annotated[UploadFile | None, File(description="Transparent (or white on black) where it may change")] = None,
    n: Annotated[int, Form(ge=1, le=10)] = 1,
    size: Annotated[str | None, Form()] = None,
    response_format: Annotated[Literal["b64_json", "url"], Form()] = "b64_json",
    output_format: Annotated[Literal["png", "jpeg", "webp"], Form()] = "png",
    output_compression: Annotated[int | None, Form(ge=0, le=100)] = None,
    quality: Annotated[Quality | None, Form(description="Candidates the edit ranks: low 8, high 64, "
                                                        "else the engine's default")] = None,
    background: Annotated[Literal["auto", "opaque", "transparent"] | None, Form()] = None,
    input_fidelity: Annotated[Literal["low", "high"] | None, Form(description="high: the redraw keeps closer to "
                                                                              "the picture (strength 0.2)")] = None,
    stream: Annotated[bool, Form()] = False,
    partial_images: Annotated[int, Form(ge=0, le=MAX_PARTIAL_IMAGES)] = 0,
    model: Annotated[str | None, Form()] = None,
    end_user: Annotated[str | None, Form(alias="user", max_length=256)] = None,
    seed: Annotated[int | None, Form(ge=0)] = None,
    strength: Annotated[float | None, Form(ge=0, le=1)] = None,
    steps: Annotated[int | None, Form(description="A diffusion pipeline's denoising steps")] = None,
    guidance: Annotated[float | None, Form(description="A diffusion pipeline's guidance scale")] = None,
    scheduler: Annotated[str | None, Form(max_length=40, description="A diffusion pipeline's scheduler")] = None,
):
    """Edit a picture by instruction ("add a boat") or by a prompt for the whole picture."""
    from pixelchat.imagefiles import ImageFileError, mask_array

    engine = check_model(request, model)
    side = picture_size(engine, "edit", size)
    check_background(background)
    files = uploaded(image, images)
    notes = [f"{len(files)} pictures were sent; the first was edited and the others were not used."] \
        if len(files) > 1 else []
    picture = await read_upload(request, files, "image", "RGB")
    m = None
    if mask is not None:
        m = await read_upload(request, [mask], "mask", "RGBA")
        try:
            mask_array(m, picture.size)  # checked here, so a bad mask is the client's error, named as such
        except ImageFileError as e:
            raise APIError(400, str(e), param="mask", code="invalid_mask") from None

    if strength is None and input_fidelity in FIDELITY_STRENGTH:
        strength = FIDELITY_STRENGTH[input_fidelity]
    options = edit_options(engine, "edit", quality, n)
    partials = partial_images if stream else 0
    fields = {"prompt": prompt, "n": n, "seed": seed, "strength": strength, "engine_options": options or {},
              "partial_images": partials, **sized(engine, "edit", side),
              **pipeline_settings(engine, {"steps": steps, "guidance": guidance, "scheduler": scheduler})}
    how = Answer(kind="edit", prompt=prompt, model=engine.info.id, size=side, response_format=response_format,
                 output_format=output_format, compression=output_compression,
                 quality=None if options is None else drawn_quality("edit", quality),
                 images_in=len(files), partial_images=partials, notes=notes)
    fingerprint = {**fields, "image": fingerprint_of(picture), "mask": m and fingerprint_of(m), "stream": stream}
    upload_files = {"image": picture, **({"mask": m} if m is not None else {})}
    if stream:
        return await streamed(request, user, "edit", fields, fingerprint, how, files=upload_files, end_user=end_user)
    outcome = await run_job(request, user, "edit", fields, fingerprint, files=upload_files, end_user=end_user)
    return await run_in_threadpool(answered, outcome, request, settings, how)


@router.post("/images/variations", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=UPLOAD_ERRORS)
async def create_variation(
    request: Request, user: CurrentUser, settings: SettingsDep,
    image: Annotated[UploadFile, File(description="PNG, JPEG or WebP")],
    n: Annotated[int, Form(ge=1, le=10)] = 1,
    size: Annotated[str | None, Form()] = None,
    response_format: Annotated[Literal["b64_json", "url"], Form()] = "b64_json",
    output_format: Annotated[Literal["png", "jpeg", "webp"], Form()] = "png",
    output_compression: Annotated[int | None, Form(ge=0, le=100)] = None,
    quality: Annotated[Quality | None, Form(description="Candidates per picture: low 1, high 8, "
                                                        "else the engine's default")] = None,
    model: Annotated[str | None, Form()] = None,
    end_user: Annotated[str | None, Form(alias="user", max_length=256)] = None,
    seed: Annotated[int | None, Form(ge=0)] = None,
    steps: Annotated[int | None, Form(description="A diffusion pipeline's denoising steps")] = None,
    guidance: Annotated[float | None, Form(description="A diffusion pipeline's guidance scale")] = None,
    scheduler: Annotated[str | None, Form(max_length=40, description="A diffusion pipeline's scheduler")] = None,
):
    """Pictures like the given one: same attributes, other details."""

    engine = check_model(request, model)
    side = picture_size(engine, "vary", size)
    picture = await read_upload(request, [image], "image", "RGB")
    options = edit_options(engine, "vary", quality, n)
    fields = {"n": n, "seed": seed, "engine_options": options or {}, **sized(engine, "vary", side),
              **pipeline_settings(engine, {"steps": steps, "guidance": guidance, "scheduler": scheduler})}
    how = Answer(kind="variation", prompt="", model=engine.info.id, size=side, response_format=response_format,
                 output_format=output_format, compression=output_compression,
                 quality=None if options is None else drawn_quality("variation", quality), images_in=1)
    outcome = await run_job(request, user, "vary", fields, {**fields, "image": fingerprint_of(picture)},
                            files={"image": picture})
    return await run_in_threadpool(answered, outcome, request, settings, how)


@router.get("/images/files/{name}", response_class=Response, include_in_schema=True,
            responses={200: {"content": {m: {} for m in MEDIA.values()}}, **responses(404)})
def image_file(name: str, expires: int, signature: str, request: Request, db: SessionDep,
               settings: SettingsDep) -> Response:
    """A picture behind a signed, expiring link (no API key needed: the signature is the key)."""
    image_id, _, fmt = name.partition(".")
    if fmt not in MEDIA or not signature_ok(request.app.state.signing_key, f"{image_id}.{fmt}:{expires}", signature):
        raise APIError(404, "No such image.", code="not_found")
    if expires < time.time():
        raise APIError(404, "This image link has expired; ask for the image again.", code="expired")
    row = db.get(ImageRow, image_id)
    if row is None:
        raise APIError(404, "No such image.", code="not_found")
    png = request.app.state.store.get(row.sha256)
    if fmt == "png":
        data = png
    else:
        from io import BytesIO

        from PIL import Image

        data = encode(Image.open(BytesIO(png)).convert("RGB"), fmt, None, row.record)
    return Response(data, media_type=MEDIA[fmt], headers={"X-Content-Type-Options": "nosniff",
                                                          "Cache-Control": "private, max-age=3600"})
