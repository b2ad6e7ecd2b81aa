"""The text path of the dual-path model: a prompt reader, prompt → partial scene spec.

A small network on the frozen MiniLM token states: per attribute, a learned query attends over
the prompt's tokens (attention pooling) and a head picks one of the attribute's values or "not
said". It learns from the training captions, which carry the attributes they name, so it reads
wording nobody wrote a pattern for ("beneath a glowing moon") through the encoder's sense of
words. The pattern reader (`read_attributes`), written by hand and precise where a phrase of its
vocabulary matches, answers first; the network adds what the words the patterns leave unexplained
say (an attribute whose attention falls mostly on those words), and a prompt with no such word
needs no encoder pass at all (see `read_prompts`).

    reader = load_reader()
    read_prompt(reader, encoder, "snowy peaks at dusk with no boats")
    # Reading(values={'time': 'sunset', 'terrain': 'mountains', 'snow': 'yes', 'boat': 'no'}, confidence={...})
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_READER = WEIGHTS / "reader-scenes"


@dataclass
class ReaderConfig:
    schema: dict[str, list[str]]
    text_encoder: str = "all-MiniLM-L6-v2"
    text_dim: int = 384
    hidden: int = 128

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ReaderConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown reader config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


class PromptReader(nn.Module):
    """Token states (B, T, D) → per attribute, logits over its values and a last class, "not said"."""

    def __init__(self, cfg: ReaderConfig):
        super().__init__()
        self.cfg = cfg
        a, h = len(cfg.schema), cfg.hidden
        self.keys = nn.Linear(cfg.text_dim, h)
        self.values = nn.Sequential(nn.Linear(cfg.text_dim, h), nn.GELU())
        self.queries = nn.Parameter(torch.randn(a, h) / math.sqrt(h))
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, len(v) + 1))
                                   for v in cfg.schema.values())

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        return self.read(tokens, mask)[0]

    def read(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per attribute logits, and where each attribute looked: attention (B, A, T) over the tokens."""
        scores = torch.einsum("bth,ah->bat", self.keys(tokens), self.queries) / math.sqrt(self.cfg.hidden)  # (B, A, T)
        attention = scores.masked_fill(~mask.bool()[:, None, :], float("-inf")).softmax(-1)
        pooled = torch.einsum("bat,bth->bah", attention, self.values(tokens))  # (B, A, H)
        return [head(pooled[:, k]) for k, head in enumerate(self.heads)], attention  # each (B, values + 1)


@dataclass
class Reading:
    """What a prompt says: attribute → value, and the reader's confidence in each."""

    values: dict[str, str]
    confidence: dict[str, float] = field(default_factory=dict)
    by: dict[str, str] = field(default_factory=dict)  # attribute → "network" | "pattern"


def load_reader(path: str | Path | None = None) -> PromptReader:
    from pixelchat.training.checkpoint import load_network

    return load_network(path or DEFAULT_READER, "prompt-reader", lambda c: PromptReader(ReaderConfig.from_dict(c)))


@torch.inference_mode()
def reader_probabilities(reader: PromptReader, encoder, prompts: list[str]) -> list[torch.Tensor]:
    enc = encoder.encode([p.strip() for p in prompts])
    return [logits.softmax(-1) for logits in reader(enc.tokens, enc.mask)]


# A network reading is taken next to the pattern reader's only when the attribute drew at least this
# share of its attention from words the patterns left unexplained: the network reads new wording, and
# does not second-guess the words the patterns explain.
UNEXPLAINED_ATTENTION = 0.5
# ... and only when the words the patterns leave unexplained are somewhat like the training phrasings
# (cosine of their sentence embedding to the nearest one, all-MiniLM-L6-v2): "a canoe" is (0.58 to a
# boat phrasing), "a guitar" is not (0.31). Chosen on bench_nearest's tuning half.
KNOWN_WORDS = 0.35


