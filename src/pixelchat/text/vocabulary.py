"""Words outside the `scenes` vocabulary, mapped to the nearest value it has.

"add a canoe" names no value the model knows, but a canoe is nearly a boat. `NearestValue`
embeds the unknown phrase with the sentence encoder and compares it (cosine similarity) with
plain names of every attribute value (``LABELS``). The confidence is a softmax over the values'
best similarities at a low temperature, so it is high only when one value stands clearly above
the others; callers map the phrase when the confidence reaches ``threshold``, ask back when it
does not, and treat the phrase as unknown when even its best similarity is under ``min_similarity``. The threshold and temperature come from `benchmarks/bench_nearest.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pixelchat.data.scenes import SCHEMA

# Plain names of each value, as a person would say them. Absent values ("no boat") are named
# only where the absence is a thing of its own (a clear sky).
LABELS: dict[tuple[str, str], tuple[str, ...]] = {
    ("time", "day"): ("daytime", "a bright day", "morning"),
    ("time", "sunset"): ("sunset", "dusk", "evening"),
    ("time", "night"): ("night", "a dark night", "midnight"),
    ("celestial", "sun"): ("the sun", "sunshine"),
    ("celestial", "moon"): ("the moon", "moonlight"),
    ("clouds", "none"): ("a clear sky",),
    ("clouds", "few"): ("a few clouds",),
    ("clouds", "many"): ("many clouds", "a cloudy sky"),
    ("cloud_color", "white"): ("white", "pale"),
    ("cloud_color", "pink"): ("pink", "rosy red"),
    ("cloud_color", "gray"): ("gray", "dark gray"),
    ("terrain", "mountains"): ("mountains", "high peaks"),
    ("terrain", "hills"): ("hills", "rolling hills"),
    ("terrain", "desert"): ("a desert", "sand"),
    ("terrain", "plain"): ("a plain", "flat grassland"),
    ("snow", "yes"): ("snow", "ice and snow"),
    ("water", "lake"): ("a lake", "a pond"),
    ("water", "sea"): ("the sea", "the ocean"),
    ("trees", "few"): ("a few trees",),
    ("trees", "forest"): ("a forest", "woods"),
    ("house", "yes"): ("a house", "a building"),
    ("boat", "yes"): ("a boat", "a small boat on the water"),
}
assert all(a in SCHEMA and v in SCHEMA[a] for a, v in LABELS)


@dataclass
class Guess:
    phrase: str
    attribute: str
    value: str
    confidence: float  # softmax share of the best value, 0–1
    similarity: float  # cosine similarity of the phrase and the value's nearest name

    def to_dict(self) -> dict:
        return {"phrase": self.phrase, "attribute": self.attribute, "value": self.value,
                "confidence": round(self.confidence, 3), "similarity": round(self.similarity, 3)}


def value_confidences(similarities: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax over values of their best similarity: (V,) → (V,), summing to 1."""
    return torch.softmax(similarities / temperature, dim=-1)


class NearestValue:
    """Maps a phrase to the nearest attribute value: ``NearestValue()("a canoe")`` → boat=yes.

    The phrase is compared only with values of the attributes the caller names (default all)."""

    def __init__(self, encoder=None, *, temperature: float = 0.03, threshold: float = 0.7,
                 min_similarity: float = 0.4):
        if encoder is None:
            from pixelchat.text.encoder import load_text_encoder

            encoder = load_text_encoder()
        self.encoder = encoder
        self.temperature = temperature
        self.threshold = threshold
        self.min_similarity = min_similarity  # below it a phrase is unrelated to every value, not a near miss
        self.values = list(LABELS)
        names = [(i, name) for i, key in enumerate(self.values) for name in LABELS[key]]
        self._owner = torch.tensor([i for i, _ in names])
        self._names = encoder.embed([n for _, n in names])  # (N, D), unit length

    def __call__(self, phrase: str, attributes=None) -> Guess | None:
        """The nearest value among ``attributes`` (default all), or None when there is no candidate."""
        phrase = " ".join(phrase.split())
        keep = [i for i, (a, _) in enumerate(self.values) if attributes is None or a in attributes]
        if not phrase or not keep:
            return None
        sims = (self.encoder.embed([phrase]) @ self._names.T)[0]  # (N,)
        best = torch.full((len(self.values),), -1.0).scatter_reduce(0, self._owner, sims, reduce="amax")
        best = best[keep]
        conf = value_confidences(best, self.temperature)
        top = int(conf.argmax())
        attribute, value = self.values[keep[top]]
        return Guess(phrase, attribute, value, float(conf[top]), float(best[top]))

    def confident(self, guess: Guess | None) -> bool:
        return guess is not None and guess.confidence >= self.threshold


# --- what the scenes model draws at all -----------------------------------------------------------
# A prompt may ask for nothing the model can draw ("a cat on a sofa"): then the reply says what it
# draws instead of passing off a landscape as the answer. A prompt is taken to ask for something it
# draws when any of these holds:
#   - the pattern reader finds a value in it (its phrases are precise);
#   - the prompt reader's network says a value with confidence >= SAID_CONFIDENCE (the off-subject
#     prompts we tried stay under 0.8, e.g. "a red sports car" → terrain plain 0.79);
#   - it is close to the kind of picture itself: cosine similarity >= SUBJECT_SIMILARITY with
#     SUBJECT_LABELS, the training captions' words for a whole landscape ("a canyon" 0.59, "a glacier"
#     0.46, "a windmill" 0.36; "a castle" 0.40 passes, "a cat on a sofa" 0.05, "an elephant" 0.22 and
#     "a computer" 0.26 do not). The captions' other generic subjects ("a scene", "a place", "a view")
#     name any picture, so they are left out;
#   - no word is left once the words the model knows are taken out ("a picture").
SUBJECT = "landscapes"
DRAWS = ("day, sunset or night; the sun or the moon; a clear sky, a few or many clouds (white, pink or gray); "
         "mountains, hills, a desert or a plain; snow; a lake or the sea; a few trees or a forest; a house; a boat")
SUBJECT_LABELS = ("a landscape", "some scenery")
SUBJECT_SIMILARITY = 0.35
SAID_CONFIDENCE = 0.9


def nothing_to_draw(prompt: str, confidence: dict[str, float], encoder) -> str | None:
    """The words of ``prompt`` that name nothing the scenes model draws, when nothing else in it does;
    None when the prompt asks for something it draws. ``confidence``: the network's confidence in each
    value it read (the pattern reader is asked here)."""
    from pixelchat.text.instructions import normalise, read_attributes, unknown_phrase

    text = normalise(prompt)
    if read_attributes(text) or any(c >= SAID_CONFIDENCE for c in confidence.values()):
        return None
    unknown = unknown_phrase(text)
    if not unknown:
        return None
    similarity = float((encoder.embed([text]) @ encoder.embed(list(SUBJECT_LABELS)).T).max())
    return None if similarity >= SUBJECT_SIMILARITY else unknown
