"""Our images API: a user's pictures with their records — list (newest first, search by prompt),
get, download, delete — and describing an uploaded picture. Another user's picture is 404, never its
content."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import select

from pixelchat.server.access import image_for
from pixelchat.server.admin import drop_unused_files
from pixelchat.server.deps import CurrentUser, SessionDep
from pixelchat.server.errors import APIError, responses
from pixelchat.server.models import ImageRow
from pixelchat.server.routes import Timestamp

router = APIRouter(prefix="/api/images", tags=["images"])


class ImagePublic(BaseModel):
    id: str
    prompt: str
    created: Timestamp
    record: dict
    sha256: str
    model: str | None = None
    session_id: str | None = None


class ImageList(BaseModel):
    data: list[ImagePublic]
    has_more: bool


def public(row: ImageRow) -> ImagePublic:
    return ImagePublic(id=row.id, prompt=row.prompt, created=row.created, record=row.record, sha256=row.sha256,
                       model=row.model, session_id=row.session_id)


@router.get("", response_model=ImageList)
def list_images(user: CurrentUser, db: SessionDep, q: str | None = Query(None, max_length=200, description="Words in the prompt."),
                limit: int = Query(50, ge=1, le=200), before: datetime | None = None) -> ImageList:
    query = select(ImageRow).where(ImageRow.user_id == user.id)
    if q:
        for word in q.split():
            query = query.where(ImageRow.prompt.icontains(word, autoescape=True))
    if before is not None:
        query = query.where(ImageRow.created < before)
    rows = db.scalars(query.order_by(ImageRow.created.desc(), ImageRow.id).limit(limit + 1)).all()
    return ImageList(data=[public(r) for r in rows[:limit]], has_more=len(rows) > limit)


@router.get("/{image_id}", response_model=ImagePublic, responses=responses(404))
def get_image(image_id: str, user: CurrentUser, db: SessionDep) -> ImagePublic:
    return public(image_for(db, user, image_id))


@router.get("/{image_id}/file", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, **responses(404)})
def download_image(image_id: str, request: Request, user: CurrentUser, db: SessionDep) -> Response:
    """The PNG with its record (our JSON and an A1111 `parameters` line)."""
    row = image_for(db, user, image_id)
    return Response(request.app.state.store.get(row.sha256), media_type="image/png",
                    headers={"Content-Disposition": f'attachment; filename="pixelchat-{row.id}.png"'})


@router.delete("/{image_id}", status_code=204, response_class=Response, responses=responses(404))
def delete_image(image_id: str, request: Request, user: CurrentUser, db: SessionDep) -> Response:
    """Forget the picture; its file goes too unless another record still uses the same bytes. Yours,
    or one in a room you own."""
    row = image_for(db, user, image_id, need="owner")
    sha = row.sha256
    db.delete(row)
    db.commit()
    drop_unused_files(db, request.app.state.store, {sha})
    return Response(status_code=204)


async def read_picture(request: Request, upload: UploadFile, param: str, mode: str):
    """One uploaded picture, read under the byte cap and decoded as hostile input at the engines' working
    size, on a worker thread and a few at a time (`PIXELCHAT_UPLOAD_DECODES`)."""
    from pixelchat.server.uploads import Limits, UploadError, read_picture as read

    limits = Limits(max_bytes=request.app.state.settings.max_upload_bytes)
    try:
        return await read(upload, param=param, limits=limits, mode=mode, gate=request.app.state.decodes)
    except UploadError as e:
        raise APIError(e.status, e.message, param=e.param, code=e.code) from None


describe_router = APIRouter(prefix="/api", tags=["describe"])


class DescriptionPublic(BaseModel):
    caption: str
    prompt: str
    attributes: dict[str, str]
    confidence: dict[str, float]
    # false: the picture does not look like the scenes the describer knows, so its reading means little
    # (absent for a describer without familiarity statistics, and for an image-to-text model)
    familiar: bool | None = None
    novelty: float | None = None


@describe_router.post("/describe", response_model=DescriptionPublic, responses=responses(409, 413, 415, 503))
async def describe_image(request: Request, user: CurrentUser,
                         image: Annotated[UploadFile, File(description="PNG, JPEG or WebP")]) -> DescriptionPublic:
    """What the picture shows: a caption, the scene attributes with confidences, and a prompt
    that redraws a similar picture."""
    from pixelchat.server.routes.openai_images import fingerprint_of, run_job

    picture = await read_picture(request, image, "image", "RGB")
    outcome = await run_job(request, user, "describe", {}, {"image": fingerprint_of(picture)}, files={"image": picture})
    return DescriptionPublic(**outcome.result)
