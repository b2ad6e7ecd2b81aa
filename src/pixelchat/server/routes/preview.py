"""Live preview: a picture for a prompt as it is being typed. It goes through the queue like any
generation (and is batched with them), but is neither stored nor listed: the PNG goes back to the
caller and nowhere else."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from pixelchat.server.deps import CurrentUser
from pixelchat.server.errors import responses
from pixelchat.server.routes import Colour, ImageStyle, Seed
from pixelchat.server.routes.openai_images import check_model, check_size, generation_payload, run_job

router = APIRouter(prefix="/api", tags=["images"])


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, max_length=1000)
    seed: Seed | None = Field(None, description="Keep it fixed while typing, so only the words change the picture.")
    negative_prompt: str | None = Field(None, max_length=1000)
    style: ImageStyle | None = Field(None, description="A style preset (GET /api/styles).")
    palette: list[Colour] | None = Field(None, max_length=16, description="Hex colours the picture keeps to.")
    size: str | None = Field(None, max_length=20, description="'WxH' among the sizes the model draws (GET /v1/models), "
                                                              "or 'auto' (its default).")
    steps: int | None = Field(None, description="A diffusion pipeline's denoising steps (1–1000).")
    guidance: float | None = Field(None, description="A diffusion pipeline's guidance scale (0–50).")
    scheduler: str | None = Field(None, max_length=40, description="A diffusion pipeline's scheduler by name.")


@router.post("/preview", response_class=Response, responses={
    200: {"content": {"image/png": {}}, "description": "The picture (with its record), not stored",
          "headers": {"X-Pixelchat-Seed": {"description": "The seed it was drawn from", "schema": {"type": "integer"}}}},
    **responses(400, 404, 409, 503)})
async def preview(body: PreviewRequest, request: Request, user: CurrentUser) -> Response:
    """One picture for ``prompt``, quickly, to show while the prompt is typed."""
    engine = check_model(request, None)
    payload = {**generation_payload(engine, body), "size": check_size(engine, body.size)}
    # bound to the request's fields: the same Idempotency-Key with another prompt is 409
    outcome = await run_job(request, user, "preview", payload, body.model_dump())
    if not outcome.pngs:  # the same key and request again: a preview is not kept, so it is drawn again, same seed
        queue, seed = request.app.state.jobs, (outcome.result.get("seeds") or [payload.get("seed")])[0]
        job, _ = await run_in_threadpool(queue.submit, user.id, "preview", {**payload, "seed": seed})
        outcome = await queue.wait(job.id)
        outcome.raise_error()
    record = outcome.records[0] if outcome.records else {}
    return Response(outcome.pngs[0], media_type="image/png",
                    headers={"Cache-Control": "no-store", "X-Pixelchat-Seed": str(record.get("seed", ""))})
