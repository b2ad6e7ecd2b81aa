"""Rooms: shared spaces with members in roles (viewer < editor < owner), their sessions, and a live
stream of what happens in them. A non-member gets 404 for everything about a room; a member without
the role an action needs gets 403."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from pixelchat.server import access, events
from pixelchat.server.deps import CurrentUser, SessionDep, still_allowed
from pixelchat.server.errors import APIError, responses
from pixelchat.server.models import Room, RoomMember, SessionRow, User
from pixelchat.server.routes import Timestamp

router = APIRouter(prefix="/api/rooms", tags=["rooms"])

Role = Literal["viewer", "editor", "owner"]
RoomName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class RoomCreate(BaseModel):
    model_config = ConfigDict(strict=True)

    name: RoomName


class RoomUpdate(BaseModel):
    model_config = ConfigDict(strict=True)

    name: RoomName


class RoomSummary(BaseModel):
    id: str
    name: str
    role: Role
    created: Timestamp


class RoomList(BaseModel):
    data: list[RoomSummary]


class MemberPublic(BaseModel):
    user: str
    role: Role


class MemberAdd(BaseModel):
    model_config = ConfigDict(strict=True)

    user: str
    role: Role = "viewer"


class MemberUpdate(BaseModel):
    model_config = ConfigDict(strict=True)

    role: Role


class RoomSession(BaseModel):
    id: str
    title: str
    updated: Timestamp


class RoomPublic(BaseModel):
    id: str
    name: str
    created: Timestamp
    role: Role  # the caller's
    members: list[MemberPublic]
    sessions: list[RoomSession]


def publish(request: Request, room_id: str, event: dict) -> None:
    request.app.state.events.publish(f"room:{room_id}", {**event, "room": room_id})


def public(db: Session, room: Room, role: str) -> RoomPublic:
    members = db.execute(select(User.name, RoomMember.role).join(User, RoomMember.user_id == User.id)
                         .where(RoomMember.room_id == room.id).order_by(RoomMember.added, User.name)).all()
    sessions = db.scalars(select(SessionRow).where(SessionRow.room_id == room.id)
                          .order_by(SessionRow.updated.desc(), SessionRow.id)).all()
    return RoomPublic(id=room.id, name=room.name, created=room.created, role=role,
                      members=[MemberPublic(user=name, role=r) for name, r in members],
                      sessions=[RoomSession(id=s.id, title=s.title, updated=s.updated) for s in sessions])


def member(db: Session, room_id: str, name: str) -> tuple[RoomMember, User]:
    found = db.execute(select(RoomMember, User).join(User, RoomMember.user_id == User.id)
                       .where(RoomMember.room_id == room_id, User.name == name)).first()
    if found is None:
        raise APIError(404, f"'{name}' is not a member of this room.", param="name", code="not_found")
    return found[0], found[1]


def keep_an_owner(db: Session, target: RoomMember) -> None:
    """Refuse to demote or remove the room's only owner."""
    if target.role != "owner":
        return
    owners = db.scalar(select(func.count()).select_from(RoomMember)
                       .where(RoomMember.room_id == target.room_id, RoomMember.role == "owner"))
    if owners <= 1:
        raise APIError(409, "A room needs an owner: make someone else owner first, or delete the room.",
                       code="last_owner")


@router.post("", status_code=201, response_model=RoomPublic)
def create_room(body: RoomCreate, user: CurrentUser, db: SessionDep) -> RoomPublic:
    """A new room, with its creator as owner."""
    room = Room(id=secrets.token_hex(16), name=body.name)
    db.add(room)
    db.add(RoomMember(room_id=room.id, user_id=user.id, role="owner"))
    db.commit()
    return public(db, room, "owner")


@router.get("", response_model=RoomList)
def list_rooms(user: CurrentUser, db: SessionDep) -> RoomList:
    """The rooms the caller belongs to, with their role in each, newest first."""
    rows = db.execute(select(Room, RoomMember.role).join(RoomMember, RoomMember.room_id == Room.id)
                      .where(RoomMember.user_id == user.id).order_by(Room.created.desc(), Room.id)).all()
    return RoomList(data=[RoomSummary(id=r.id, name=r.name, role=role, created=r.created) for r, role in rows])


@router.get("/{room_id}", response_model=RoomPublic, responses=responses(404))
def get_room(room_id: str, user: CurrentUser, db: SessionDep) -> RoomPublic:
    """The room's name, members and sessions."""
    room, role = access.room_for(db, user, room_id)
    return public(db, room, role)


