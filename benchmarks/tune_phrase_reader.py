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

``--top k``: a span's likeness to a statement is the mean of its k highest similarities to the
phrasings that state it (1: its nearest phrasing). ``--combine f``: also each phrase reading with the
attention network's, phrases where their likeness is at least f and the network elsewhere. With the
"fit" memory the network compared is trained on the fit phrasings too (the shipped recipe, 331 steps).

Choose settings with ``--memory fit --test tune`` (the training phrasings less the last of each list,
scored on those last ones); score the held-out phrasings (``--memory train --test eval``) only to
report. Both readers are scored on the same captions.

    python tune_phrase_reader.py --memory fit --test tune --base 0.5 0.65 0.75
    python tune_phrase_reader.py --memory fit --test tune --base 0.5 0.65 --top 1 2 3 --combine 0.6 0.7 0.8 --n 1000
    python tune_phrase_reader.py --memory train --test eval --base 0.65 --n 1000
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time

import torch

from _machine import machine

from pixelchat.data import captions as C
from pixelchat.data.scenes import SCHEMA
from pixelchat.text.encoder import TextEncoder
from pixelchat.text.reader import Reading, caption_set, load_reader, read_prompts, reader_scores, train_reader

WORD = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def memory(split: str) -> list[tuple[str, dict[str, str]]]:
    """(phrase, what it states) for every phrasing ``split`` (train or fit) uses."""
    return C.phrasing_statements(split)


class PhraseReader:
    def __init__(self, encoder, phrases: list[tuple[str, dict[str, str]]], span: int, top: int = 1):
        """encoder: one whose cache holds every span read (the embeddings are unit vectors). top: a span's
        likeness to a statement is the mean of its ``top`` highest similarities to the phrasings that state
        exactly that (1: its nearest phrasing)."""
        self.encoder, self.span, self.top = encoder, span, top
        self.keys = encoder.embed([p for p, _ in phrases])
        groups: dict[tuple, list[int]] = {}
        for k, (_, said) in enumerate(phrases):
            groups.setdefault(tuple(sorted(said.items())), []).append(k)
        self.phrases = [(None, dict(key)) for key in groups]  # one entry per statement
        self.groups = list(groups.values())

    def likeness(self, sim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(spans, phrasings) similarities → each span's best statement: (likeness, index)."""
        per = torch.stack([sim[:, g].topk(min(self.top, len(g)), dim=1).values.mean(1) for g in self.groups], 1)
        return per.max(1)

    @staticmethod
    def spans(longest: int, n: int) -> list[tuple[int, int]]:
        """Every (start, end) of up to ``longest`` of ``n`` words."""
        return [(i, j) for i in range(n) for j in range(i + 1, min(n, i + longest) + 1)]

    def read(self, prompt: str, base: float) -> Reading:
        w = words(prompt)
        spans = self.spans(self.span, len(w))
        if not spans:
            return Reading({})
        sim, nearest = self.likeness(self.encoder.embed([" ".join(w[i:j]) for i, j in spans]) @ self.keys.T)
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


def combine(network: Reading, phrases: Reading, floor: float) -> Reading:
    """Per attribute: the phrase reading where its likeness is at least ``floor``, else the network's."""
    values, confidence = {}, {}
    for name in SCHEMA:
        if name in phrases.values and phrases.confidence[name] >= floor:
            values[name], confidence[name] = phrases.values[name], phrases.confidence[name]
        elif name in network.values:
            values[name], confidence[name] = network.values[name], network.confidence[name]
    return Reading(values, confidence)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory", default="fit", choices=("fit", "train"))
    parser.add_argument("--test", default="tune", choices=("tune", "eval"))
    parser.add_argument("--base", type=float, nargs="+", default=[0.65])
    parser.add_argument("--top", type=int, nargs="+", default=[1],
                        help="likeness to a statement: mean of the top k similarities to its phrasings")
    parser.add_argument("--combine", type=float, nargs="*", default=[],
                        help="also each phrase reading combined with the network's: phrases where their likeness "
                             "is at least this, the network elsewhere")
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
    readers = {top: PhraseReader(encoder, phrases, args.span, top) for top in args.top}
    encoder.embed(sorted(spans), batch_size=256)
    print(f"{len(phrases)} memory phrasings; {len(spans)} spans embedded in {time.perf_counter() - t0:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory == "fit":  # the network learns from the same phrasings as the memory holds
            network = load_reader(train_reader(f"{tmp}/fit", n_train=16000, n_test=10, steps=331, minutes=600,
                                               split="fit", test_split="tune", progress=False))
            label = "attention network trained on the fit phrasings"
        else:
            network, label = load_reader(), "attention network (shipped)"
        net = read_prompts(network, encoder, captions, patterns=False)
    head = "| reader | " + " | ".join(SCHEMA) + " | mean | exact |"
    print(head + "\n|" + "---|" * (len(SCHEMA) + 3))
    results = {"network": reader_scores(net, named, schema)}
    print(row(label, results["network"]), flush=True)
    for top in args.top:
        for base in args.base:
            readings = [readers[top].read(c, base) for c in captions]
            name = f"phrases, top {top}, base {base}"
            results[name] = reader_scores(readings, named, schema)
            print(row(name, results[name]), flush=True)
            for floor in args.combine:
                name = f"phrases (top {top}, base {base}) where likeness >= {floor}, else the network"
                results[name] = reader_scores([combine(a, b, floor) for a, b in zip(net, readings)], named, schema)
                print(row(name, results[name]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": machine(), "scores": results}, f, indent=1)


if __name__ == "__main__":
    main()
