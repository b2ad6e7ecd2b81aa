"""Does tuning the text encoder's top layers help the prompt reader read wording it never saw?

The shipped reader is heads on the frozen MiniLM token states (`pixelchat.text.reader`). Here the top
``--layers`` of MiniLM's six layers are trained along with the heads (a copy of them; the lower
layers stay frozen and are run once over every caption), with the shipped recipe otherwise: AdamW,
heads at 2e-3, the encoder's layers at ``--lr``, batches of 64. As in tune_reader.py, each setting
trains on "fit" captions (the training phrasings less the last of each list) and is scored on "tune"
captions (only those last phrasings); ``--eval`` also scores the held-out eval phrasings, which
must not be used to choose.

    python tune_reader_layers.py --layers 0 2 --steps 600 [--eval]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from _machine import machine

from pixelchat.data.scenes import SCHEMA
from pixelchat.text.encoder import MAX_TOKENS, load_text_encoder
from pixelchat.text.reader import PromptReader, ReaderConfig, caption_set, reading_labels


def lower_states(encoder, captions: list[str], top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states after all but the top ``top`` layers (fp16), and the mask."""
    bert = encoder.model
    batch = encoder.tokenizer(captions, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    out = []
    with torch.inference_mode():
        for i in range(0, len(captions), 512):
            out.append(bert(ids[i:i + 512], mask[i:i + 512], layers=len(bert.encoder.layer) - top).half())
    return torch.cat(out), mask


def run(encoder, top: int, steps: int, lr: float, n_fit: int, n_score: int, with_eval: bool, seed: int = 0) -> dict:
    schema = {k: list(v) for k, v in SCHEMA.items()}
    torch.manual_seed(seed)
    sets = {"fit": caption_set(n_fit, seed, "fit"), "tune": caption_set(n_score, seed + 1, "tune")}
    if with_eval:
        sets["eval"] = caption_set(n_score, seed + 1, "eval")
    data = {k: (*lower_states(encoder, caps, top), reading_labels(named, schema)) for k, (caps, named) in sets.items()}
    layers = torch.nn.ModuleList(copy.deepcopy(l) for l in encoder.model.encoder.layer[len(encoder.model.encoder.layer) - top:])
    layers.requires_grad_(True)
    reader = PromptReader(ReaderConfig(schema=schema, text_encoder=encoder.name, text_dim=encoder.dim))
    groups = [{"params": reader.parameters(), "lr": 2e-3}] + ([{"params": layers.parameters(), "lr": lr}] if top else [])
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)

    def forward(x, mask):
        for layer in layers:
            x = layer(x, mask.bool())
        return reader(x, mask)

    x, mask, y = data["fit"]
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for _ in range(steps):
        idx = torch.randint(len(x), (64,), generator=gen)
        logits = forward(x[idx].float(), mask[idx])
        loss = sum(F.cross_entropy(lg, y[idx, k]) for k, lg in enumerate(logits)) / len(logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.time() - t0
    layers.eval(), reader.eval()
    scores = {}
    with torch.inference_mode():
        for name in [k for k in data if k != "fit"]:
            xs, ms, ys = data[name]
            logits = forward(xs.float(), ms)
            per = [float((lg.argmax(-1) == ys[:, k]).float().mean()) for k, lg in enumerate(logits)]
            scores[name] = {"per_attribute": dict(zip(schema, per)), "mean": sum(per) / len(per)}
    return {"layers": top, "steps": steps, "lr": lr, "train_seconds": round(seconds), **scores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 2], help="top encoder layers trained (0: the shipped design)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=5e-5, help="learning rate of the encoder's layers")
    ap.add_argument("--captions", type=int, default=16000)
    ap.add_argument("--n-score", type=int, default=1000)
    ap.add_argument("--eval", action="store_true", help="also score the held-out eval phrasings (never to choose by)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    encoder = load_text_encoder()
    print(f"machine: {machine()}")
    names = list(SCHEMA)
    splits = ["tune", "eval"] if args.eval else ["tune"]
    print("| layers trained | split | " + " | ".join(names) + " | mean | train s |")
    print("|---|---|" + "---|" * (len(names) + 2))
    for top in args.layers:
        r = run(encoder, top, args.steps, args.lr, args.captions, args.n_score, args.eval)
        for split in splits:
            cells = " | ".join(f"{r[split]['per_attribute'][k]:.3f}" for k in names)
            print(f"| {top} | {split} | {cells} | {r[split]['mean']:.3f} | {r['train_seconds']} |", flush=True)


if __name__ == "__main__":
    main()
