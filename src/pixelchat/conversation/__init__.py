"""Conversations that refine a picture: sessions with a history tree."""

from pixelchat.conversation.session import Node, Session, Turn

__all__ = ["Node", "Session", "Turn"]
