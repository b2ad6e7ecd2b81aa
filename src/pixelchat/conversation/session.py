"""`pixelchat.Session`: a conversation that refines a picture turn by turn.

Each turn is a node of a history tree: the message, what it was taken for, the revised prompt
and attributes (the text path), and the resulting picture with its record (the image path).
`undo` and `goto` move the current node; the next change branches from wherever it is.

A change is read into a revised prompt first: by a language model when one is configured
(`LLMRewriter`), else, or when it fails, by the built-in reader, which maps unknown words to
their nearest known value (`NearestValue`) and asks back when unsure, and which takes "bring back
the boat" from the history. The change is then made as an edit of the current picture from its
latent, and checked: the describer reads the result, and where the change does not show, the
edit is tried again further from the picture; the best attempt is kept and what still does not
match is said. Styles and palettes are applied to the picture the model drew, so the model
always works on its own picture and the user sees the styled one.

A model that draws anything (a diffusion pipeline: ``open_vocabulary``) is talked to in free
words instead: the message and the current prompt become a revised prompt and negative prompt (the
language model's, else the built-in rewriter's, which says when it does not understand), and the
picture is edited by the best the loaded pipelines offer: an instruction-edit pipeline (``editor``,
or the model itself), inpainting where a mask is given, else image-to-image from the picture's seed.
The self-check there is an image-text similarity model (``similarity``: CLIP, SigLIP) scoring the
picture against the revised prompt; a low score draws again with a new seed, and what did not take
is said.

Sessions serialise to JSON, pictures included (PNG, base64), so a file or a database row can
hold one.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from pixelchat.conversation.rewriter import Rewrite, core, find, rewrite, split_list
from pixelchat.text.instructions import (
    ABSENT, INTERJECTION, InstructionError, Revision, apply_values, looks_like_instruction, nouns_in, read_attributes,
    strip_lead,
)

FORMAT = "pixelchat-session"
FORMAT_VERSION = 1
NEW_PICTURE = re.compile(r"^(?:please )?(?:draw|create|generate|paint|new picture|start over|show me|give me|"
                         r"i want a picture|a new)\b[:,]?\s*(?:(?:me|a picture of|an image of|a new picture of|"
                         r"a new one of|a new one)\s+)?")
UNDO = re.compile(r"^(?:/undo|undo|go back|back|revert|undo that)[.! ]*$")
VARY = re.compile(r"^(?:(?:show me|give me|draw|make|can i (?:have|see)|let me see|i'd like|i want)\s+)?"
                  r"(?:another one|another(?: version| picture| take)?|another variation|new variation|a variation|"
                  r"vary it|variations?|a different one|try again|something similar|one more)[.! ]*$")
GOTO = re.compile(r"^(?:go|jump|return|get|take me)(?: back)? to (?:the )?(?:(?P<first>(?:very )?first|original|start|"
                  r"beginning)(?: one| picture| image| turn)?|(?:turn|picture|step|image) (?P<n>\d+))[.! ]*$")
START_OVER = re.compile(r"^(?:start over|start again|start afresh|begin again|from scratch|new conversation|reset)[.! ]*$")
PRAISE = (rf"(?:{INTERJECTION}|you|very much|so much|(?:it |that )?looks? (?:great|good|nice|lovely|perfect)|"
          r"(?:i )?love it|that'?s (?:great|nice|perfect|lovely|good|it))")
THANKS = re.compile(rf"^{PRAISE}(?:[,!. ]+{PRAISE})*[.! ]*$")  # "thanks, looks great!": nothing to do
YES = re.compile(r"^(?:yes|yeah|yep|sure|ok(?:ay)?|go ahead|do it|please do|please)[.! ]*$")
NO = re.compile(r"^(?:no|nope|no thanks|no thank you|never mind|nevermind|cancel|forget it|don't)[.! ]*$")
# Things a scene holds one of at most, asked for in numbers ("three houses", "2 boats").
ONE_OF = {"house": "house", "cottage": "house", "cabin": "house", "hut": "house", "home": "house",
          "boat": "boat", "sailboat": "boat", "ship": "boat", "sun": "sun", "moon": "moon", "lake": "lake"}
SEVERAL = re.compile(r"\b(?:two|three|four|five|six|seven|eight|nine|ten|several|many|multiple|[2-9]|\d\d+) "
                     r"(?:\w+ )?(?P<thing>houses|cottages|cabins|huts|homes|boats|sailboats|ships|suns|moons|lakes)\b")
CHECK_STRENGTHS = (0.35, 0.6, 0.85)  # how far a self-check attempt may move from the picture, step by step
# A spec-conditioned model's first attempt keeps the picture's latent (the spec alone changes).
SPEC_CHECK_STRENGTHS = (0.0, 0.35, 0.6)
MAX_CHECKS = 8
STYLE = re.compile(r"^(?:/style\s+|(?:use|apply|switch to|try|give it)(?: the| a)? style\s+|style[: ]\s*|"
                   r"in (?:the |a )?style(?: of)?\s+|(?:make it|in|as) (?:an? )?)(?P<name>[a-z0-9_-]+)"
                   r"(?: style| look| filter)?[.! ]*$")
NO_STYLE = re.compile(r"^(?:no style|remove the style|drop the style|without (?:a |the )?style|/style none|"
                      r"style[: ]\s*none)[.! ]*$")
PALETTE = re.compile(r"^(?:/palette|(?:use|apply)(?: the| a| this)? palette|palette)\b[: ]*(?P<colours>.*)$")
NO_PALETTE = re.compile(r"^(?:no palette|remove the palette|drop the palette|without (?:a |the )?palette|/palette none|"
                        r"palette[: ]\s*none)[.! ]*$")
RESTORE = re.compile(r"^(?:please )?(?:bring back|put back|restore|give me back|get back|return)\b|"
                     r"\b(?:back|as (?:it was )?before|like before|as it was)[.! ]*$")
NEGATIVE = re.compile(r"^(?:negative(?: prompt)?|avoid|never (?:add|show|draw)?|keep out|i never want)\b[: ]*(?P<what>.+)$")
ALLOW = re.compile(r"^(?:allow|stop avoiding|you may (?:add|draw|show)|no longer avoid)\b[: ]*(?P<what>.+)$")
# How a new picture's prompt says that a thing in the negative prompt is not there.
WITHOUT = {"celestial": "with no sun or moon", "clouds": "with a clear sky", "snow": "without snow",
           "water": "far from water", "trees": "with no trees", "house": "with no house", "boat": "with no boats"}
RETRY = re.compile(r"^(?:please )?(?:try again|try once more|once more|again|retry)[.! ]*$")
ANYWAY = re.compile(r"^(?:please )?(?:(?:draw|do|make|paint) it anyway|draw anyway|anyway)[.! ]*$")
QUESTION = re.compile(r"\?\s*$|^(?:what|which|is there|are there|does it|do you see|describe|how many|tell me)\b")


@dataclass
class Node:
    id: int
    parent: int | None
    message: str
    kind: str  # generate | edit | vary | open | style | palette | negative
    prompt: str
    attributes: dict[str, str]
    reply: str
    record: dict = field(default_factory=dict)
    image_png: str = ""  # base64 PNG: the picture the model drew
    created: str = ""
    style: str = "none"  # the style preset shown over it
    palette: list[str] = field(default_factory=list)  # hex colours the shown picture keeps to
    palette_strength: float = 1.0
    negative: list[str] = field(default_factory=list)  # attributes kept out of every picture ("avoid boats")
    # What was asked for and the describer does not see in the picture: attribute → [asked, seen];
    # "try again" redraws such a turn (``attempt`` counts the tries, so each draws other candidates).
    unmet: dict[str, list[str]] = field(default_factory=dict)
    attempt: int = 0
    # Open vocabulary: what the picture should not show, what this turn changed in the prompt, and
    # the similarity of the picture to its prompt (None: not checked).
    negative_prompt: str = ""
    changes: list[str] = field(default_factory=list)
    score: float | None = None

    @property
    def image(self) -> Image.Image | None:
        """The picture as the model drew it: what edits, variations and the describer work on."""
        if not self.image_png:
            return None
        image = Image.open(io.BytesIO(base64.b64decode(self.image_png)))
        image.load()
        image.info["pixelchat"] = self.record
        return image

    @property
    def output(self) -> Image.Image | None:
        """The picture as the user sees it: with the style and palette applied, and said in its record."""
        from pixelchat.vision.style import apply_palette, apply_style, get_style

        image = self.image
        if image is None or (self.style == "none" and not self.palette):
            return image
        shown = apply_style(image, get_style(self.style))
        if self.palette:
            shown = apply_palette(shown, self.palette, self.palette_strength)
        shown.info["pixelchat"] = {**self.record, "style": self.style, "palette": self.palette,
                                   "palette_strength": self.palette_strength}
        return shown


@dataclass
class Turn:
    kind: str  # generate | edit | vary | open | style | palette | negative | describe | undo | goto | ask
    reply: str
    node: Node | None = None  # the current node after the turn
    images: list[Image.Image] = field(default_factory=list)

    declined: bool = False  # the prompt named nothing the model draws and nothing was drawn ('draw it anyway' draws it)

    @property
    def prompt(self) -> str:
        return self.node.prompt if self.node else ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "reply": self.reply, "prompt": self.prompt,
                "negative_prompt": self.node.negative_prompt if self.node else "",
                "changes": self.node.changes if self.node and self.kind in ("edit", "generate") else [],
                "score": self.node.score if self.node else None,
                "node": self.node.id if self.node else None,
                "attributes": self.node.attributes if self.node else {},
                "style": self.node.style if self.node else "none", "palette": self.node.palette if self.node else [],
                "declined": self.declined}


def _engine_path(engine) -> str | None:
    """What a session file keeps of a model or editor: its path or id, where a loaded engine was given."""
    return engine if engine is None or isinstance(engine, str) else engine.info.path


def _png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _label(attribute: str) -> str:
    return attribute.replace("_", " ")


def _shows(attribute: str, value: str, seen: dict[str, str]) -> bool:
    """Whether a reading ``seen`` shows ``attribute`` = ``value`` (a cloud colour shows only with clouds)."""
    return seen.get(attribute) == value and not (attribute == "cloud_color" and seen.get("clouds") == "none")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Session:
    """A conversation about one picture at a time, with a history tree.

    >>> s = Session(model="runs/mine/model.safetensors")      # doctest: +SKIP
    >>> s.turn("a lake at sunset").reply                      # doctest: +SKIP
    >>> s.turn("add a boat and make the clouds pink").prompt  # doctest: +SKIP
    """

    def __init__(self, *, model: str | Path | None = None, seed: int | None = None, checks: int = 3,
                 style: str = "none", palette=None, palette_strength: float = 1.0, llm=None,
                 nearest: bool = True, draw_anyway: bool = False, size: int | None = None, editor=None,
                 similarity: str | Path | None = None, min_score: float | None = None):
        from pixelchat.vision.style import get_style, palette_hex

        if not 0 <= checks <= MAX_CHECKS:
            raise ValueError(f"checks must be between 0 and {MAX_CHECKS}, got {checks}")
        if not 0.0 <= palette_strength <= 1.0:
            raise ValueError(f"palette_strength must be between 0 and 1, got {palette_strength}")
        from pixelchat.engines import Engine

        # a checkpoint path, or an engine already loaded (the server's); files keep the engine's path
        self.model = model if isinstance(model, Engine) else (str(model) if model else None)
        self.seed = seed  # seed lock: None draws a new seed per new picture
        # Self-check: edits whose asked-for change the describer does not see are tried again, up to
        # this many attempts in all, each allowed to move further; the best attempt is kept (0: off).
        self.checks = checks
        self.style = get_style(style).name  # for the first picture; later ones keep the current node's
        self.palette = palette_hex(palette) if palette else []
        self.palette_strength = palette_strength
        self.negative: list[str] = []  # before the first picture; afterwards each node carries its own
        self.llm = llm  # an LLMRewriter, or None for the built-in reader alone
        self.nearest = nearest  # map unknown words to the nearest known value (else: free text)
        # A prompt with nothing the model draws ("a cat on a sofa" to the landscape model) is answered with
        # what it draws, and nothing is drawn, unless this is set or the next turn says "draw it anyway".
        self.draw_anyway = draw_anyway
        # The side of new pictures (None: the model's default); edits and variations keep their picture's.
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be a positive whole number of pixels, got {size!r}")
        self.size = size
        # Open vocabulary (a model that draws anything): an instruction-edit pipeline that edits the
        # pictures the model draws (a folder, hub id or loaded engine; None: the model edits), and the
        # image-text model that checks each picture against its prompt (None: PIXELCHAT_SIMILARITY;
        # neither: no check), with the score below which a picture does not show a text.
        self.editor = editor if isinstance(editor, Engine) else (str(editor) if editor else None)
        self.similarity = str(similarity) if similarity else None
        if min_score is not None:
            from pixelchat.vision.similarity import check_min_score

            check_min_score(min_score)
        self.min_score = min_score
        self.negative_prompt = ""  # open vocabulary, before the first picture
        self._scorer = None
        self._refused: tuple[str, str] | None = None  # (message, prompt) of the last prompt declined so
        self._resolve = None
        self._reader = None  # the prompt reader, for a text GAN's prompts (see `_nothing_to_draw`)
        self._seen: dict[int, dict[str, str]] = {}  # node id → what the describer reads in its picture
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

    def _add(self, message: str, kind: str, prompt: str, attributes: dict, reply: str, result=None,
             **look) -> Node:
        """A new node under the current one; ``result`` None keeps the current picture (a new look)."""
        here = self.node
        look = {"style": here.style if here else self.style, "palette": here.palette if here else self.palette,
                "palette_strength": here.palette_strength if here else self.palette_strength,
                "negative": list(here.negative) if here else list(self.negative),
                "negative_prompt": here.negative_prompt if here else self.negative_prompt, **look}
        node = Node(id=max(self.nodes, default=0) + 1, parent=self.current, message=message, kind=kind,
                    prompt=prompt, attributes=dict(attributes), reply=reply,
                    record=result.record if result else here.record,
                    image_png=_png(result.image) if result else here.image_png, created=_now(), **look)
        self.nodes[node.id] = node
        self.current = node.id
        return node

    # --- turns -------------------------------------------------------------------------------

    def turn(self, message: str, *, mask=None) -> Turn:
        """Take one user message: a new picture, a change to the current one, a question about it,
        undo, or a variation. Returns what happened, with a short reply. mask: a path or picture the
        size of the current one, white (or transparent) where a change may draw."""
        if mask is not None and self.node is None:
            raise ValueError("a mask marks where to change the current picture, and there is none yet: draw or "
                             "open one first")
        text = " ".join(message.split())
        if not text:
            return Turn("ask", "say what to draw, or what to change")
        refused, self._refused = self._refused, None
        if refused is not None and YES.match(text.lower()):  # "yes" to "say 'draw it anyway'"
            return self._generate(*refused, anyway=True)
        if refused is not None and NO.match(text.lower()):
            return Turn("ask", "nothing drawn; say what to draw", self.node)
        if THANKS.match(text.lower()):
            return Turn("ask", "glad you like it: say what to change next, or describe a new picture", self.node)
        low = strip_lead(text.lower()) or text.lower()  # "ok, now add a boat": the request is "now add a boat"
        if UNDO.match(low):
            return self.undo()
        if ANYWAY.match(low):
            if refused is None:
                return Turn("ask", "there is nothing waiting to be drawn anyway; say what to draw", self.node)
            return self._generate(*refused, anyway=True)
        if START_OVER.match(low):
            self.current = None
            return Turn("ask", "starting over: say what to draw (the earlier turns stay in the history)")
        if (m := GOTO.match(low)) and self.nodes:
            target = int(m.group("n")) if m.group("n") else self._first()
            if target not in self.nodes:
                return Turn("ask", f"there is no turn {target}; turns are {', '.join(map(str, sorted(self.nodes)))}",
                            self.node)
            return self.goto(target)
        if RETRY.match(low) and self.node is not None and self.node.unmet:
            return self._retry()
        look = self._look(low)
        if look is not None:
            return look
        if NEGATIVE.match(low) or ALLOW.match(low):
            return self._negative(low)
        if self.node is not None and VARY.match(low):
            return self._vary(text)
        if self.node is None and QUESTION.search(low) and not NEW_PICTURE.match(low):
            return Turn("ask", "there is no picture yet: say what to draw")
        if self.node is None or NEW_PICTURE.match(low):
            prompt = NEW_PICTURE.sub("", low, count=1).strip() if NEW_PICTURE.match(low) else text
            return self._generate(text, prompt or text)
        if QUESTION.search(low) and not looks_like_instruction(low):
            return self._describe()
        return self._edit(text, mask=mask)

    def _first(self) -> int:
        """The first turn of the current picture's line of turns (with no current picture: the first turn)."""
        node = self.node
        if node is None:
            return min(self.nodes)
        while node.parent is not None:
            node = self.nodes[node.parent]
        return node.id

    def _look(self, low: str) -> Turn | None:
        """A style or palette change, or None when the message is not one."""
        from pixelchat.vision.style import get_style, load_styles, palette_hex, palette_report

        name = None
        if NO_STYLE.match(low):
            name = "none"
        elif (m := STYLE.match(low)) and m.group("name") in {*load_styles(), "none"}:
            name = m.group("name")
        if name is not None:
            style = get_style(name)
            if self.node is None:
                self.style = style.name
                return Turn("style", f"style {style.name} for the pictures to come: {style.description}")
            node = self._add(low, "style", self.node.prompt, self.node.attributes,
                             f"style {style.name}: {style.description}", style=style.name)
            return Turn("style", node.reply, node, [node.output])
        colours = None
        if NO_PALETTE.match(low):
            colours = []
        elif m := PALETTE.match(low):
            try:
                colours = palette_hex(m.group("colours"))
            except ValueError as e:
                return Turn("ask", f"{e}; give a palette as hex colours, e.g. 'palette #1d3557 #e63946 #f1faee'", self.node)
        if colours is None:
            return None
        if self.node is None:
            self.palette = colours
            return Turn("palette", f"palette {' '.join(colours) or 'off'} for the pictures to come")
        node = self._add(low, "palette", self.node.prompt, self.node.attributes, "", palette=colours)
        if colours:
            before = palette_report(self.nodes[node.parent].output, colours)
            after = palette_report(node.output, colours)
            node.reply = (f"palette {' '.join(colours)}: {before['coverage']:.0%} of the picture was within reach of "
                          f"it, now {after['coverage']:.0%}")
        else:
            node.reply = "palette off"
        return Turn("palette", node.reply, node, [node.output])

    def _generate(self, message: str, prompt: str, *, anyway: bool = False, attempt: int = 0) -> Turn:
        from pixelchat.generate import generate_records

        if self.open_vocabulary:
            return self._generate_open(message, prompt, attempt)

        negative = self.node.negative if self.node else self.negative
        named = read_attributes(prompt)
        clash = [a for a in negative if a in named and named[a] != ABSENT[a]]
        if clash:
            return Turn("ask", self._clash(clash), self.node)
        if not (anyway or self.draw_anyway):
            declined = self._nothing_to_draw(prompt)
            if declined is not None:
                self._refused = (message, prompt)
                return Turn("ask", declined, self.node, declined=True)
        prompt = ", ".join([prompt, *(WITHOUT[a] for a in negative if a not in named)])
        seed = None if self.seed is None else self.seed + attempt
        try:
            result = generate_records(prompt, 1, seed, model=self.model, size=self.size)[0]
        except ValueError as e:  # "a sunny night": what the prompt asks cannot be drawn together
            return Turn("ask", f"{e}; say it another way", self.node)
        spec = result.record.get("spec")  # a spec model says what it read; otherwise the pattern reader
        named = ({k: v for k, v in spec["values"].items() if spec["source"].get(k) == "said"} if spec
                 else read_attributes(prompt))
        # The self-check: only what the describer sees in the picture is said to be there.
        seen = self._read_picture(result.image) if self.checks else None
        unmet = {} if seen is None else {k: [v, seen.get(k, "none")] for k, v in named.items() if not _shows(k, v, seen)}
        shown = ", ".join(f"{_label(k)} {v}" for k, v in named.items() if k not in unmet)
        if seen is None and named:
            reply = f"here it is, not checked (the self-check is off): {shown}"
        else:
            reply = "here it is" + (f" ({shown})" if shown else "")
        if unmet:
            reply += "; " + self._unmet_reply(unmet)
        if (counted := SEVERAL.search(prompt.lower())) and spec:  # "three houses": the scenes hold one at most
            reply += f"; these pictures have at most one {ONE_OF[counted.group('thing').rstrip('s')]}"
        node = self._add(message, "generate", prompt, named, reply, result, unmet=unmet, attempt=attempt)
        if seen is not None:
            self._seen[node.id] = seen
        return Turn("generate", reply, node, [node.output])

    def _nothing_to_draw(self, prompt: str) -> str | None:
        """The reply to a prompt that names nothing this model draws, or None when it names something
        (or the model draws anything, as a diffusion pipeline does). See `pixelchat.text.vocabulary`."""
        from pixelchat.data.spec import is_scenes
        from pixelchat.engines import load_engine
        from pixelchat.text.vocabulary import DRAWS, SUBJECT, nothing_to_draw

        engine = load_engine(self.model)
        if engine.info.engine != "gan":
            return None
        schema = getattr(engine, "schema", None)
        if schema is not None and not is_scenes(schema):  # a class model: a class must be named
            if engine.read([prompt])[0][0]:
                return None
            names = ", ".join(v for values in schema.values() for v in values)
            return (f"this model draws {names}; '{prompt}' names none of them, so nothing was drawn; "
                    "say 'draw it anyway' for one of them all the same")
        if schema is not None:  # the spec model's own reading, as the picture would be drawn from it
            confidence = engine.read([prompt])[0][1]
        else:  # the text GAN learned the scenes captions: the shipped prompt reader reads them
            from pixelchat.text.reader import read_prompt

            if self._reader is None:
                from pixelchat.text.reader import load_reader

                self._reader = load_reader()
            confidence = read_prompt(self._reader, engine.encoder, prompt, patterns=False).confidence
        unknown = nothing_to_draw(prompt, confidence, engine.encoder)
        if unknown is None:
            return None
        return (f"this model draws {SUBJECT}: {DRAWS}. Nothing in '{prompt}' ({unknown}) is one of these, so "
                f"nothing was drawn; say 'draw it anyway' for one of its {SUBJECT} all the same")

    @staticmethod
    def _unmet_reply(unmet: dict[str, list[str]]) -> str:
        asked = ", ".join(f"{_label(k)} {asked}" for k, (asked, _) in unmet.items())
        seen = ", ".join(f"{_label(k)} {seen}" for k, (_, seen) in unmet.items())
        return f"asked for {asked}, but I see {seen}; say 'try again' to draw it once more"

    def _read_picture(self, image: Image.Image) -> dict[str, str]:
        from pixelchat.describe import describe

        return describe(image, model=self.model).attributes

    def _retry(self) -> Turn:
        """"try again" after a turn whose picture misses what was asked: the same request drawn again from
        the same starting point (other candidates, and for an edit further from the picture)."""
        node = self.node
        self.current = node.parent
        if node.kind == "generate":
            turn = self._generate(node.message, node.prompt, anyway=True, attempt=node.attempt + 1)
        elif NEGATIVE.match(node.message) and self.open_vocabulary:  # "avoid the couch" took it out
            turn = self._negative_open(node.message, attempt=node.attempt + 1)
        else:
            turn = self._edit(node.message, attempt=node.attempt + 1)
        if turn.node is None or turn.node.parent != node.parent or turn.node.id == node.parent:
            self.current = node.id  # nothing new was drawn: stay where the user was
            turn.node = self.node
        return turn

    @staticmethod
    def _clash(attributes: list[str]) -> str:
        names = ", ".join(a.replace("_", " ") for a in attributes)
        return f"{names} {'is' if len(attributes) == 1 else 'are'} in the negative prompt; say 'allow {names}' first"

    def _negative(self, low: str) -> Turn:
        """"avoid boats": keep a thing out of this picture and every later one; "allow boats" undoes it."""
        if self.open_vocabulary:
            return self._negative_open(low)
        allow = ALLOW.match(low)
        what = (allow or NEGATIVE.match(low)).group("what")
        named = [a for a in nouns_in(what) if a in ABSENT]
        if not named:
            return Turn("ask", f"I can keep these out of a picture: {', '.join(WITHOUT)}; not '{what}'", self.node)
        current = self.node.negative if self.node else self.negative
        negative = [a for a in current if a not in named] if allow else sorted({*current, *named})
        said = ", ".join(a.replace("_", " ") for a in named)
        if self.node is None:
            self.negative = negative
            return Turn("negative", f"{'allowed' if allow else 'kept out of the pictures to come'}: {said}")
        current = self.current_attributes()
        present = [a for a in named if not allow and current.get(a, ABSENT[a]) != ABSENT[a]]
        if present:  # it is in the picture now: take it out, as an edit
            turn = self._edit(low, apply_values(current, {a: ABSENT[a] for a in present}))
            if turn.kind == "edit":
                turn.node.negative = negative
                turn.reply = f"kept out from now on: {said}; {turn.reply}"
            return turn
        node = self._add(low, "negative", self.node.prompt, self.node.attributes,
                         f"{'allowed again' if allow else 'kept out from now on'}: {said}", negative=negative)
        return Turn("negative", node.reply, node, [node.output])

    def open(self, image, message: str = "") -> Turn:
        """Start from a picture of the user's (a path or an image): it becomes a new turn, described,
        and later changes edit it (after finding its latent by inversion)."""
        from types import SimpleNamespace

        from pixelchat.describe import as_image, describe

        picture = as_image(image)
        d = describe(picture, model=self.model)
        name = message or (f"open {Path(image).name}" if isinstance(image, (str, Path)) else "open a picture")
        picture.info.pop("pixelchat", None)
        # Nothing is asked for yet: what the picture shows is the describer's to say (see `seen`).
        node = self._add(name, "open", d.prompt, {}, _seen_reply(d),
                         SimpleNamespace(image=picture, record={}))
        return Turn("open", node.reply, node, [node.output])

    def _describe(self) -> Turn:
        from pixelchat.describe import describe

        d = describe(self.node.image, model=self.model)
        return Turn("describe", _seen_reply(d), self.node)

    def _vary(self, message: str) -> Turn:
        from pixelchat.edit import vary

        result = vary(self.node.image, n=1, model=self.model)[0]
        node = self._add(message, "vary", self.node.prompt, self.node.attributes, "a variation of it", result)
        return Turn("vary", node.reply, node, [node.output])

    def _edit(self, message: str, revision: Revision | None = None, attempt: int = 0, mask=None) -> Turn:
        from pixelchat.edit import edit

        if self.open_vocabulary:
            return self._edit_open(message, attempt=attempt, mask=mask)

        # 1. The text path: the revised prompt (unless the caller has it).
        try:
            revision = revision or self.revise(message)
        except InstructionError as e:
            return Turn("ask", str(e), self.node)
        if not revision.changes and not revision.free_text:
            return Turn("ask", "; ".join(revision.notes) or "that is how the picture is already", self.node)
        # 2. The image path: edit the picture from its latent; 3. the self-check: the describer reads
        # the result against the revised prompt. An asked-for change it does not see is tried again
        # further from the picture; something else that drifted away from the prompt is tried again
        # as far out, with other candidates. The attempt that misses least is kept.
        wanted = {k: after for k, (_, after) in revision.changes.items()}
        before = self.seen()
        from pixelchat.engines import load_engine

        strengths = SPEC_CHECK_STRENGTHS if getattr(load_engine(self.model), "spec_edits", False) else CHECK_STRENGTHS
        level, best, best_score = min(attempt, len(strengths) - 1), None, None
        for i in range(max(1, self.checks)):
            seed = None if self.seed is None else self.seed + attempt * MAX_CHECKS + i
            result = edit(self.node.image, message, model=self.model, seed=seed, strength=strengths[level],
                          revision=revision, mask=mask)
            if not self.checks:
                best, best_check = result, ({}, {}, None)
                break
            check = self._self_check(result.images[0].image, wanted, revision.attributes, before)
            missing, drifted, _ = check
            score = (len(missing), len(drifted))
            if best is None or score < best_score:
                best, best_score, best_check = result, score, check
            if not missing and not drifted:
                break
            if missing:
                level = min(level + 1, len(strengths) - 1)
        missing, drifted, best_seen = best_check
        result = best
        changes = revision.changes
        # Only a change the describer sees is said to be done; the rest is said as asked and seen.
        done = ", ".join(f"{_label(k)}{f' {before}' if before else ''} → {after}"
                         for k, (before, after) in changes.items() if k not in missing)
        if best_seen is None:
            parts = [f"changed as asked, not checked (the self-check is off): {done}" if done
                     else "nothing in the picture's attributes changed"]
        else:
            parts = [done] if done else [] if missing else ["nothing in the picture's attributes changed"]
        parts += revision.notes
        if drifted:  # the prompt (shown with the picture) still asks for these: say so in its terms
            parts.append("no longer as the prompt says: " + ", ".join(f"{_label(k)} {asked} (I see {seen})"
                                                                      for k, (asked, seen) in drifted.items()))
        if missing:
            parts.append(self._unmet_reply(missing))
        reply = "; ".join(parts)
        unmet = {**missing, **drifted}
        # what the revised prompt states and the reply holds the picture to: the conversation's own
        # attributes, the changes, and what the reply says drifted away from the prompt
        stated = {k: v for k, v in revision.attributes.items() if k in self.node.attributes or k in changes or k in unmet}
        node = self._add(message, "edit", result.revised_prompt, stated, reply, result.images[0],
                         unmet={k: list(v) for k, v in unmet.items()}, attempt=attempt)
        if best_seen is not None:
            self._seen[node.id] = best_seen
        return Turn("edit", reply, node, [node.output])

    def seen(self, node: Node | None = None) -> dict[str, str]:
        """What the describer reads in ``node``'s picture (default: the current one), cached."""
        node = node or self.node
        if node.id not in self._seen:
            from pixelchat.describe import describe

            self._seen[node.id] = describe(node.image, model=self.model).attributes
        return self._seen[node.id]

    def current_attributes(self) -> dict[str, str]:
        """The current picture's attributes as the conversation means them: what it has asked for,
        over what the describer reads in the picture."""
        return {**self.seen(), **self.node.attributes}

    def revise(self, message: str) -> Revision:
        """The text path: the current prompt's attributes revised by ``message``. Raises
        InstructionError (AskBack for an unsure guess) when there is nothing to apply."""
        state = self.node.attributes  # what the conversation has asked for so far
        revision = self._read(message, self.current_attributes())
        # Asking for what the prompt already says is a no-op only when the picture shows it too;
        # otherwise the user is asking again for what did not show (or may not see what the
        # describer sees), and it is redrawn.
        clash = [a for a in self.node.negative if revision.attributes.get(a, ABSENT[a]) != ABSENT[a]
                 and a in revision.changes]
        if clash:
            raise InstructionError(self._clash(clash))
        seen = self.seen()
        for attr, value in (revision.asked or read_attributes(message)).items():
            if attr in revision.changes or revision.attributes.get(attr) != value:
                continue
            if attr not in state or seen.get(attr) != value:
                revision.changes[attr] = (seen.get(attr) if seen.get(attr) != value else None, value)
                revision.notes = [n for n in revision.notes if not n.startswith(f"{attr.replace('_', ' ')} was already")]
        return revision

    def _read(self, message: str, current: dict[str, str]) -> Revision:
        restored = self._restore(message, current)
        if restored is not None:
            return restored
        note = None
        if self.llm is not None:
            from pixelchat.conversation.llm import LLMError

            try:
                revision = self.llm.rewrite(current, message)
                if revision.changes:
                    return revision
                note = "the language model changed nothing; I read it myself"
            except LLMError as e:
                note = f"the language model did not help ({e}); I read it myself"
        from pixelchat.edit import revise

        revision = revise(current, message, resolve=self.resolver())
        if note:
            revision.notes.append(note)
        return revision

    def resolver(self):
        if not self.nearest:
            return None
        if self._resolve is None:
            from pixelchat.text.vocabulary import NearestValue

            self._resolve = NearestValue()
        return self._resolve

    def _restore(self, message: str, current: dict[str, str]) -> Revision | None:
        """"bring back the boat", "put the clouds back": the value each named thing last had before
        it changed on the way to this turn; None when the message is not that or history has none."""
        low = " ".join(message.lower().split())
        if not RESTORE.search(low):
            return None
        named = nouns_in(low)
        earlier = self.path()[:-1][::-1]
        asked = {}
        for attr in named:
            value = next((n.attributes[attr] for n in earlier if n.attributes.get(attr) not in (None, current.get(attr))),
                         None)
            if value is not None:
                asked[attr] = value
        if not asked:
            return None
        return apply_values(current, asked, ["as it was earlier in this conversation"])

    def _self_check(self, image: Image.Image, wanted: dict[str, str], target: dict[str, str],
                    before: dict[str, str]) -> tuple[dict, dict, dict[str, str]]:
        """What the describer reads in ``image``: the asked-for changes it does not see and the other
        attributes that matched the prompt before and do not now (each attribute → (asked, seen)), and
        its reading."""
        seen = self._read_picture(image)
        missing = {k: (v, seen.get(k, "none")) for k, v in wanted.items()
                   if not _shows(k, v, seen) and not (k == "cloud_color" and seen.get("clouds") == "none")}
        drifted = {k: (v, seen.get(k, "none")) for k, v in target.items()
                   if k not in wanted and _shows(k, v, before) and not _shows(k, v, seen)}
        return missing, drifted, seen

    # --- open vocabulary: a model that draws anything ----------------------------------------

    @property
    def open_vocabulary(self) -> bool:
        """Whether the model draws from free words (a diffusion pipeline), so that the conversation
        rewrites its prompt rather than reading scene attributes."""
        from pixelchat.engines import load_engine

        return bool(getattr(load_engine(self.model), "open_vocabulary", False))

    def rewrite(self, message: str, prompt: str | None = None, negative_prompt: str | None = None) -> Rewrite:
        """The open-vocabulary text path: ``message`` applied to the current prompt and negative
        prompt (or those given) by the language model when one is configured, else (or when it
        fails or changes nothing) by the built-in rewriter, which says when it does not understand."""
        node = self.node
        prompt = node.prompt if prompt is None else prompt
        negative_prompt = (node.negative_prompt if node else self.negative_prompt) if negative_prompt is None \
            else negative_prompt
        note = None
        if self.llm is not None:
            from pixelchat.conversation.llm import LLMError

            try:
                revised = self.llm.rewrite_prompt(prompt, negative_prompt, message)
                if revised.changes:
                    return revised
                note = "the language model changed nothing; I read it myself"
            except LLMError as e:
                note = f"the language model did not help ({e}); I read it myself"
        revised = rewrite(prompt, message, negative_prompt)
        if note:
            revised.reply = f"{revised.reply} ({note})"
        return revised

    def scorer(self):
        """The image-text similarity model of the self-check (loaded on first use), or None when the
        self-check is off or no model is set (``similarity``, else ``PIXELCHAT_SIMILARITY``)."""
        from pixelchat.vision.similarity import chosen_similarity, load_similarity

        chosen = chosen_similarity(self.similarity)
        if not self.checks or chosen is None:
            return None
        if self._scorer is None:
            self._scorer = load_similarity(chosen, min_score=self.min_score)
        return self._scorer

    def _editor(self):
        """The engine that edits pictures: the instruction-edit pipeline when one is set, else the model."""
        from pixelchat.engines import load_engine

        if self.editor is None:
            return load_engine(self.model)
        editor = load_engine(self.editor, "diffusers")
        if not getattr(editor, "instruction_edits", False):
            raise ValueError(f"the editor {editor.info.id} ({editor.info.arch}) is not an instruction-edit pipeline; "
                             "give one such as InstructPix2Pix, or none to edit with the model itself")
        return editor

    def _checked(self, draw, seeds: list[int], prompt: str, shown: list[str], gone: list[str]):
        """Draw with each seed in turn until the picture passes the self-check (or the seeds run out),
        and keep the best: (result, score, unmet). ``shown``: parts of the prompt the picture should
        show; ``gone``: things it should not. unmet: text → [shown | gone, its score]."""
        scorer = self.scorer()
        best = None
        for seed in seeds if scorer is not None else seeds[:1]:
            result = draw(seed)
            if scorer is None:
                return result, None, {}
            score, unmet = self._similarity_check(scorer, result.image, prompt, shown, gone)
            if best is None or (len(unmet), -score) < (len(best[2]), -best[1]):
                best = (result, score, unmet)
            if not unmet:
                break
        return best

    @staticmethod
    def _similarity_check(scorer, image: Image.Image, prompt: str, shown: list[str],
                          gone: list[str]) -> tuple[float, dict[str, list[str]]]:
        """The picture's score against ``prompt``, and what did not take: a part of ``shown`` that
        scores below the model's ``min_score``, a thing in ``gone`` that scores at or above it, or,
        where every part passes, the whole prompt when it alone scores low."""
        scores = scorer.scores(image, [prompt, *shown, *gone])
        overall, low = scores[0], scorer.min_score
        unmet = {text: ["shown", f"{s:.2f}"] for text, s in zip(shown, scores[1:]) if s < low}
        unmet |= {text: ["gone", f"{s:.2f}"] for text, s in zip(gone, scores[1 + len(shown):]) if s >= low}
        if overall < low and not unmet:
            unmet[prompt] = ["shown", f"{overall:.2f}"]
        return overall, unmet

    def _check_reply(self, score: float | None, unmet: dict[str, list[str]]) -> str:
        if score is None:
            return ("not checked (the self-check is off)" if not self.checks else
                    "not checked (no image-text model: set PIXELCHAT_SIMILARITY or similarity= to a CLIP or SigLIP)")
        low = self._scorer.min_score
        missing = [f"{text} ({s})" for text, (how, s) in unmet.items() if how == "shown"]
        still = [f"{text} ({s})" for text, (how, s) in unmet.items() if how == "gone"]
        if not unmet:
            return f"checked: it matches the prompt ({score:.2f})"
        parts = ([f"did not take (similarity below {low:.2f}): {', '.join(missing)}"] if missing else []) + \
                ([f"still shows (similarity {low:.2f} or more): {', '.join(still)}"] if still else [])
        return "; ".join(parts) + "; say 'try again' to draw it once more"

    def _seeds(self, base: int | None, attempt: int) -> list[int]:
        """The seed of each self-check try: ``base`` (a random one when None) first, then the next
        ones; a "try again" (``attempt``) starts past the ones before it."""
        base = secrets.randbelow(2**32) if base is None else base
        return [base + attempt * MAX_CHECKS + i for i in range(max(1, self.checks))]

    def _generate_open(self, message: str, prompt: str, attempt: int = 0) -> Turn:
        from pixelchat.generate import generate_records

        negative = self.node.negative_prompt if self.node else self.negative_prompt
        self.scorer()  # a similarity model that will not load fails before anything is drawn
        clauses = split_list(prompt)

        def draw(seed: int):
            return generate_records(prompt, 1, seed, model=self.model, size=self.size,
                                    negative_prompt=negative or None)[0]

        result, score, unmet = self._checked(draw, self._seeds(self.seed, attempt), prompt,
                                             clauses if len(clauses) > 1 else [], [])
        reply = f"here it is; {self._check_reply(score, unmet)}"
        node = self._add(message, "generate", prompt, {}, reply, result, unmet=unmet, attempt=attempt,
                         changes=[f"new picture: {prompt}"], score=score)
        return Turn("generate", reply, node, [node.output])

    def _edit_open(self, message: str, *, attempt: int = 0, mask=None, revised: Rewrite | None = None) -> Turn:
        """A change in free words: 1. the text path revises the prompt; 2. the image path edits the
        picture with the best edit on offer, from the picture's seed; 3. the self-check scores the
        result against the revised prompt and draws again with the next seeds while it scores low."""
        from pixelchat.edit import edit

        # 1. the text path
        revised = revised or self.rewrite(message)
        if not revised.understood or not revised.changes:
            return Turn("ask", revised.reply, self.node)
        # 2. the image path: an instruction-edit pipeline reads the message itself; any other edits
        # under the revised prompt, inpainting where the mask allows
        engine = self._editor()
        self.scorer()  # a similarity model that will not load fails before anything is drawn
        picture, before = self.node.image, self.node
        negative = revised.negative_prompt or None
        text_path = Revision({}, {}, prompt=revised.prompt)

        def draw(seed: int):
            return edit(picture, message, model=engine, seed=seed, mask=mask, negative_prompt=negative,
                        revision=text_path).images[0]

        # 3. the self-check: what the revised prompt adds should show, what went to the negative prompt not
        old, old_negative = set(split_list(before.prompt)), {core(n) for n in split_list(before.negative_prompt)}
        shown = [c for c in split_list(revised.prompt) if c not in old]
        gone = [n for n in split_list(revised.negative_prompt) if core(n) not in old_negative]
        seed = before.record.get("seed") if before.record.get("seed") is not None else self.seed
        result, score, unmet = self._checked(draw, self._seeds(seed, attempt), revised.prompt, shown, gone)
        how = result.record.get("edit", {}).get("mode")
        said = {"instruct": "an instruction edit", "inpaint": "inpainted", "img2img": "image-to-image"}.get(how, how)
        reply = f"{revised.reply} ({said}); {self._check_reply(score, unmet)}"
        node = self._add(message, "edit", revised.prompt, {}, reply, result, unmet=unmet, attempt=attempt,
                         negative_prompt=revised.negative_prompt, changes=list(revised.changes), score=score)
        return Turn("edit", reply, node, [node.output])

    def _negative_open(self, low: str, attempt: int = 0) -> Turn:
        """"avoid dogs": onto the negative prompt of this picture and every later one (and, where the
        prompt says it, out of the picture as an edit); "allow dogs" takes it off."""
        allow = ALLOW.match(low)
        what = (allow or NEGATIVE.match(low)).group("what").strip(" .!")
        things = [core(t) for t in re.split(r",\s*|\s+and\s+", what) if core(t)]
        if not things:
            return Turn("ask", "say what to keep out of the pictures, e.g. 'avoid text, watermarks'", self.node)
        current = split_list(self.node.negative_prompt if self.node else self.negative_prompt)
        if allow:
            negative = [n for n in current if core(n) not in things]
        else:
            negative = current + [t for t in things if t not in {core(n) for n in current}]
        said = ", ".join(things)
        if self.node is None:
            self.negative_prompt = ", ".join(negative)
            return Turn("negative", f"{'allowed' if allow else 'kept out of the pictures to come'}: {said}")
        if not allow and any(find(split_list(self.node.prompt), t) for t in things):  # in the picture now
            revised = rewrite(self.node.prompt, f"remove {what}", ", ".join(negative))
            if revised.understood and revised.changes:
                return self._edit_open(low, attempt=attempt, revised=revised)
        node = self._add(low, "negative", self.node.prompt, {}, f"{'allowed again' if allow else 'kept out from now on'}: "
                         f"{said}; negative prompt: {', '.join(negative) or '(none)'}", negative_prompt=", ".join(negative))
        return Turn("negative", node.reply, node, [node.output])

    # --- files -------------------------------------------------------------------------------

    @property
    def model_path(self) -> str | None:
        return _engine_path(self.model)

    @property
    def editor_path(self) -> str | None:
        return _engine_path(self.editor)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "model": self.model_path, "seed": self.seed,
                "checks": self.checks, "draw_anyway": self.draw_anyway, "size": self.size, "style": self.style, "palette": self.palette, "negative": self.negative,
                "palette_strength": self.palette_strength, "editor": self.editor_path, "similarity": self.similarity,
                "min_score": self.min_score, "negative_prompt": self.negative_prompt,
                "declined": list(self._refused) if self._refused else None,
                "created": self.created, "current": self.current, "nodes": [asdict(n) for n in self.nodes.values()]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "Session":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError("not a pixelchat session")
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"session format version {d.get('format_version')} is not supported")
        s = cls(model=d.get("model"), seed=d.get("seed"), checks=int(d.get("checks", 3)),
                style=d.get("style", "none"), palette=d.get("palette") or None,
                palette_strength=float(d.get("palette_strength", 1.0)), draw_anyway=bool(d.get("draw_anyway", False)),
                size=d.get("size"), editor=d.get("editor"), similarity=d.get("similarity"),
                min_score=d.get("min_score"))
        s.negative_prompt = str(d.get("negative_prompt") or "")
        s.negative = [a for a in d.get("negative", []) if a in ABSENT]
        declined = d.get("declined")
        if declined is not None:
            if not (isinstance(declined, list) and len(declined) == 2 and all(isinstance(x, str) for x in declined)):
                raise ValueError("the session's declined prompt is malformed")
            s._refused = (declined[0], declined[1])
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


def _seen_reply(d) -> str:
    """What a description says of a picture, and that it means little where the picture is unlike the
    scenes the describer knows."""
    if d.familiar is False:
        from pixelchat.vision.describer import UNFAMILIAR

        return f"{UNFAMILIAR}; the nearest I can read: {d.caption}"
    return f"I see {d.caption}"
