"""The OpenAI-compatible images API: `POST /v1/images/generations`, `/v1/images/edits`,
`/v1/images/variations`, `GET /v1/models`, and the signed image links that
``response_format="url"`` returns.

Requests take OpenAI's fields; the extras other compatible servers accept (``seed``,
``negative_prompt``, ``style``) work the same here. Every picture made is stored (PNG with its
record) under the user's account.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from pixelchat.server.deps import CurrentUser, SessionDep, SettingsDep
from pixelchat.server.errors import APIError, responses
from pixelchat.server.handlers import client_errors, generate_request
from pixelchat.server.jobs import Outcome, request_hash
from pixelchat.server.models import ImageRow
from pixelchat.server.security import sign, signature_ok

router = APIRouter(prefix="/v1", tags=["openai"])
MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# what a route that runs a job may answer besides its own errors: an unknown model, a reused
# Idempotency-Key, a full queue
JOB_ERRORS = responses(404, 409, 503)
UPLOAD_ERRORS = {**JOB_ERRORS, **responses(413, 415)}


async def submit_job(request: Request, user, kind: str, payload: dict, fingerprint: dict, *,
                     files: dict | None = None, session_id: str | None = None):
    """Queue the work as a job. An ``Idempotency-Key`` header binds the key to this route and
    ``fingerprint`` (the request's fields): sent again, it returns the first job."""
    text = payload.get("prompt") or (payload.get("text") if kind == "message" else None)
    if text:
        await run_in_threadpool(moderate, request, user, text)
    key = request.headers.get("idempotency-key")
    job, _ = await run_in_threadpool(request.app.state.jobs.submit, user.id, kind, payload, session_id=session_id,
                                     idempotency_key=key, files=files,
                                     fingerprint=request_hash(request.url.path, fingerprint) if key else None)
    return job


def moderate(request: Request, user, text: str) -> None:
    """The content policy on a prompt or message, before any work: a blocked one is OpenAI's 400
    ``content_policy_violation``. Every decision goes to the operator's log (the text only if asked)."""
    from pixelchat.safety.moderation import log_decision

    decision = request.app.state.moderator.check(text)
    log_decision(decision, user=user.name, prompt=text, log_prompts=request.app.state.settings.log_prompts)
    if not decision.allowed:
        raise APIError(400, decision.reason, param="prompt", code="content_policy_violation")


async def run_job(request: Request, user, kind: str, payload: dict, fingerprint: dict, *,
                  files: dict | None = None, session_id: str | None = None) -> Outcome:
    """Queue the work as a job (see `submit_job`) and wait for it; a failed job raises its error."""
    job = await submit_job(request, user, kind, payload, fingerprint, files=files, session_id=session_id)
    outcome = await request.app.state.jobs.wait(job.id)
    outcome.raise_error()
    return outcome


class GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=1000)
    model: str | None = None
    n: int = Field(1, ge=1, le=10)
    size: str | None = Field(None, description="'WxH' among the served model's sizes, or 'auto'.")
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int | None = Field(None, ge=0, le=100)
    quality: Literal["auto", "standard", "hd", "low", "medium", "high"] | None = None
    background: Literal["auto", "opaque"] | None = None
    moderation: Literal["auto", "low"] | None = None
    user: str | None = Field(None, max_length=256)
    # extras accepted by other OpenAI-compatible image servers
    seed: int | None = Field(None, ge=0)
    negative_prompt: str | None = Field(None, max_length=1000)
    style: str | None = Field(None, description="A style preset ('vivid', 'noir', ...; 'natural' means none).")
    palette: list[str] | None = Field(None, max_length=16, description="Hex colours the pictures keep to.")


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str
    id: str | None = Field(None, description="The stored picture (GET /api/images/{id}); not in OpenAI's API.")


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    output_format: str
    size: str


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "pixelchat"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def served(request: Request):
    from pixelchat.server.handlers import engine_of

    return engine_of(request.app.state.jobs)


def check_model(request: Request, model: str | None):
    engine = served(request)
    if model not in (None, "", engine.info.id):
        raise APIError(404, f"The model '{model}' does not exist; this server has '{engine.info.id}' (GET /v1/models).",
                       param="model", code="model_not_found")
    return engine


def check_size(engine, size: str | None) -> str:
    native = f"{engine.info.size}x{engine.info.size}"
    if size not in (None, "auto", native):
        raise APIError(400, f"size {size!r} is not supported by {engine.info.id}; supported: {native!r} or 'auto'",
                       param="size", code="invalid_size")
    return native


def encode(image, fmt: str, compression: int | None, record: dict) -> bytes:
    """The picture as ``fmt`` with its record, parameters, XMP and watermark (as the stored PNG)."""
    from pixelchat.safety.provenance import image_bytes

    return image_bytes(image, record, fmt, quality=compression if compression is not None else 90)


def image_url(request: Request, settings, image_id: str, fmt: str) -> str:
    expires = int(time.time()) + settings.url_ttl_s
    signature = sign(request.app.state.signing_key, f"{image_id}.{fmt}:{expires}")
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    return f"{base}/v1/images/files/{image_id}.{fmt}?expires={expires}&signature={signature}"


@router.get("/models", response_model=ModelList)
def list_models(request: Request, user: CurrentUser) -> ModelList:
    info = served(request).info
    return ModelList(data=[Model(id=info.id, created=int(request.app.state.started))])


@router.post("/images/generations", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=JOB_ERRORS)
async def create_images(body: GenerationRequest, request: Request, user: CurrentUser,
                        settings: SettingsDep) -> ImagesResponse:
    engine = check_model(request, body.model)
    size = check_size(engine, body.size)
    payload = generation_payload(engine, body)
    outcome = await run_job(request, user, "generate", payload, body.model_dump())
    return await run_in_threadpool(answer, outcome, request, settings, body.response_format, body.output_format,
                                   body.output_compression, size)


