"""`pixelchat.Session`: a conversation that refines a picture turn by turn.

Each turn is a node of a history tree: the message, what it was taken for, the revised prompt
and attributes (the text path), and the resulting picture with its record (the image path).
`undo` and `goto` move the current node; the next change branches from wherever it is.
Sessions serialise to JSON, pictures included (PNG, base64), so a file or a database row can
hold one.
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from pixelchat.text.instructions import InstructionError, looks_like_instruction, read_attributes

FORMAT = "pixelchat-session"
FORMAT_VERSION = 1
NEW_PICTURE = re.compile(r"^(?:please )?(?:draw|create|generate|paint|new picture|start over|show me|give me|"
                         r"i want a picture|a new)\b[:,]?\s*(?:(?:me|a picture of|an image of|a new picture of|"
                         r"a new one of|a new one)\s+)?")
UNDO = re.compile(r"^(?:/undo|undo|go back|back|revert|undo that)[.! ]*$")
VARY = re.compile(r"^(?:another one|another variation|new variation|a variation|vary it|variations?|"
                  r"try again|something similar|one more)[.! ]*$")
CHECK_STRENGTHS = (0.35, 0.6, 0.85)  # how far each self-check attempt may move from the picture
QUESTION = re.compile(r"\?\s*$|^(?:what|which|is there|are there|does it|do you see|describe|how many|tell me)\b")


@dataclass
class Node:
    id: int
    parent: int | None
    message: str
    kind: str  # generate | edit | vary
    prompt: str
    attributes: dict[str, str]
    reply: str
    record: dict = field(default_factory=dict)
    image_png: str = ""  # base64 PNG
    created: str = ""

    @property
    def image(self) -> Image.Image | None:
        if not self.image_png:
            return None
        image = Image.open(io.BytesIO(base64.b64decode(self.image_png)))
        image.load()
        image.info["pixelchat"] = self.record
        return image


@dataclass
class Turn:
    kind: str  # generate | edit | vary | describe | undo | ask
    reply: str
    node: Node | None = None  # the current node after the turn
    images: list[Image.Image] = field(default_factory=list)

    @property
    def prompt(self) -> str:
        return self.node.prompt if self.node else ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "reply": self.reply, "prompt": self.prompt,
                "node": self.node.id if self.node else None,
                "attributes": self.node.attributes if self.node else {}}


def _png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Session:
    """A conversation about one picture at a time, with a history tree.

    >>> s = Session(model="runs/mine/model.safetensors")      # doctest: +SKIP
    >>> s.turn("a lake at sunset").reply                      # doctest: +SKIP
    >>> s.turn("add a boat and make the clouds pink").prompt  # doctest: +SKIP
    """

    def __init__(self, *, model: str | Path | None = None, seed: int | None = None, checks: int = 3):
        if not 0 <= checks <= len(CHECK_STRENGTHS):
            raise ValueError(f"checks must be between 0 and {len(CHECK_STRENGTHS)}, got {checks}")
        self.model = str(model) if model else None
        self.seed = seed  # seed lock: None draws a new seed per new picture
        # Self-check: edits whose asked-for change the describer does not see are tried again, up to
        # this many attempts in all, each allowed to move further; the best attempt is kept (0: off).
        self.checks = checks
        self.nodes: dict[int, Node] = {}
        self.current: int | None = None
        self.created = _now()

    # --- the history tree --------------------------------------------------------------------

    @property
    def node(self) -> Node | None:
        return self.nodes.get(self.current) if self.current is not None else None

    def path(self, node_id: int | None = None) -> list[Node]:
        """The nodes from the root to ``node_id`` (default: the current one)."""
        out = []
        nid = self.current if node_id is None else node_id
        while nid is not None:
            out.append(self.nodes[nid])
            nid = self.nodes[nid].parent
        return out[::-1]

    def children(self, node_id: int) -> list[Node]:
        return [n for n in self.nodes.values() if n.parent == node_id]

    def undo(self) -> Turn:
        node = self.node
        if node is None:
            return Turn("undo", "there is nothing to undo yet")
        self.current = node.parent
        if self.current is None:
            return Turn("undo", "back to the start: there is no picture now")
        return Turn("undo", f"back to turn {self.current}: {self.node.prompt}", self.node)

    def goto(self, node_id: int) -> Turn:
        if node_id not in self.nodes:
            raise ValueError(f"there is no turn {node_id}; turns are {', '.join(map(str, sorted(self.nodes))) or 'none yet'}")
        self.current = node_id
        return Turn("goto", f"at turn {node_id}: {self.node.prompt}; the next change branches from here", self.node)

    def _add(self, message: str, kind: str, prompt: str, attributes: dict, reply: str, result) -> Node:
        node = Node(id=max(self.nodes, default=0) + 1, parent=self.current, message=message, kind=kind,
                    prompt=prompt, attributes=dict(attributes), reply=reply, record=result.record,
                    image_png=_png(result.image), created=_now())
        self.nodes[node.id] = node
        self.current = node.id
        return node

    # --- turns -------------------------------------------------------------------------------

    def turn(self, message: str) -> Turn:
        """Take one user message: a new picture, a change to the current one, a question about it,
        undo, or a variation. Returns what happened, with a short reply."""
        text = " ".join(message.split())
        if not text:
            return Turn("ask", "say what to draw, or what to change")
        low = text.lower()
        if UNDO.match(low):
            return self.undo()
        if self.node is None or NEW_PICTURE.match(low):
            prompt = NEW_PICTURE.sub("", low, count=1).strip() if NEW_PICTURE.match(low) else text
            return self._generate(text, prompt or text)
        if QUESTION.search(low) and not looks_like_instruction(low):
            return self._describe()
        if VARY.match(low):
            return self._vary(text)
        return self._edit(text)

    def _generate(self, message: str, prompt: str) -> Turn:
        from pixelchat.generate import generate_records

        result = generate_records(prompt, 1, self.seed, model=self.model)[0]
        named = read_attributes(prompt)
        reply = "here it is" + (f" ({', '.join(f'{k} {v}' for k, v in named.items())})" if named else "")
        node = self._add(message, "generate", prompt, named, reply, result)
        return Turn("generate", reply, node, [result.image])

    def _describe(self) -> Turn:
        from pixelchat.describe import describe

        d = describe(self.node.image, model=self.model)
        return Turn("describe", f"I see {d.caption}", self.node)

    def _vary(self, message: str) -> Turn:
        from pixelchat.edit import vary

        result = vary(self.node.image, n=1, model=self.model)[0]
        node = self._add(message, "vary", self.node.prompt, self.node.attributes, "a variation of it", result)
        return Turn("vary", node.reply, node, [result.image])

    def _edit(self, message: str) -> Turn:
        from pixelchat.edit import edit

        best, best_missing = None, None
        for attempt, strength in enumerate(CHECK_STRENGTHS[:max(1, self.checks)]):
            seed = None if self.seed is None else self.seed + attempt
            try:
                result = edit(self.node.image, message, model=self.model, seed=seed, strength=strength)
            except InstructionError as e:
                return Turn("ask", str(e), self.node)
            wanted = {k: after for k, (_, after) in result.revision.changes.items()}
            missing = self._self_check(result.images[0].image, wanted) if self.checks else []
            if best is None or len(missing) < len(best_missing):
                best, best_missing = result, missing
            if not missing:
                break
        result = best
        changes = result.revision.changes
        said = ", ".join(f"{k.replace('_', ' ')} {before or '?'} → {after}" for k, (before, after) in changes.items())
        parts = [said or "nothing in the picture's attributes changed", *result.revision.notes]
        if best_missing:
            parts.append(f"not matched yet: {', '.join(best_missing)}")
        reply = "; ".join(parts)
        node = self._add(message, "edit", result.revised_prompt, result.revision.attributes, reply, result.images[0])
        return Turn("edit", reply, node, [result.images[0].image])

    def _self_check(self, image: Image.Image, wanted: dict[str, str]) -> list[str]:
        """The asked-for changes the describer does not see in ``image``."""
        if not wanted:
            return []
        from pixelchat.describe import describe

        seen = describe(image, model=self.model).attributes
        return [f"{k.replace('_', ' ')} {v} (I see {seen.get(k, 'none')})" for k, v in wanted.items()
                if seen.get(k) != v and not (k == "cloud_color" and seen.get("clouds") == "none")]

    # --- files -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "model": self.model, "seed": self.seed,
                "checks": self.checks,
                "created": self.created, "current": self.current, "nodes": [asdict(n) for n in self.nodes.values()]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "Session":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError("not a pixelchat session")
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"session format version {d.get('format_version')} is not supported")
        s = cls(model=d.get("model"), seed=d.get("seed"), checks=int(d.get("checks", 3)))
        s.created = d.get("created", s.created)
        try:
            for raw in d["nodes"]:
                node = Node(**raw)
                s.nodes[node.id] = node
        except (KeyError, TypeError) as e:
            raise ValueError(f"a session node is malformed: {e}") from None
        ids = set(s.nodes)
        if any(n.parent is not None and n.parent not in ids for n in s.nodes.values()):
            raise ValueError("a session node points to a parent that does not exist")
        if d.get("current") is not None and d["current"] not in ids:
            raise ValueError("the session's current turn does not exist")
        s.current = d.get("current")
        return s

    @classmethod
    def from_json(cls, text: str) -> "Session":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"not a pixelchat session: {e}") from None

    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary name, then rename)."""
        import os

        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Session":
        return cls.from_json(Path(path).read_text())
