"""OpenAI's ``quality`` mapped onto work the engine really does: how many candidates are compared
before one picture is kept.

- Generations: a self-check draws ``k`` candidates for each picture asked for (picture ``i`` of a
  request with seed ``s`` tries seeds ``s + i·k … s + i·k + k - 1``), has the engine describe each,
  and keeps the one whose reading agrees with most of the attributes the prompt names (ties: the
  describer's summed confidence in them, then the earlier seed). ``low`` and ``auto`` draw one
  candidate, so a seed gives the same picture as the library and the CLI; ``medium`` draws 2,
  ``high`` 4. Asking for ``partial_images`` streams runners-up, so it draws at least that many more.
  A spec model checks each candidate itself as it draws it (its record's ``check``; see
  `pixelchat.engines.spec.SpecEngine.self_check`), so this compares pictures already checked.
- Edits and variations rank their own candidates inside the engine; quality sets how many
  (`edit_options`), where the engine takes that option.

The kept picture's record says what was compared (``self_check``), so it is reproducible from its
own seed with ``quality="low"``.
"""

from __future__ import annotations

import inspect

GENERATE_CANDIDATES = {"auto": 1, "low": 1, "medium": 2, "high": 4}
EDIT_CANDIDATES = {"low": 8, "high": 64}  # auto/medium: the engine's default (24 for the built-in GAN)
VARY_CANDIDATES = {"low": 1, "high": 8}  # per picture asked for; auto/medium: the engine's default (3)
MAX_PARTIAL_IMAGES = 3  # as OpenAI


def tier(quality: str | None) -> str:
    """OpenAI's quality words (gpt-image-1's and DALL·E 3's) → auto, low, medium or high."""
    return {"standard": "auto", "hd": "high"}.get(quality, quality or "auto")


def generation_candidates(quality: str | None, partial_images: int = 0) -> int:
    """Candidates the self-check compares for each picture of a generation."""
    return max(GENERATE_CANDIDATES[tier(quality)], partial_images + 1)


def edit_options(engine, kind: str, quality: str | None, n: int) -> dict | None:
    """The engine options ``quality`` sets for an edit or a variation: {} for auto and medium (the
    engine's default), None where the engine ranks no candidates (then no quality is claimed)."""
    table = EDIT_CANDIDATES if kind == "edit" else VARY_CANDIDATES
    if tier(quality) not in table:
        return {}
    if not takes(getattr(engine, kind), "candidates"):
        return None
    per = table[tier(quality)]
    return {"candidates": per if kind == "edit" else per * n}


def drawn_quality(kind: str, quality: str | None) -> str:
    """The quality a request is drawn at, in the words of OpenAI's answer: a generation's auto draws
    one candidate (low); an edit's or variation's, the engine's default (medium)."""
    t = tier(quality)
    return t if t != "auto" else ("low" if kind == "generation" else "medium")


def takes(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def agreement(attributes: dict[str, str], confidence: dict[str, float], named: dict[str, str]) -> tuple[int, float]:
    """How far a reading agrees with what the prompt names: attributes shown, and the describer's
    summed confidence in them."""
    shown = [k for k, v in named.items() if attributes.get(k) == v]
    return len(shown), sum(float(confidence.get(k, 0.0)) for k in shown)


def self_check(engine, prompt: str, drawn: list, k: int) -> tuple[list, list]:
    """``drawn`` (GeneratedImage, ``k`` candidates per picture, in order) → the kept picture of each
    group, and the first group's runners-up, weakest first. Each kept record gets ``self_check``."""
    if k <= 1:
        return drawn, []
    from pixelchat.text.instructions import read_attributes

    named = read_attributes(prompt)
    kept, runners_up = [], []
    for g in range(0, len(drawn), k):
        group = drawn[g:g + k]
        scores = [agreement(d.attributes, d.confidence, named) for d in (engine.describe(c.image) for c in group)]
        order = sorted(range(len(group)), key=lambda i: (scores[i][0], scores[i][1], -i))  # weakest first
        best = group[order[-1]]
        best.record["self_check"] = {"candidates": len(group), "seeds": [c.seed for c in group],
                                     "attributes_named": len(named), "attributes_seen": scores[order[-1]][0]}
        kept.append(best)
        if g == 0:
            runners_up = [group[i] for i in order[:-1]]
    return kept, runners_up