@router.patch("/{room_id}", response_model=RoomPublic, responses=responses(404))
def rename_room(room_id: str, body: RoomUpdate, request: Request, user: CurrentUser, db: SessionDep) -> RoomPublic:
    room, role = access.room_for(db, user, room_id, "owner")
    room.name = body.name
    db.commit()
    publish(request, room_id, {"type": "room", "name": room.name})
    return public(db, room, role)


@router.delete("/{room_id}", status_code=204, response_class=Response, responses=responses(404))
def delete_room(room_id: str, request: Request, user: CurrentUser, db: SessionDep) -> Response:
    """The room goes, with its memberships and sessions."""
    room, _ = access.room_for(db, user, room_id, "owner")
    db.delete(room)
    db.commit()
    publish(request, room_id, {"type": "deleted"})
    return Response(status_code=204)


@router.post("/{room_id}/members", status_code=201, response_model=MemberPublic, responses=responses(404, 409))
def add_member(room_id: str, body: MemberAdd, request: Request, user: CurrentUser, db: SessionDep) -> MemberPublic:
    access.room_for(db, user, room_id, "owner")
    other = db.scalar(select(User).where(User.name == body.user))
    if other is None:
        raise APIError(404, f"No user '{body.user}'.", param="user", code="not_found")
    if access.role_in(db, other, room_id) is not None:
        raise APIError(409, f"'{body.user}' is already a member of this room.", param="user",
                       code="already_member")
    db.add(RoomMember(room_id=room_id, user_id=other.id, role=body.role))
    db.commit()
    publish(request, room_id, {"type": "member", "action": "added", "user": other.name, "role": body.role})
    return MemberPublic(user=other.name, role=body.role)


@router.patch("/{room_id}/members/{name}", response_model=MemberPublic, responses=responses(404, 409))
def change_member(room_id: str, name: str, body: MemberUpdate, request: Request, user: CurrentUser,
                  db: SessionDep) -> MemberPublic:
    access.room_for(db, user, room_id, "owner")
    target, other = member(db, room_id, name)
    if body.role != "owner":
        keep_an_owner(db, target)
    target.role = body.role
    db.commit()
    publish(request, room_id, {"type": "member", "action": "changed", "user": other.name, "role": body.role})
    return MemberPublic(user=other.name, role=body.role)


@router.delete("/{room_id}/members/{name}", status_code=204, response_class=Response,
                responses=responses(404, 409))
def remove_member(room_id: str, name: str, request: Request, user: CurrentUser, db: SessionDep) -> Response:
    """An owner removes a member; any member may remove themself (leave)."""
    _, role = access.room_for(db, user, room_id)
    if name != user.name and not access.allows(role, "owner"):
        raise APIError(403, f"You are a {role} in this room; removing someone else needs owner.", code="forbidden")
    target, other = member(db, room_id, name)
    keep_an_owner(db, target)
    db.delete(target)
    db.commit()
    publish(request, room_id, {"type": "member", "action": "removed", "user": other.name})
    return Response(status_code=204)


def membership(db: Session, user: User, room_id: str) -> str:
    """The caller's role, after which the database connection goes back to the pool: a stream lasts."""
    _, role = access.room_for(db, user, room_id)
    db.close()
    return role


@router.get("/{room_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}, **responses(404)})
async def room_events(room_id: str, request: Request, user: CurrentUser, db: SessionDep) -> StreamingResponse:
    """Server-sent events: `hello` with the caller's role, then `member`, `room` (renamed), `turn` (a
    session in the room moved on) and `deleted`. The stream ends when the room is deleted, the
    caller is removed from it, or the caller's key is revoked or sign-in ends."""
    role = await run_in_threadpool(membership, db, user, room_id)
    name = user.name

    def last(event: dict) -> bool:
        return event.get("type") == "deleted" or (
            event.get("type") == "member" and event.get("action") == "removed" and event.get("user") == name)

    slot = request.app.state.streams.open(user.id)
    sub = request.app.state.events.subscribe(f"room:{room_id}")
    may_see = still_allowed(request, lambda db, user: access.room_for(db, user, room_id))
    return events.event_stream(request, sub, first=[{"type": "hello", "room": room_id, "role": role}], last=last,
                               slot=slot, allowed=may_see)