def read_prompts(reader: PromptReader, encoder, prompts: list[str], *, patterns: bool = True) -> list[Reading]:
    """Each prompt's reading. With ``patterns`` (scenes): the pattern reader's values, and the network's
    for attributes the patterns did not read, where the network read them from words the patterns leave
    unexplained (``UNEXPLAINED_ATTENTION``); a prompt whose every word the patterns explain costs no
    encoder pass. ``patterns=False``: the network's reading alone."""
    from pixelchat.text.instructions import find_mentions, normalise, unexplained_words

    schema = reader.cfg.schema
    gated = patterns and _is_scenes(schema)
    texts = [normalise(p) if gated else p.strip() for p in prompts]
    mentions = [find_mentions(t) if gated else [] for t in texts]
    unexplained = [unexplained_words(t, m) if gated else [] for t, m in zip(texts, mentions)]
    need = [i for i in range(len(texts)) if not gated or unexplained[i]]
    network: dict[int, tuple[dict, dict]] = {}
    if need:
        with torch.inference_mode():
            enc = encoder.encode([texts[i] for i in need])
            logits, attention = reader.read(enc.tokens, enc.mask)
        probs = [lg.softmax(-1) for lg in logits]
        offsets = encoder.offsets([texts[i] for i in need]) if gated else None
        for row, i in enumerate(need):
            if gated:
                loose = torch.zeros(attention.shape[-1])
                for t, (s, e) in enumerate(offsets[row][:attention.shape[-1]]):
                    loose[t] = float(e > s and any(a < e and s < b for a, b in unexplained[i]))
            values, confidence = {}, {}
            for k, (name, vals) in enumerate(schema.items()):
                p = probs[k][row]
                j = int(p.argmax())
                if j == len(vals) or (gated and float(attention[row, k] @ loose) < UNEXPLAINED_ATTENTION):
                    continue
                values[name], confidence[name] = vals[j], float(p[j])
            network[i] = (values, confidence)
        # words unlike any the reader learned from: it reads nothing from them (asked only where it read
        # something, which spares the extra encoder pass for most new wording)
        read = [i for i in need if gated and network[i][0]]
        if read:
            likeness = _likeness_to_training(reader, encoder, [" ".join(texts[i][a:b] for a, b in unexplained[i])
                                                               for i in read])
            for i, like in zip(read, likeness):
                if like < KNOWN_WORDS:
                    network[i] = ({}, {})
    out = []
    for i in range(len(texts)):
        values, confidence = network.get(i, ({}, {}))
        by = {k: "network" for k in values}
        for _, _, name, value in mentions[i]:  # the later of two mentions of one attribute wins
            values[name], confidence[name], by[name] = value, 1.0, "pattern"
        if gated:
            drop_conflicts(values, confidence, by)
        order = [k for k in schema if k in values]
        out.append(Reading({k: values[k] for k in order}, {k: round(confidence[k], 4) for k in order},
                           {k: by[k] for k in order}))
    return out


def _likeness_to_training(reader: PromptReader, encoder, texts: list[str]) -> list[float]:
    """Each text's cosine similarity to the nearest training phrasing (sentence embeddings)."""
    from pixelchat.data.captions import phrasing_statements

    name, keys = getattr(reader, "_phrasing_keys", (None, None))
    if keys is None or name != encoder.name:  # embedded once per reader and encoder
        keys = encoder.embed([p for p, _ in phrasing_statements("train")])
        reader._phrasing_keys = (encoder.name, keys)
    return (encoder.embed(texts) @ keys.T).max(1).values.tolist()


