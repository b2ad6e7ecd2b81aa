"""Who may see and change what. Something a user may not see is 404, exactly as if it did not
exist; something they may see but not change is 403."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from pixelchat.server.errors import APIError
from pixelchat.server.models import ROLES, ImageRow, Room, RoomMember, SessionRow, User


def role_in(db: Session, user: User, room_id: str | None) -> str | None:
    if room_id is None:
        return None
    return db.scalar(select(RoomMember.role).where(RoomMember.room_id == room_id, RoomMember.user_id == user.id))


def allows(role: str | None, need: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(need)


def room_for(db: Session, user: User, room_id: str, need: str = "viewer") -> tuple[Room, str]:
    """The room and the user's role in it, if they are a member with at least ``need``."""
    role = role_in(db, user, room_id)
    room = db.get(Room, room_id) if role else None
    if room is None:
        raise APIError(404, f"No room '{room_id}'.", param="room_id", code="not_found")
    if not allows(role, need):
        raise APIError(403, f"You are a {role} in this room; this needs {need}.", code="forbidden")
    return room, role


def session_for(db: Session, user: User, session_id: str, need: str = "viewer") -> SessionRow:
    """A session the user owns (outside rooms only the owner may use it) or one in a room where they
    have at least ``need``."""
    row = db.get(SessionRow, session_id)
    if row is not None and row.room_id is None:
        if row.user_id == user.id:
            return row
    elif row is not None:
        role = role_in(db, user, row.room_id)
        if role is not None:
            if not allows(role, need):
                raise APIError(403, f"You are a {role} in this room; this needs {need}.", code="forbidden")
            return row
    raise APIError(404, f"No session '{session_id}'.", param="session_id", code="not_found")


def image_for(db: Session, user: User, image_id: str, need: str = "viewer") -> ImageRow:
    """A picture the user made, or one from a session in a room where they have at least ``need``
    (deleting someone else's picture needs ``owner``)."""
    row = db.get(ImageRow, image_id)
    if row is not None:
        if row.user_id == user.id:
            return row
        session = db.get(SessionRow, row.session_id) if row.session_id else None
        role = role_in(db, user, session.room_id) if session is not None else None
        if role is not None:
            if not allows(role, need):
                raise APIError(403, f"You are a {role} in this room; this needs {need}.", code="forbidden")
            return row
    raise APIError(404, f"No image '{image_id}'.", param="image_id", code="not_found")
