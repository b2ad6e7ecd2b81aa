"""Does reading a prompt phrase by phrase, against the training phrasings, read new wording better
than the shipped prompt reader (heads on MiniLM's token states, `pixelchat.text.reader`)?

Memory: every phrasing of the caption tables (pixelchat.data.captions) that ``--memory``'s split
uses, with what it states: a terrain phrasing with and without each snow adjective, a cloud
phrasing with and without each colour, and the templates' words and the generic subjects, which
state nothing. Reading: every span of up to ``--span`` words of the prompt is embedded alone by
MiniLM (its sentence embedding) and matched to its nearest memory phrasing by cosine similarity;
dynamic programming cuts the prompt into spans, maximising the sum over chosen spans of their
length times their similarity, where a word left out of every span counts ``--base``; each chosen
span states what its nearest phrasing states (the most similar span first, one value per attribute).

Choose settings with ``--memory fit --test tune`` (the training phrasings less the last of each list,
scored on those last ones); score the held-out phrasings (``--memory train --test eval``) only to
report. Both readers are scored on the same captions.

    python tune_phrase_reader.py --memory fit --test tune --base 0.5 0.65 0.75
    python tune_phrase_reader.py --memory train --test eval --base 0.65 --n 1000
"""

from __future__ import annotations

import argparse
import json
import re
import time

import torch

from _machine import machine

from pixelchat.data import captions as C
from pixelchat.data.scenes import SCHEMA
from pixelchat.text.encoder import TextEncoder
from pixelchat.text.reader import Reading, caption_set, load_reader, read_prompts, reader_scores

WORD = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def memory(split: str) -> list[tuple[str, dict[str, str]]]:
    """(phrase, what it states) for every phrasing ``split`` (train or fit) uses."""
    if split not in ("train", "fit"):
        raise ValueError(f"memory split must be train or fit, got {split!r}")
    pool = C.split_phrasings
    out = []
    adjectives = pool(C.SNOW_ADJ, split)
    for terrain, phrasings in C.TERRAIN.items():
        for p in pool(phrasings, split):
            out.append((p.replace("{snow}", ""), {"terrain": terrain}))
            out += [(p.replace("{snow}", a), {"terrain": terrain, "snow": "yes"}) for a in adjectives]
    for name, table in (("snow", C.SNOW), ("time", C.TIME), ("celestial", C.CELESTIAL), ("water", C.WATER),
                        ("trees", C.TREES), ("house", C.HOUSE), ("boat", C.BOAT)):
        for value, phrasings in table.items():
            out += [(p, {name: value}) for p in pool(phrasings, split)]
    for value, phrasings in C.CLOUDS.items():
        for p in pool(phrasings, split):
            out.append((p.replace("{c}", ""), {"clouds": value}))
            if value != "none":
                out += [(p.replace("{c}", c), {"clouds": value, "cloud_color": colour})
                        for colour, colours in C.CLOUD_COLOR.items() for c in pool(colours, split)]
    out += [(p, {"clouds": "many", "cloud_color": "gray"}) for p in pool(C.OVERCAST, split)]
    out += [(p, {}) for p in pool(C.GENERIC_SUBJECT, split)]
    for template in pool(C.TEMPLATES, split):
        out += [(part.strip(" ,"), {}) for part in re.split(r"\{\w+\}", template) if part.strip(" ,")]
    unique = {" ".join(words(p)): said for p, said in out}
    return list(unique.items())


class PhraseReader:
    def __init__(self, encoder, phrases: list[tuple[str, dict[str, str]]], span: int):
        """encoder: one whose cache holds every span read (the embeddings are unit vectors)."""
        self.encoder, self.phrases, self.span = encoder, phrases, span
        self.keys = encoder.embed([p for p, _ in phrases])

    @staticmethod
    def spans(longest: int, n: int) -> list[tuple[int, int]]:
        """Every (start, end) of up to ``longest`` of ``n`` words."""
        return [(i, j) for i in range(n) for j in range(i + 1, min(n, i + longest) + 1)]

    def read(self, prompt: str, base: float) -> Reading:
        w = words(prompt)
        spans = self.spans(self.span, len(w))
        if not spans:
            return Reading({})
        sim, nearest = (self.encoder.embed([" ".join(w[i:j]) for i, j in spans]) @ self.keys.T).max(1)
        score = {s: (float(c), int(k)) for s, c, k in zip(spans, sim, nearest)}
        best, back = [0.0] * (len(w) + 1), [(0, None)] * (len(w) + 1)
        for j in range(1, len(w) + 1):
            best[j], back[j] = best[j - 1] + base, (j - 1, None)
            for i in range(max(0, j - self.span), j):
                c, k = score[(i, j)]
                if best[i] + (j - i) * c > best[j]:
                    best[j], back[j] = best[i] + (j - i) * c, (i, k)
        chosen, j = [], len(w)
        while j > 0:
            i, k = back[j]
            if k is not None:
                chosen.append((score[(i, j)][0], k))
            j = i
        values, confidence = {}, {}
        for c, k in sorted(chosen, reverse=True):
            for name, value in self.phrases[k][1].items():
                if name not in values:
                    values[name], confidence[name] = value, round(c, 4)
        order = [k for k in SCHEMA if k in values]
        return Reading({k: values[k] for k in order}, {k: confidence[k] for k in order})


def row(name: str, scores: dict) -> str:
    per = " | ".join(f"{scores['per_attribute'][k]:.3f}" for k in SCHEMA)
    return f"| {name} | {per} | {scores['mean']:.3f} | {scores['exact']:.3f} |"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory", default="fit", choices=("fit", "train"))
    parser.add_argument("--test", default="tune", choices=("tune", "eval"))
    parser.add_argument("--base", type=float, nargs="+", default=[0.65])
    parser.add_argument("--span", type=int, default=6, help="longest span, in words")
    parser.add_argument("--n", type=int, default=2000, help="test captions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; {vars(args)}")
    phrases = memory(args.memory)
    captions, named = caption_set(args.n, 1, args.test)
    schema = {k: list(v) for k, v in SCHEMA.items()}
    spans = {" ".join(words(c)[i:j]) for c in captions for i, j in PhraseReader.spans(args.span, len(words(c)))}
    encoder = TextEncoder(cache_size=len(spans) + len(phrases))  # every span embedded once, then read from the cache
    t0 = time.perf_counter()
    reader = PhraseReader(encoder, phrases, args.span)
    encoder.embed(sorted(spans), batch_size=256)
    print(f"{len(phrases)} memory phrasings; {len(spans)} spans embedded in {time.perf_counter() - t0:.0f} s")
    head = "| reader | " + " | ".join(SCHEMA) + " | mean | exact |"
    print(head + "\n|" + "---|" * (len(SCHEMA) + 3))
    results = {"network": reader_scores(read_prompts(load_reader(), encoder, captions, patterns=False), named, schema)}
    # the shipped network trained on every training phrasing, the tune ones included: only eval is new to it
    print(row("attention network (shipped)" + ("" if args.test == "eval" else ", trained on these phrasings"),
              results["network"]))
    for base in args.base:
        results[f"phrases base {base}"] = reader_scores([reader.read(c, base) for c in captions], named, schema)
        print(row(f"phrases, base {base}", results[f"phrases base {base}"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": machine(), "scores": results}, f, indent=1)


if __name__ == "__main__":
    main()
