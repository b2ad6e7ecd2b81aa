"""Conversations (`pixelchat.Session`) kept by the server: create one (alone or in a room), post a
message and get the turn's result, undo, go to any earlier turn, read the history tree, follow
its turns live.

Every turn is a job: by default the request waits for it and answers with the turn; with
``Prefer: respond-async`` it answers 202 at once with the job to follow.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, or_, select

from pixelchat.server.access import allows, role_in, room_for, session_for
from pixelchat.server.deps import CurrentUser, SessionDep, still_allowed
from pixelchat.server.errors import APIError, responses
from pixelchat.server.events import event_stream
from pixelchat.server.models import ImageRow, RoomMember, SessionRow, User
from pixelchat.server.routes import MAX_JSON_INT, Colour, Seed, StyleName, Timestamp
from pixelchat.server.routes.jobs import JobPublic, public as job_public
from pixelchat.server.routes.openai_images import submit_job

router = APIRouter(prefix="/api/sessions", tags=["sessions"])


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: str = Field("", max_length=200)
    room_id: str | None = Field(None, description="Share it in this room (you need to be an editor there).")
    seed: Seed | None = Field(None, description="Seed lock: every new picture starts from this seed.")
    checks: int = Field(3, ge=0, le=8, description="Self-check attempts per change (0: off).")
    style: StyleName = Field("none", description="A style preset for the pictures (GET /api/styles).")
    palette: list[Colour] | None = Field(None, max_length=16, description="Hex colours the pictures keep to.")
    size: int | None = Field(None, description="Side of new pictures, among those the served model draws "
                                                "(GET /v1/models); default: the model's (256 for the built-in one). "
                                                "Edits keep their picture's size.")
    draw_anyway: bool = Field(False, description="Draw every prompt, even one that names nothing the model draws "
                                                 "(else such a turn draws nothing and says what the model draws).")


class SessionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: str = Field(max_length=200)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(min_length=1, max_length=1000, description="What to draw, change or ask.")
    anyway: bool = Field(False, description="Draw this prompt even if it names nothing the model draws (send a "
                                            "declined turn's text again with this set); this turn only.")


class Goto(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    node: int = Field(ge=0, le=MAX_JSON_INT)


class NodePublic(BaseModel):
    id: int
    parent: int | None
    message: str
    kind: str
    prompt: str
    attributes: dict[str, str]
    reply: str
    style: str
    palette: list[str]
    negative: list[str]
    created: str
    image_id: str | None = Field(None, description="The stored picture of this turn (GET /api/images/{id}).")
    author: str | None = Field(None, description="Who said this turn (in a room, one of its members).")


class SessionSummary(BaseModel):
    id: str
    title: str
    room_id: str | None
    owner: int
    created: Timestamp
    updated: Timestamp


class SessionPublic(SessionSummary):
    role: str = Field(description="Your role: owner (it is yours), editor or viewer (through its room).")
    seed: int | None
    checks: int
    size: int | None = Field(None, description="Side of new pictures (null: the model's default).")
    draw_anyway: bool = Field(description="Prompts that name nothing the model draws are drawn all the same.")
    current: int | None
    path: list[int] = Field(description="Turn ids from the first to the current one.")
    nodes: list[NodePublic]


class SessionList(BaseModel):
    data: list[SessionSummary]


class TurnPublic(BaseModel):
    job: str
    kind: str
    reply: str
    prompt: str
    node: int | None
    attributes: dict[str, str]
    style: str
    palette: list[str]
    images: list[str] = Field(description="Ids of the pictures this turn made.")
    declined: bool = Field(False, description="Nothing was drawn because the prompt names nothing the model draws; "
                                              "send the same text with anyway: true to draw it all the same.")


def summary(row: SessionRow) -> SessionSummary:
    return SessionSummary(id=row.id, title=row.title, room_id=row.room_id, owner=row.user_id, created=row.created,
                          updated=row.updated)


def detail(db, user, row: SessionRow) -> SessionPublic:
    from pixelchat.conversation.session import Session

    s = Session.from_json(row.data)
    images: dict[int, str] = {}
    authors: dict[int, str] = {}  # a turn's picture was stored under the account of whoever said it
    for image_id, record, author in db.execute(select(ImageRow.id, ImageRow.record, User.name)
                                               .join(User, User.id == ImageRow.user_id)
                                               .where(ImageRow.session_id == row.id).order_by(ImageRow.created)):
        if isinstance(record, dict) and isinstance(record.get("session_node"), int):
            images[record["session_node"]] = image_id
            authors[record["session_node"]] = author
    role = "owner" if row.user_id == user.id else role_in(db, user, row.room_id)
    nodes = [NodePublic(id=n.id, parent=n.parent, message=n.message, kind=n.kind, prompt=n.prompt,
                        attributes=n.attributes, reply=n.reply, style=n.style, palette=n.palette, negative=n.negative,
                        created=n.created, image_id=images.get(n.id), author=authors.get(n.id))
             for n in s.nodes.values()]
    return SessionPublic(**summary(row).model_dump(), role=role or "viewer", seed=s.seed, checks=s.checks, size=s.size,
                         draw_anyway=s.draw_anyway, current=s.current, path=[n.id for n in s.path()], nodes=nodes)


@router.post("", status_code=201, response_model=SessionPublic, responses=responses(404))
def create_session(body: SessionCreate, request: Request, user: CurrentUser, db: SessionDep) -> SessionPublic:
    from pixelchat.conversation.session import Session
    from pixelchat.server.routes.openai_images import drawable_sizes, served

    if body.room_id is not None:
        room_for(db, user, body.room_id, need="editor")
    if body.size is not None and body.size not in (sizes := drawable_sizes(served(request))):
        raise APIError(400, f"size {body.size} is not drawn by this model; it draws {', '.join(map(str, sizes))}.",
                       param="size", code="invalid_size")
    try:
        s = Session(seed=body.seed, checks=body.checks, style=body.style, palette=body.palette or None, size=body.size,
                    draw_anyway=body.draw_anyway)
    except ValueError as e:
        raise APIError(400, str(e), code="invalid_value") from None
    row = SessionRow(id=secrets.token_hex(16), user_id=user.id, room_id=body.room_id, title=body.title.strip(),
                     data=s.to_json())
    db.add(row)
    db.commit()
    if row.room_id:
        db.refresh(row)
    return detail(db, user, row)


@router.get("", response_model=SessionList, responses=responses(404))
def list_sessions(user: CurrentUser, db: SessionDep, room_id: str | None = None,
                  limit: int = Query(50, ge=1, le=200)) -> SessionList:
    """Your own sessions and those in your rooms, most recently changed first."""
    rooms = select(RoomMember.room_id).where(RoomMember.user_id == user.id)
    query = select(SessionRow).where(or_(and_(SessionRow.user_id == user.id, SessionRow.room_id.is_(None)),
                                         SessionRow.room_id.in_(rooms)))
    if room_id is not None:
        room_for(db, user, room_id)
        query = query.where(SessionRow.room_id == room_id)
    rows = db.scalars(query.order_by(SessionRow.updated.desc()).limit(limit))
    return SessionList(data=[summary(r) for r in rows])


@router.get("/{session_id}", response_model=SessionPublic, responses=responses(404))
def get_session(session_id: str, user: CurrentUser, db: SessionDep) -> SessionPublic:
    """The history tree: every turn with its parent, so any earlier picture can be gone back to."""
    return detail(db, user, session_for(db, user, session_id))


@router.patch("/{session_id}", response_model=SessionPublic, responses=responses(404))
def rename_session(session_id: str, body: SessionUpdate, user: CurrentUser, db: SessionDep) -> SessionPublic:
    row = session_for(db, user, session_id, need="editor")
    row.title = body.title.strip()
    db.commit()
    return detail(db, user, row)


@router.delete("/{session_id}", status_code=204, response_class=Response, responses=responses(404))
def delete_session(session_id: str, user: CurrentUser, db: SessionDep) -> Response:
    """Delete the conversation (its pictures stay in their makers' galleries). Yours, or as a room's owner."""
    row = session_for(db, user, session_id)
    if row.user_id != user.id and not allows(role_in(db, user, row.room_id), "owner"):
        raise APIError(403, "Only the session's maker or the room's owner may delete it.", code="forbidden")
    db.delete(row)
    db.commit()
    return Response(status_code=204)


async def take_turn(request: Request, user, db, session_id: str, payload: dict, prefer: str | None):
    row = session_for(db, user, session_id, need="editor")
    db.commit()
    queue = request.app.state.jobs
    job = await submit_job(request, user, "message", payload, payload, session_id=row.id)
    if prefer and "respond-async" in prefer.lower():
        return JSONResponse(job_public(job).model_dump(mode="json"), 202, headers={"Location": f"/api/jobs/{job.id}"})
    outcome = await queue.wait(job.id)
    outcome.raise_error()
    turn = outcome.result.get("turn", {})
    return TurnPublic(job=job.id, kind=turn.get("kind", ""), reply=turn.get("reply", ""), prompt=turn.get("prompt", ""),
                      node=turn.get("node"), attributes=turn.get("attributes", {}), style=turn.get("style", "none"),
                      palette=turn.get("palette", []), images=outcome.ids, declined=turn.get("declined", False))


ASYNC = {202: {"model": JobPublic, "description": "With 'Prefer: respond-async': the queued job"},
         **responses(404, 409, 503)}
PreferHeader = Annotated[str | None, Header(description="'respond-async': answer 202 with the job at once")]


@router.post("/{session_id}/messages", response_model=TurnPublic, responses=ASYNC)
async def post_message(session_id: str, body: Message, request: Request, user: CurrentUser, db: SessionDep,
                       prefer: PreferHeader = None):
    """Say something: a new picture, a change ("make the clouds pink, keep the rest"), a question
    about the picture, a style or palette, or "undo". A prompt that names nothing the model draws is
    declined (``declined``: nothing drawn) unless ``anyway`` is set or the session draws anyway."""
    payload = {"action": "say", "text": body.text, **({"anyway": True} if body.anyway else {})}
    return await take_turn(request, user, db, session_id, payload, prefer)


@router.post("/{session_id}/undo", response_model=TurnPublic, responses=ASYNC)
async def undo(session_id: str, request: Request, user: CurrentUser, db: SessionDep, prefer: PreferHeader = None):
    """Back to the previous turn (the undone one stays in the tree)."""
    return await take_turn(request, user, db, session_id, {"action": "undo"}, prefer)


@router.post("/{session_id}/goto", response_model=TurnPublic, responses=ASYNC)
async def goto(session_id: str, request: Request, user: CurrentUser, db: SessionDep,
               body: Annotated[Goto, Body()], prefer: PreferHeader = None):
    """Make an earlier turn the current one: the next change branches from it."""
    return await take_turn(request, user, db, session_id, {"action": "goto", "node": body.node}, prefer)


@router.get("/{session_id}/events", responses={200: {"content": {"text/event-stream": {}},
                                                     "description": "Server-sent events"}, **responses(404)})
def session_events(session_id: str, request: Request, user: CurrentUser, db: SessionDep):
    """Each turn as it is taken (type ``turn``), by anyone in the session's room. The stream ends
    when the caller may no longer see the session (removed from its room, key revoked, signed out)."""
    row = session_for(db, user, session_id)
    db.close()  # a stream lasts: its connection goes back to the pool now
    slot = request.app.state.streams.open(user.id)
    sub = request.app.state.events.subscribe(f"session:{row.id}")
    return event_stream(request, sub, [{"type": "hello", "session": row.id}], slot=slot,
                        allowed=still_allowed(request, lambda db, user: session_for(db, user, row.id)))


@router.get("/{session_id}/export", response_class=Response,
            responses={200: {"content": {"application/json": {}}, "description": "A pixelchat session file"},
                       **responses(404)})
def export_session(session_id: str, user: CurrentUser, db: SessionDep) -> Response:
    """The conversation as a session file (`pixelchat chat --session FILE` continues it)."""
    row = session_for(db, user, session_id)
    return Response(row.data, media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="pixelchat-session-{row.id}.json"'})


styles_router = APIRouter(prefix="/api", tags=["sessions"])


class StylePublic(BaseModel):
    name: str
    description: str


@styles_router.get("/styles", response_model=list[StylePublic])
def list_styles(user: CurrentUser) -> list[StylePublic]:
    """The style presets a session (or a generation's ``style``) can use."""
    from pixelchat.vision.style import load_styles

    return [StylePublic(name=s.name, description=s.description) for s in load_styles().values()]
