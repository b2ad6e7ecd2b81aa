"""Prompt moderation: is a prompt allowed by the content policy, and if not, which category blocks it.

A policy (``policy.json`` beside this file, or the file named by ``PIXELCHAT_POLICY``) lists
categories. Each catches a prompt in one of two ways:

1. **terms**: a blocked word or phrase, matched on word boundaries after undoing simple
   obfuscations (case, accents, look-alike letters, zero-width characters, l33t digits and
   symbols, repeated letters, letters spelled out with spaces or dots). Phrases in
   ``allowed_phrases`` ("al gore", "naked trees") are taken out first.
2. **embedding**: the prompt's MiniLM embedding is compared with the category's example
   prompts; the category fires when the nearest example is at least the category's
   ``threshold`` close (cosine) *and* the nearest benign example (the policy's
   ``benign_examples`` plus the category's ``counter_examples``) is not closer by more than
   ``-benign_margin``, so a prompt that merely shares words with a blocked one ("shooting
   stars over the lake", "a dog") is let through. Long prompts are also read in windows.

Two categories are built from others:

- a category with ``also_when`` fires when its companion category fires and one of its terms
  is present too: sexual content that mentions a child or an age under 18 is
  ``sexual_minors``, which no setting can allow;
- a category with ``needs_person`` (``real_person_deception``) looks only at prompts that name
  someone from ``public_figures``: the name is replaced by a neutral stand-in and the rest is
  compared with its examples ("{person} in handcuffs"); any other category firing on a prompt
  that names a public figure also makes it this category ("nude <celebrity>").
"""

from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

DEFAULT_POLICY = Path(__file__).with_name("policy.json")
NEVER_ALLOWED = frozenset({"sexual_minors"})
REQUIRED_CATEGORIES = ("sexual_minors",)  # a replaced policy may not drop these
ACTIONS = ("block",)
PERSON = "{person}"
WINDOW_WORDS, WINDOW_STRIDE = 16, 8  # long prompts are also read in windows: a short bad part is not drowned out
MAX_WINDOWS = 64  # beyond this many half-overlapping windows they no longer overlap

logger = logging.getLogger("pixelchat.safety")


class PolicyError(ValueError):
    """The policy file or the moderation settings are unusable."""


@dataclass(frozen=True)
class Decision:
    """What moderation said about one prompt."""

    allowed: bool
    category: str | None  # the blocking category; for an allowed prompt, an operator-allowed category or None
    score: float  # the category's score: 1.0 for a term, else the cosine similarity to its nearest example
    reason: str  # a sentence for the user
    matched: str | None = None  # the term or the nearest example
    by: str | None = None  # "term" | "embedding" | None

    def to_dict(self) -> dict:
        return asdict(self)


class PolicyViolation(ValueError):
    """A prompt the content policy blocks; ``decision`` says why."""

    def __init__(self, decision: Decision):
        super().__init__(decision.reason)
        self.decision = decision


# --- the policy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    id: str
    label: str  # a few words for messages: "graphic violence"
    description: str  # the user-facing sentence
    action: str
    threshold: float
    terms: tuple[str, ...]
    examples: tuple[str, ...]
    counter_examples: tuple[str, ...] = ()
    needs_person: bool = False
    also_when: tuple[str, tuple[str, ...]] | None = None  # (companion category, terms)


@dataclass(frozen=True)
class Policy:
    categories: tuple[Category, ...]
    benign_examples: tuple[str, ...] = ()
    public_figures: tuple[tuple[str, ...], ...] = ()
    allowed_phrases: tuple[str, ...] = ()
    person_stand_in: str = "a famous person"  # what a public figure's name is replaced by before comparing
    benign_margin: float = 0.0  # a benign example closer than the category's by more than -margin stops a block
    source: str = "<memory>"

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.categories)

    def category(self, category_id: str) -> Category:
        for c in self.categories:
            if c.id == category_id:
                return c
        raise KeyError(category_id)


def _strings(value, where: str, *, min_len: int = 0) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s.strip() for s in value):
        raise PolicyError(f"{where} must be a list of non-empty strings")
    if len(value) < min_len:
        raise PolicyError(f"{where} must hold at least {min_len} entries, not {len(value)}")
    return tuple(s.strip() for s in value)