def conflicts(values: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs of scenes attributes whose read values cannot hold together: what the schema forbids
    (`pixelchat.data.spec.incompatible`: a boat on no water, the sun at night, the moon by day) and a
    cloud colour for a cloudless sky."""
    from pixelchat.data.spec import incompatible

    out = [(a, b) for a, b, _ in incompatible(values)]
    if values.get("clouds") == "none" and "cloud_color" in values:
        out.append(("clouds", "cloud_color"))
    return out


def drop_conflicts(values: dict[str, str], confidence: dict[str, float], by: dict[str, str]) -> None:
    """Where a network reading contradicts another reading, drop it (in place): the less confident of two
    network readings, the network's against the patterns'. Contradictions the patterns read both sides of
    are the prompt's own and stay, to be refused with the schema's reason."""
    for a, b in conflicts(values):
        network = [k for k in (a, b) if by.get(k) == "network"]
        if network:
            drop = min(network, key=lambda k: confidence[k])
            del values[drop], confidence[drop], by[drop]


def read_prompt(reader: PromptReader, encoder, prompt: str, *, patterns: bool = True) -> Reading:
    return read_prompts(reader, encoder, [prompt], patterns=patterns)[0]


def _is_scenes(schema) -> bool:
    from pixelchat.data.spec import is_scenes

    return is_scenes(schema)


# --- training ----------------------------------------------------------------------------------


def caption_set(n: int, seed: int, split: str) -> tuple[list[str], list[dict[str, str]]]:
    """``n`` scenes captions of ``split``'s phrasings and, for each, the attributes it names."""
    from pixelchat.data.captions import caption_scene
    from pixelchat.data.scenes import sample_attributes

    captions, named = [], []
    for i in range(n):
        attrs = sample_attributes(np.random.default_rng([seed, i, 0]))
        caption, mentioned = caption_scene(attrs, np.random.default_rng([seed, i, 1]), split=split)
        captions.append(caption)
        named.append({k: attrs[k] for k in mentioned})
    return captions, named


def reading_labels(named: list[dict[str, str]], schema: dict[str, list[str]]) -> torch.Tensor:
    """(N, A) targets: the value's index, or len(values) for "not said"."""
    out = torch.empty((len(named), len(schema)), dtype=torch.long)
    for i, said in enumerate(named):
        for k, (name, vals) in enumerate(schema.items()):
            out[i, k] = vals.index(said[name]) if name in said else len(vals)
    return out


def reader_scores(readings: list[Reading], named: list[dict[str, str]], schema: dict[str, list[str]]) -> dict:
    """Per attribute, the share of prompts read right (the value, or "not said"); and exact readings."""
    per = {}
    for name in schema:
        per[name] = float(np.mean([r.values.get(name) == n.get(name) for r, n in zip(readings, named)]))
    exact = float(np.mean([r.values == n for r, n in zip(readings, named)]))
    return {"per_attribute": per, "mean": float(np.mean(list(per.values()))), "exact": exact}


def train_reader(out: str | Path, *, n_train: int = 20_000, n_test: int = 2_000, minutes: float = 5.0,
                 steps: int | None = None, batch_size: int = 128, lr: float = 2e-3, seed: int = 0, encoder=None,
                 token_drop: float = 0.0, split: str = "train", test_split: str = "eval",
                 progress: bool = True) -> Path:
    """Train the prompt reader on ``split`` captions (training phrasings) for ``minutes`` (or ``steps``,
    whichever comes first); score it on held-out phrasings (``test_split``, "eval"). ``token_drop``: the
    share of a caption's word pieces hidden from the reader at each step, so that it learns to read a
    value from any of the words that carry it and from their context, not from one token."""
    from rich.progress import track

    from pixelchat.data.scenes import SCHEMA
    from pixelchat.text.encoder import load_text_encoder
    from pixelchat.training.checkpoint import module_tensors, save_checkpoint

    torch.manual_seed(seed)
    encoder = encoder or load_text_encoder()
    schema = {k: list(v) for k, v in SCHEMA.items()}
    cfg = ReaderConfig(schema=schema, text_encoder=encoder.name, text_dim=encoder.dim)
    if not 0.0 <= token_drop < 0.9:
        raise ValueError("token_drop must be in [0, 0.9)")
    captions, named = caption_set(n_train, seed, split)
    labels = reading_labels(named, schema)
    tokens, masks = [], []
    for i in track(range(0, n_train, 512), description="encoding captions", disable=not progress, transient=True):
        enc = encoder.encode(captions[i:i + 512])
        tokens.append(enc.tokens.half()), masks.append(enc.mask)
    tokens, masks = torch.cat(tokens), torch.cat(masks)  # (N, T, D) fp16, (N, T)
    reader = PromptReader(cfg)
    opt = torch.optim.AdamW(reader.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    t0, step = time.time(), 0
    while time.time() - t0 < minutes * 60 and (steps is None or step < steps):
        idx = torch.randint(n_train, (batch_size,), generator=gen)
        mask = masks[idx]
        if token_drop > 0:
            keep = torch.rand(mask.shape, generator=gen) >= token_drop
            keep[:, 0] = True  # [CLS] stays, so that every caption keeps a token to attend to
            mask = mask * keep
        logits = reader(tokens[idx].float(), mask)
        loss = sum(F.cross_entropy(lg, labels[idx, k]) for k, lg in enumerate(logits)) / len(logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
    train_minutes = round((time.time() - t0) / 60, 2)
    reader.eval()
    test_captions, test_named = caption_set(n_test, seed + 1, test_split)
    scores = {
        "network": reader_scores(read_prompts(reader, encoder, test_captions, patterns=False), test_named, schema),
        "with_patterns": reader_scores(read_prompts(reader, encoder, test_captions), test_named, schema),
    }
    meta = {"kind": "prompt-reader", "prompt-reader": cfg.to_dict(),
            "training": {"n_train": n_train, "steps": step, "minutes": train_minutes,
                         "batch_size": batch_size, "lr": lr, "seed": seed, "split": split, "token_drop": token_drop},
            "text_encoder": {"name": encoder.name, "sha256": encoder.weights_sha256},
            "test": {"split": test_split, "n": n_test, **scores}}
    path = save_checkpoint(out, module_tensors("prompt-reader", reader, torch.float16), meta)
    if progress:
        print(json.dumps(meta["test"], indent=1))
    return path