def generation_payload(engine, body) -> dict:
    """A generation job's payload, checked now (a bad style, palette or prompt is refused here, not in a batch)."""
    from pixelchat.vision.style import get_style, palette_hex

    payload = {"prompt": body.prompt, "n": getattr(body, "n", 1), "seed": body.seed, "style": body.style,
               "negative_prompt": body.negative_prompt}
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


def answer(outcome: Outcome, request: Request, settings, response_format: str, output_format: str,
           compression: int | None, size: str) -> ImagesResponse:
    """A finished job's pictures in OpenAI's shape."""
    revised = outcome.result.get("revised_prompt", "")
    data = []
    for image_id, png, image, record in zip(outcome.ids, outcome.pngs, outcome.images, outcome.records):
        if response_format == "url":
            data.append(ImageData(url=image_url(request, settings, image_id, output_format), revised_prompt=revised,
                                  id=image_id))
        else:
            raw = png if output_format == "png" else encode(image, output_format, compression, record)
            data.append(ImageData(b64_json=base64.b64encode(raw).decode(), revised_prompt=revised, id=image_id))
    return ImagesResponse(created=int(time.time()), data=data, output_format=output_format, size=size)


def fingerprint_of(image) -> str:
    return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()


async def read_upload(request: Request, files: list[UploadFile], param: str, mode: str):
    """One uploaded picture, read under the byte cap and decoded as hostile input."""
    from pixelchat.server.uploads import Limits, UploadError, decode_image, read_capped

    if len(files) != 1:
        raise APIError(400, f"send exactly one '{param}' file", param=param, code="invalid_value")
    limit = request.app.state.settings.max_upload_bytes
    try:
        data = await read_capped(files[0], limit, param=param)
        return decode_image(data, param=param, limits=Limits(max_bytes=limit), mode=mode)
    except UploadError as e:
        raise APIError(e.status, e.message, param=e.param, code=e.code) from None


def uploaded(single: UploadFile | None, many: list[UploadFile] | None) -> list[UploadFile]:
    return [f for f in [single, *(many or [])] if f is not None]


@router.post("/images/edits", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=UPLOAD_ERRORS)
async def create_edit(
    request: Request, user: CurrentUser, settings: SettingsDep,
    prompt: Annotated[str, Form(min_length=1, max_length=1000)],
    image: Annotated[UploadFile | None, File(description="PNG, JPEG or WebP")] = None,
    images: Annotated[list[UploadFile] | None, File(alias="image[]")] = None,
    mask: Annotated[UploadFile | None, File(description="Transparent (or white on black) where it may change")] = None,
    n: Annotated[int, Form(ge=1, le=10)] = 1,
    size: Annotated[str | None, Form()] = None,
    response_format: Annotated[Literal["b64_json", "url"], Form()] = "b64_json",
    output_format: Annotated[Literal["png", "jpeg", "webp"], Form()] = "png",
    output_compression: Annotated[int | None, Form(ge=0, le=100)] = None,
    model: Annotated[str | None, Form()] = None,
    end_user: Annotated[str | None, Form(alias="user", max_length=256)] = None,
    seed: Annotated[int | None, Form(ge=0)] = None,
    strength: Annotated[float | None, Form(ge=0, le=1)] = None,
) -> ImagesResponse:
    """Edit a picture by instruction ("add a boat") or by a prompt for the whole picture."""
    from pixelchat.imagefiles import ImageFileError, mask_array

    engine = check_model(request, model)
    native = check_size(engine, size)
    picture = await read_upload(request, uploaded(image, images), "image", "RGB")
    m = None
    if mask is not None:
        m = await read_upload(request, [mask], "mask", "RGBA")
        try:
            mask_array(m, picture.size)  # checked here, so a bad mask is the client's error, named as such
        except ImageFileError as e:
            raise APIError(400, str(e), param="mask", code="invalid_mask") from None

    fields = {"prompt": prompt, "n": n, "seed": seed, "strength": strength}
    outcome = await run_job(request, user, "edit", fields,
                            {**fields, "image": fingerprint_of(picture), "mask": m and fingerprint_of(m)},
                            files={"image": picture, **({"mask": m} if m is not None else {})})
    return await run_in_threadpool(answer, outcome, request, settings, response_format, output_format,
                                   output_compression, native)


@router.post("/images/variations", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=UPLOAD_ERRORS)
async def create_variation(
    request: Request, user: CurrentUser, settings: SettingsDep,
    image: Annotated[UploadFile, File(description="PNG, JPEG or WebP")],
    n: Annotated[int, Form(ge=1, le=10)] = 1,
    size: Annotated[str | None, Form()] = None,
    response_format: Annotated[Literal["b64_json", "url"], Form()] = "b64_json",
    output_format: Annotated[Literal["png", "jpeg", "webp"], Form()] = "png",
    model: Annotated[str | None, Form()] = None,
    end_user: Annotated[str | None, Form(alias="user", max_length=256)] = None,
    seed: Annotated[int | None, Form(ge=0)] = None,
) -> ImagesResponse:
    """Pictures like the given one: same attributes, other details."""

    engine = check_model(request, model)
    native = check_size(engine, size)
    picture = await read_upload(request, [image], "image", "RGB")

    fields = {"n": n, "seed": seed}
    outcome = await run_job(request, user, "vary", fields, {**fields, "image": fingerprint_of(picture)},
                            files={"image": picture})
    return await run_in_threadpool(answer, outcome, request, settings, response_format, output_format, None, native)


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