def parse_policy(data, source: str = "<memory>") -> Policy:
    """A validated ``Policy`` from the JSON object of a policy file; ``PolicyError`` names what is wrong."""
    if not isinstance(data, dict):
        raise PolicyError(f"policy {source}: the file must hold a JSON object")
    raw = data.get("categories")
    if not isinstance(raw, list) or not raw:
        raise PolicyError(f"policy {source}: 'categories' must be a non-empty list")
    categories = []
    for i, c in enumerate(raw):
        where = f"policy {source}: category {i + 1}"
        if not isinstance(c, dict):
            raise PolicyError(f"{where} must be an object")
        cid = c.get("id")
        if not isinstance(cid, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", cid):
            raise PolicyError(f"{where}: 'id' must be a lowercase name like 'violence_gore'")
        where = f"policy {source}: category {cid!r}"
        missing = [k for k in ("description", "examples", "terms", "threshold", "action") if k not in c]
        if missing:
            raise PolicyError(f"{where} lacks {', '.join(missing)}")
        if c["action"] not in ACTIONS:
            raise PolicyError(f"{where}: 'action' must be one of {', '.join(ACTIONS)}, not {c['action']!r}")
        threshold = c["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
            raise PolicyError(f"{where}: 'threshold' must be a number in (0, 1], not {threshold!r}")
        if not isinstance(c["description"], str) or not c["description"].strip():
            raise PolicyError(f"{where}: 'description' must be a sentence")
        also_when = None
        if "also_when" in c:
            a = c["also_when"]
            if not isinstance(a, dict) or not isinstance(a.get("category"), str):
                raise PolicyError(f"{where}: 'also_when' must be {{\"category\": ID, \"terms\": [...]}}")
            also_when = (a["category"], _strings(a.get("terms"), f"{where}: also_when.terms", min_len=1))
        categories.append(Category(
            id=cid, label=str(c.get("label") or cid.replace("_", " ")), description=c["description"].strip(),
            action=c["action"], threshold=float(threshold), terms=_strings(c["terms"], f"{where}: 'terms'"),
            examples=_strings(c["examples"], f"{where}: 'examples'", min_len=1),
            counter_examples=_strings(c.get("counter_examples", []), f"{where}: 'counter_examples'"),
            needs_person=bool(c.get("needs_person", False)), also_when=also_when))
    ids = [c.id for c in categories]
    if len(set(ids)) != len(ids):
        raise PolicyError(f"policy {source}: category ids must be unique")
    for c in categories:
        if c.also_when and c.also_when[0] not in ids:
            raise PolicyError(f"policy {source}: category {c.id!r} refers to unknown category {c.also_when[0]!r}")
    for required in REQUIRED_CATEGORIES:
        if required not in ids:
            raise PolicyError(f"policy {source}: the {required!r} category cannot be removed from a policy")
    figures = data.get("public_figures", [])
    if not isinstance(figures, list):
        raise PolicyError(f"policy {source}: 'public_figures' must be a list")
    names = tuple(_strings(f if isinstance(f, list) else [f], f"policy {source}: public_figures")
                  for f in figures)
    if any(c.needs_person for c in categories) and not names:
        raise PolicyError(f"policy {source}: a category needs a named person but 'public_figures' is empty")
    margin = data.get("benign_margin", 0.0)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise PolicyError(f"policy {source}: 'benign_margin' must be a number")
    stand_in = data.get("person_stand_in", "a famous person")
    if not isinstance(stand_in, str) or not stand_in.strip():
        raise PolicyError(f"policy {source}: 'person_stand_in' must be a non-empty string")
    return Policy(categories=tuple(categories),
                  benign_examples=_strings(data.get("benign_examples", []), f"policy {source}: 'benign_examples'"),
                  public_figures=names,
                  allowed_phrases=_strings(data.get("allowed_phrases", []), f"policy {source}: 'allowed_phrases'"),
                  person_stand_in=stand_in.strip(), benign_margin=float(margin), source=source)


def load_policy(path: str | os.PathLike | None = None) -> Policy:
    """The policy at ``path``, else at ``$PIXELCHAT_POLICY``, else the shipped default."""
    path = Path(path or os.environ.get("PIXELCHAT_POLICY") or DEFAULT_POLICY).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(f"cannot read the content policy {path}: {e.strerror or e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PolicyError(f"the content policy {path} is not valid JSON: {e.msg} at line {e.lineno}") from e
    return parse_policy(data, source=str(path))


# --- text normalisation and term matching ------------------------------------------------------

# Letters that NFKC leaves alone but that look like Latin ones (Cyrillic and Greek).
CONFUSABLES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ɡ": "g", "ո": "n",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ω": "w", "ß": "ss", "ø": "o", "đ": "d", "ł": "l", "ı": "i", "æ": "ae", "œ": "oe",
})
# What a letter may be written as (l33t); the first is the letter itself.
LEET = {"a": "a4@", "b": "b8", "e": "e3€", "g": "g9", "i": "i1!|", "l": "l1|", "o": "o0", "s": "s5$",
        "t": "t7+", "z": "z2"}
WORD = r"a-z0-9"  # after normalisation a term's edges must not touch these
SEPARATORS = r"\s.\-_*·,:;/\\~"  # what may split the letters of a term: "g.o.r.e", "self-harm"
_LETTERISH = rf"{WORD}@$!|€"


def _spelled_out(min_chars: int) -> re.Pattern:
    """Runs of at least ``min_chars`` single characters split by separators: "g o r e", "s.e.x"."""
    return re.compile(rf"(?<![{_LETTERISH}])(?:[{_LETTERISH}][{SEPARATORS}]+){{{min_chars - 1},}}"
                      rf"[{_LETTERISH}](?![{_LETTERISH}])")


_SPELLED_OUT = _spelled_out(3)
_SPELLED_OUT_LONG = _spelled_out(4)  # what the encoder reads joined up: "i m a" stays as it is
_IN_WORD = re.compile(r"(?<=[a-z0-9])[.\-_·]+(?=[a-z0-9])")  # separators inside a word: "sui.cide", "g-o-r-y"
_DE_LEET = str.maketrans({"4": "a", "@": "a", "8": "b", "3": "e", "€": "e", "9": "g", "1": "i", "!": "i",
                          "|": "l", "0": "o", "5": "s", "$": "s", "7": "t", "+": "t", "2": "z"})


def normalise(text: str) -> str:
    """Lower case, NFKC, no accents, no zero-width characters, look-alike letters made Latin."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")  # zero-width joiners and the like
    text = text.casefold().translate(CONFUSABLES)
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return text


def _join(m: re.Match) -> str:
    return re.sub(rf"[{SEPARATORS}]+", "", m.group(0))


def spelled_out_runs(text: str) -> list[str]:
    """Runs of single characters split by spaces or dots ("g o r e", "g.o.r.e"), joined up."""
    return [_join(m) for m in _SPELLED_OUT.finditer(text)]


def _letter(ch: str, first: bool) -> str:
    chars = LEET.get(ch, ch)
    if not first and ch.isalpha():
        chars += "*"  # a masked letter: "p*rn"
    return "[" + re.escape(chars) + "]" if len(chars) > 1 else re.escape(chars)


def term_pattern(term: str) -> str:
    """A regex for one term: each letter may be l33t or repeated, words may be joined by separators,
    a word ending in ``*`` may end in anything ("decapitat*", "tak* my own life")."""
    words = [w for w in re.split(r"[\s.\-_·,:;/\\~]+", normalise(term).strip()) if w.strip("*")]
    parts = []
    for wi, word in enumerate(words):
        suffix, word = word.endswith("*"), word.rstrip("*")
        out, i = [], 0
        while i < len(word):
            j = i
            while j < len(word) and word[j] == word[i]:
                j += 1
            n = j - i  # a doubled letter in the term must stay at least doubled: "kill" is not "kil"
            out.append(_letter(word[i], wi == 0 and i == 0) + ("+" if n == 1 else f"{{{n},}}"))
            i = j
        parts.append("".join(out) + (rf"[{WORD}]*" if suffix else ""))
    return rf"[{SEPARATORS}]*".join(parts)


def compile_terms(terms: Iterable[str], *, bounded: bool = True) -> re.Pattern | None:
    """One regex for many terms; ``bounded``: only whole words."""
    return _compile_terms(tuple(terms), bounded)


@lru_cache(maxsize=256)
def _compile_terms(terms: tuple[str, ...], bounded: bool) -> re.Pattern | None:  # compiling is the slow part of loading
    bodies = sorted({term_pattern(t) for t in terms if normalise(t).strip("* ")}, key=len, reverse=True)
    if not bodies:
        return None
    alternation = "|".join(f"(?:{b})" for b in bodies)
    if bounded:
        return re.compile(rf"(?<![{WORD}])(?:{alternation})(?![{WORD}])")
    return re.compile(alternation)


class TermMatcher:
    """Finds any of a list of terms in a prompt, obfuscated or not."""

    def __init__(self, terms: Iterable[str], allowed_phrases: Iterable[str] = ()):
        self.terms = tuple(terms)
        self._bounded = self.pattern = compile_terms(self.terms)
        self._allowed = compile_terms(allowed_phrases)

    @property
    def _unbounded(self) -> re.Pattern | None:
        """Inside a spelled-out run ("a g o r e scene" → "agore") word edges are lost: match anywhere, but
        only terms long enough not to turn up by chance. Compiled when a prompt first has such a run
        (compiling is most of a matcher's start-up; `_compile_terms` keeps it)."""
        return compile_terms([t for t in self.terms if len(t.strip("* ")) >= 4], bounded=False)

    def find(self, text: str) -> str | None:
        """The first blocked term found in ``text`` (as written there), or None."""
        if self._bounded is None:
            return None
        text = normalise(text)
        if self._allowed is not None:
            text = self._allowed.sub(" ", text)
        for variant in (text, _SPELLED_OUT.sub(_join, text), _IN_WORD.sub("", text)):
            m = self._bounded.search(variant)
            if m:
                return m.group(0)
        runs = spelled_out_runs(text)
        unbounded = self._unbounded if runs else None
        if unbounded is not None:
            for run in runs:
                m = unbounded.search(run)
                if m:
                    return m.group(0)
        return None


_AGE = r"(?:1[0-7]|[0-9]|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|" \
       r"sixteen|seventeen)"
_MINOR_AGE = re.compile("|".join([
    rf"(?<![a-z0-9]){_AGE}[\s\-]*(?:years?|yrs?|yr)[\s\-]*olds?(?![a-z])",  # "14 year old", "twelve-year-old"
    rf"(?<![a-z0-9]){_AGE}[\s\-]*y/?o(?![a-z])",  # "12yo", "12 y/o"
    rf"(?<![a-z])aged?\s+{_AGE}(?![a-z0-9])",  # "aged 9"
    rf"(?<![a-z])(?:girl|boy|child|kid|daughter|son)\s+of\s+{_AGE}(?![a-z0-9])",  # "a girl of thirteen"
    rf"(?<![a-z])look(?:s|ing)?\s+(?:about\s+|like\s+)?{_AGE}(?![a-z0-9])",  # "looks twelve"
    r"(?<![a-z0-9])under[\s\-]*(?:18|eighteen)(?![0-9])",
    r"(?<![a-z0-9])(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|[1-9](?:st|nd|rd|th))[\s\-]*grader?s?"
    r"(?![a-z])",
]))


def mentions_minor_age(text: str) -> str | None:
    """An age under 18 written out ("14 year old", "12yo", "aged 9", "a sixth grader"), or None."""
    m = _MINOR_AGE.search(normalise(text))
    return m.group(0) if m else None


def canonical_text(text: str) -> str:
    """The prompt as the encoder should read it: spelled-out runs joined, l33t words spelled with letters."""
    text = normalise(text)
    text = _SPELLED_OUT_LONG.sub(_join, text)

    def de_leet(m: re.Match) -> str:
        word = m.group(0)
        letters = sum(ch.isalpha() for ch in word)
        return word.translate(_DE_LEET) if letters >= 2 and letters < len(word) else word

    return re.sub(r"[a-z0-9@$!|€+]+", de_leet, text)


def text_windows(text: str) -> list[str]:
    """Word windows of a long prompt, so that a short bad part is neither cut off (the encoder reads 64
    tokens) nor averaged away by the rest: half-overlapping, or side by side for a very long prompt
    (every word is read either way)."""
    words = text.split()
    n = len(words)
    if n <= WINDOW_WORDS + WINDOW_STRIDE:
        return []
    stride = WINDOW_STRIDE if n <= MAX_WINDOWS * WINDOW_STRIDE else WINDOW_WORDS
    starts = [*range(0, n - WINDOW_WORDS, stride), n - WINDOW_WORDS]
    return [" ".join(words[i:i + WINDOW_WORDS]) for i in starts]


# --- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModerationSettings:
    """What an operator sets: PIXELCHAT_POLICY, PIXELCHAT_MODERATION_ALLOW, PIXELCHAT_LOG_PROMPTS,
    PIXELCHAT_OUTPUT_CHECKERS."""

    policy: str | None = None  # a policy file; None: the shipped default
    allow: tuple[str, ...] = ()  # category ids the operator allows (never sexual_minors)
    log_prompts: bool = False  # put the prompt text in decision logs
    output_checkers: tuple[str, ...] = ()  # names for pixelchat.safety.checkers.load_checkers


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _comma_list(value: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in (value or "").split(",") if v.strip()))


def settings_from_env(env: Mapping[str, str] | None = None) -> ModerationSettings:
    """The moderation settings in ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    flag = env.get("PIXELCHAT_LOG_PROMPTS", "").strip().lower()
    if flag not in _TRUE + _FALSE:
        raise PolicyError(f"PIXELCHAT_LOG_PROMPTS must be one of {', '.join(_TRUE + _FALSE[1:])}, not {flag!r}")
    return ModerationSettings(policy=env.get("PIXELCHAT_POLICY") or None,
                              allow=_comma_list(env.get("PIXELCHAT_MODERATION_ALLOW")),
                              log_prompts=flag in _TRUE,
                              output_checkers=_comma_list(env.get("PIXELCHAT_OUTPUT_CHECKERS")))


# --- the moderator ----------------------------------------------------------------------------


@dataclass
class EmbeddingScores:
    """How close one prompt is to each category's examples, and to what they are contrasted with. A long
    prompt is read as several windows: per category, one (closest example, closest benign) pair each."""

    pairs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # category → [(example, benign)]
    nearest: dict[str, list[str]] = field(default_factory=dict)  # category → each window's nearest example

    def best(self, category: str) -> float:
        """The cosine similarity to the category's nearest example, over all windows."""
        return max((example for example, _ in self.pairs.get(category, ())), default=0.0)

    def hit(self, category: str, threshold: float, margin: float) -> tuple[float, str] | None:
        """(score, nearest example) of the window that is at least ``threshold`` close to an example and not
        further from it than from the nearest benign example plus ``margin``, the closest such; or None."""
        pairs = self.pairs.get(category, ())
        found = [(example, self.nearest[category][i]) for i, (example, benign) in enumerate(pairs)
                 if example >= threshold and example > benign + margin]
        return max(found) if found else None


class Moderator:
    """A loaded policy, its example embeddings and the operator's allow list."""

    def __init__(self, policy: Policy | str | os.PathLike | None = None, *, allow: Iterable[str] = (), encoder=None):
        self.policy = policy if isinstance(policy, Policy) else load_policy(policy)
        allow = tuple(dict.fromkeys(allow))
        unknown = [a for a in allow if a not in self.policy.ids]
        if unknown:
            raise PolicyError(f"cannot allow unknown categor{'ies' if len(unknown) > 1 else 'y'} "
                              f"{', '.join(unknown)}; the policy has {', '.join(self.policy.ids)}")
        never = [a for a in allow if a in NEVER_ALLOWED]
        if never:
            raise PolicyError(f"the {', '.join(never)} category can never be allowed")
        self.allow = frozenset(allow)
        self._encoder = encoder
        self._terms = {c.id: TermMatcher(c.terms, self.policy.allowed_phrases) for c in self.policy.categories}
        self._also = {c.id: TermMatcher(c.also_when[1]) for c in self.policy.categories if c.also_when}
        self._people = TermMatcher([n for names in self.policy.public_figures for n in names])
        self._people_sub = self._people.pattern
        self._allowed_sub = compile_terms(self.policy.allowed_phrases)
        self._bank = None
        self._facts_cache: dict[str, tuple] = {}

    @classmethod
    def from_settings(cls, settings: ModerationSettings, *, encoder=None) -> "Moderator":
        return cls(settings.policy, allow=settings.allow, encoder=encoder)

    @property
    def encoder(self):
        if self._encoder is None:
            from pixelchat.text.encoder import load_text_encoder

            self._encoder = load_text_encoder()
        return self._encoder

    def _examples(self) -> dict[str, torch.Tensor]:
        """Unit embeddings, computed once: each category's examples (key: its id) and what it is contrasted with,
        the benign examples plus its counter-examples (key: "benign:" + id)."""
        if self._bank is None:
            stand_in = self.policy.person_stand_in
            lists = {"benign": list(self.policy.benign_examples)}
            for c in self.policy.categories:
                lists[c.id] = [e.replace(PERSON, stand_in) for e in c.examples]
                lists["counter:" + c.id] = [e.replace(PERSON, stand_in) for e in c.counter_examples]
            examples = [e for v in lists.values() for e in v]
            emb = cached_embeddings(self.encoder, examples, lambda: [canonical_text(e) for e in examples])  # (N, D)
            parts, i = {}, 0
            for key, v in lists.items():
                parts[key] = emb[i:i + len(v)]
                i += len(v)
            bank = {}
            for c in self.policy.categories:
                bank[c.id] = parts[c.id]
                bank["benign:" + c.id] = torch.cat([parts["benign"], parts["counter:" + c.id]])
            self._bank = bank
        return self._bank

    def person_in(self, text: str) -> str | None:
        """The public figure's name ``text`` mentions, or None."""
        return self._people.find(text)

    def _read_as(self, text: str) -> tuple[list[str], list[str]]:
        """What the encoder reads for ``text``: the canonical prompt (allowed phrases taken out) and its windows;
        and the same with any public figure's name replaced by the stand-in (empty when none is named)."""
        canon = canonical_text(text)
        if self._allowed_sub is not None:  # "suicide prevention poster" is read as "poster"
            canon = re.sub(r"\s+", " ", self._allowed_sub.sub(" ", canon)).strip()
        variants = list(dict.fromkeys([canon, *text_windows(canon)]))
        if self._people_sub is None or not self._people_sub.search(canon):
            return variants, []
        return variants, list(dict.fromkeys(self._people_sub.sub(self.policy.person_stand_in, v) for v in variants))

    def embedding_scores(self, texts: Sequence[str]) -> list[EmbeddingScores]:
        """Each prompt's closeness to every category's examples and to what they are contrasted with (one batched
        encoder call for all prompts and their variants)."""
        bank = self._examples()
        read = [self._read_as(t) for t in texts]
        flat = [v for variants, people in read for v in (*variants, *people)]
        emb = self.encoder.embed(flat) if flat else None  # (N, D)
        out, i = [], 0
        for variants, people in read:
            plain, named = emb[i:i + len(variants)], emb[i + len(variants):i + len(variants) + len(people)]
            i += len(variants) + len(people)
            s = EmbeddingScores()
            for c in self.policy.categories:
                e = named if c.needs_person else plain  # (V, D); no rows: no public figure named
                if len(e) == 0:
                    continue
                best, k = (e @ bank[c.id].T).max(dim=1)  # (V,)
                contrast = bank["benign:" + c.id]
                benign = (e @ contrast.T).max(dim=1).values if len(contrast) else torch.full_like(best, -1.0)
                s.pairs[c.id] = list(zip(best.tolist(), benign.tolist()))
                s.nearest[c.id] = [c.examples[j] for j in k.tolist()]
            out.append(s)
        return out

    def check(self, text: str) -> Decision:
        """The policy's decision on one prompt."""
        return self.check_many([text])[0]

    def check_many(self, texts: Sequence[str]) -> list[Decision]:
        """Decisions for many prompts, with one batched encoder call."""
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        scores = dict(zip(todo, self.embedding_scores([texts[i] for i in todo]))) if todo else {}
        return [self.decide(t, scores[i]) if i in scores else _allowed(0.0) for i, t in enumerate(texts)]

    def enforce(self, text: str) -> Decision:
        """The decision on ``text``; raises ``PolicyViolation`` when it is blocked."""
        decision = self.check(text)
        if not decision.allowed:
            raise PolicyViolation(decision)
        return decision

    def _facts(self, text: str) -> tuple[dict[str, str | None], str | None, dict[str, str | None]]:
        """What the terms say about ``text``, whatever the thresholds: each category's blocked term, the
        public figure named, and each ``also_when`` category's companion term (cached per prompt)."""
        facts = self._facts_cache.get(text)
        if facts is None:
            terms = {c.id: self._terms[c.id].find(text) for c in self.policy.categories}
            also = {cid: m.find(text) or mentions_minor_age(text) for cid, m in self._also.items()}
            facts = (terms, self.person_in(text), also)
            if len(self._facts_cache) >= 4096:
                try:  # requests check prompts from several threads at once
                    self._facts_cache.pop(next(iter(self._facts_cache)), None)
                except (StopIteration, RuntimeError):
                    pass
            self._facts_cache[text] = facts
        return facts

    def fired(self, text: str, scores: EmbeddingScores) -> list[tuple[str, str, float, str]]:
        """Every category that catches ``text``, most specific first: (category, by, score, matched)."""
        policy = self.policy
        terms, person, also = self._facts(text)

        close = {c.id: scores.hit(c.id, c.threshold, policy.benign_margin) for c in policy.categories}
        hits: dict[str, tuple[str, float, str]] = {}
        margin: dict[str, float] = {}  # how far over its threshold an embedding hit is
        for c in policy.categories:
            if c.needs_person:
                continue
            if terms[c.id] is not None:
                hits[c.id] = ("term", 1.0, terms[c.id])
            elif close[c.id]:
                hits[c.id] = ("embedding", *close[c.id])
                margin[c.id] = close[c.id][0] - c.threshold
        derived: dict[str, tuple[str, float, str]] = {}  # categories built from others
        for c in policy.categories:
            companion = c.also_when[0] if c.also_when else None
            if companion in hits and also[c.id] is not None:
                by, score, matched = hits[companion]
                derived[c.id] = (by, score, f"{matched} + {also[c.id]}")
                margin[c.id] = margin.get(companion, 0.0)
            if c.needs_person:
                others = sorted(((cid, h) for cid, h in hits.items() if cid != c.id),  # the strongest first
                                key=lambda item: (item[1][0] != "term", -margin.get(item[0], 0.0)))
                if terms[c.id] is not None:  # "deepfake" needs no famous name
                    derived[c.id] = ("term", 1.0, terms[c.id] if person is None else f"{terms[c.id]} + {person}")
                elif person is not None and others:
                    cid, (by, score, matched) = others[0]
                    derived[c.id] = (by, score, f"{matched} + {person}")
                    margin[c.id] = margin.get(cid, 0.0)
                elif person is not None and close[c.id]:
                    derived[c.id] = ("embedding", *close[c.id])
                    margin[c.id] = close[c.id][0] - c.threshold
        order = {cid: i for i, cid in enumerate(policy.ids)}

        def rank(item):
            # categories built on a term first ("nude" + "child"), then plain terms, then embedding hits,
            # the one most clearly over its threshold first (a built one wins a tie with its companion)
            cid, (by, _, _) = item
            if by == "term":
                return (0 if cid in derived else 1, 0.0, order[cid])
            return (2, -margin[cid], 0 if cid in derived else 1)

        ranked = sorted({**hits, **derived}.items(), key=rank)
        return [(cid, by, score, matched) for cid, (by, score, matched) in ranked]

    def decide(self, text: str, scores: EmbeddingScores) -> Decision:
        """The decision on ``text`` given its ``embedding_scores`` (thresholds may change in between)."""
        fired = self.fired(text, scores)
        for cid, by, score, matched in fired:
            if cid in self.allow:
                continue
            c = self.policy.category(cid)
            return Decision(False, cid, round(score, 4),
                            f"the prompt was blocked by the content policy ({c.label}): {c.description}", matched, by)
        top = max((scores.best(c.id) for c in self.policy.categories), default=0.0)
        if fired:  # everything that caught it is allowed here
            cid, by, score, matched = fired[0]
            return Decision(True, cid, round(score, 4),
                            f"allowed: this service allows {self.policy.category(cid).label}", matched, by)
        return _allowed(top)


def _allowed(score: float) -> Decision:
    return Decision(True, None, round(score, 4), "allowed", None, None)


def cached_embeddings(encoder, texts: list[str], read=None) -> torch.Tensor:
    """``encoder.embed(read())`` (``read`` None: ``texts`` as they are), kept on disk (PIXELCHAT_CACHE,
    default ~/.cache/pixelchat, in moderation/) under a hash of the encoder's weights, ``texts`` and this
    module's source (where ``read`` is defined): the policy's few hundred examples cost the encoder about
    2 s of CPU, which every command that checks a prompt would otherwise pay again."""
    import hashlib

    from safetensors.torch import load_file, save_file

    source = Path(__file__).stat()
    key = hashlib.sha256(json.dumps([encoder.cache_key, torch.__version__, source.st_size, source.st_mtime_ns,
                                     texts]).encode()).hexdigest()
    root = Path(os.environ.get("PIXELCHAT_CACHE") or Path.home() / ".cache" / "pixelchat").expanduser()
    path = root / "moderation" / f"{key}.safetensors"
    try:
        emb = load_file(path)["embeddings"]
        if emb.shape == (len(texts), encoder.dim):
            return emb
    except Exception:  # noqa: BLE001  missing, unreadable or truncated: computed again below
        pass
    emb = encoder.embed(texts if read is None else read())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({"embeddings": emb.contiguous()}, tmp)
        os.replace(tmp, path)
    except OSError as e:  # a read-only home: every start computes them
        logger.debug("cannot keep the policy's example embeddings in %s: %s", path, e)
    return emb


@lru_cache(maxsize=8)
def _moderator(policy: str | None, allow: tuple[str, ...]) -> Moderator:
    return Moderator(policy, allow=allow)


def default_moderator() -> Moderator:
    """The moderator the environment configures (PIXELCHAT_POLICY, PIXELCHAT_MODERATION_ALLOW), built once
    per setting: a policy file is read when first used, not again."""
    settings = settings_from_env()
    return _moderator(settings.policy, settings.allow)


def _resolve(policy) -> Moderator:
    if policy is None:
        return default_moderator()
    if isinstance(policy, Moderator):
        return policy
    settings = settings_from_env()
    if isinstance(policy, Policy):
        return Moderator(policy, allow=settings.allow)
    return _moderator(str(Path(policy).expanduser().resolve()), settings.allow)


def check_prompt(text: str, policy: Policy | Moderator | str | os.PathLike | None = None) -> Decision:
    """Is ``text`` allowed? ``policy``: a Policy, a policy file, a Moderator, or None for the default
    (the operator's allow list, PIXELCHAT_MODERATION_ALLOW, applies to the first two)."""
    return _resolve(policy).check(text)


def enforce(text: str, policy: Policy | Moderator | str | os.PathLike | None = None) -> Decision:
    """``check_prompt`` that raises ``PolicyViolation`` (a ValueError) for a blocked prompt."""
    return _resolve(policy).enforce(text)


# --- the decision log -------------------------------------------------------------------------


def log_decision(decision: Decision, user: str | None = None, prompt: str | None = None,
                 log_prompts: bool = False, *, log: logging.Logger | None = None) -> dict:
    """Write one JSON line about ``decision`` to the "pixelchat.safety" logger and return it. The prompt's
    text goes in only when ``log_prompts`` (PIXELCHAT_LOG_PROMPTS) is set: a decision log should not
    become a store of what people asked for."""
    record = {"event": "moderation", "user": user,
              "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
              "allowed": decision.allowed, "category": decision.category, "score": decision.score,
              "by": decision.by}
    if log_prompts and prompt is not None:
        record["prompt"] = prompt
    (log or logger).info(json.dumps(record, ensure_ascii=False))
    return record
