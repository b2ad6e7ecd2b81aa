"""The describer: image → caption, attributes with confidences, and a prompt that redraws it.

A small image encoder (four convolutional stages, 64 → 8 px) feeds two readers:
- attribute heads on the pooled features, one per `scenes` attribute, whose softmax gives the
  confidences;
- a transformer decoder (after "Show, Attend and Tell" and its transformer successors) that
  cross-attends to the 8×8 feature map and writes a natural caption word by word.

The prompt it hands back is the canonical phrasing of the attributes it read (`scene_prompt`),
the wording our generator was trained on. Trained on fresh `scenes` renders with captions that
name every visible attribute; it never sees the evaluation instrument's data or weights.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from pixelchat.data.captions import caption_scene, ordered_caption, scene_prompt
from pixelchat.data.scenes import SCHEMA, labels_to_attributes, observable, render_labelled
from pixelchat.models import prepack
from pixelchat.training.checkpoint import load_network, module_tensors, save_checkpoint
from pixelchat.text.instructions import find_mentions, normalise, read_attributes

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_DESCRIBER = WEIGHTS / "describer-scenes.safetensors"
# the self-check's reader of new pictures: a describer at width 12, a quarter of the describer's cost
DEFAULT_CHECKER = WEIGHTS / "checker-scenes.safetensors"
# Render seeds the describer trains and is tested on; disjoint from the generator's (0 …).
TRAIN_SEED = 70_000_000
TEST_SEED = 71_000_000
PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*|,")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def detokenize(words: list[str]) -> str:
    return " ".join(words).replace(" ,", ",")


CAPTION_ORDERS = ("fixed", "shuffled")


def full_caption(attributes: dict[str, str], rng: np.random.Generator, split: str = "train",
                 order: str = "fixed") -> str:
    """A caption naming every attribute the picture shows, in varied wording: in a fixed order
    (what greedy decoding reproduces best) or in the dataset captions' shuffled order."""
    shown = observable(attributes)
    if shown.get("water") == "none":
        shown.pop("boat", None)
    if order == "fixed":
        return ordered_caption(shown, rng, split)
    if order != "shuffled":
        raise ValueError(f"caption order must be one of {CAPTION_ORDERS}, got {order!r}")
    names = [n for n in shown if n != "cloud_color"]
    names += ["cloud_color"] if "cloud_color" in shown else []
    return caption_scene(_complete(shown), rng, split, names=names)[0]


def build_vocabulary(n: int = 4000, seed: int = 0) -> list[str]:
    """Every word the full captions use (all phrasings), sorted; the specials first."""
    from pixelchat.data.scenes import sample_attributes

    rng = np.random.default_rng(seed)
    words: set[str] = set()
    for _ in range(n):
        words.update(tokenize(full_caption(sample_attributes(rng), rng, "all")))
    return [*SPECIALS, *sorted(words)]


@dataclass
class DescriberConfig:
    size: int = 64
    width: int = 32  # channels of the first stage; doubled at each of the next two, then kept
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    max_words: int = 48
    schema: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in SCHEMA.items()})
    vocab: list[str] = field(default_factory=list)

    @property
    def feature_channels(self) -> int:
        return self.width * 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DescriberConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown describer config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def _down(cin: int, cout: int) -> nn.Sequential:
    """Stride-2 3×3 conv then a residual-free 3×3 conv, batch norm + SiLU after each."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU(inplace=True))


class Describer(nn.Module):
    def __init__(self, cfg: DescriberConfig):
        super().__init__()
        if len(cfg.vocab) <= len(SPECIALS) or tuple(cfg.vocab[:len(SPECIALS)]) != SPECIALS:
            raise ValueError("the describer's vocabulary must start with the special tokens and hold words")
        self.cfg = cfg
        w, c = cfg.width, cfg.feature_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.SiLU(inplace=True),  # 64 px
            _down(w, 2 * w), _down(2 * w, c), _down(c, c),  # 32, 16, 8 px
        )
        layers = [m for m in self.encoder.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        self._conv_bn = list(zip(layers[0::2], layers[1::2]))  # (conv, its batch norm): `encode_prepared`
        self.heads = nn.ModuleDict({name: nn.Linear(c, len(values)) for name, values in cfg.schema.items()})
        grid = (cfg.size // 8) ** 2
        self.memory_proj = nn.Linear(c, cfg.d_model)
        self.memory_pos = nn.Parameter(torch.zeros(1, grid, cfg.d_model))
        self.embed = nn.Embedding(len(cfg.vocab), cfg.d_model)
        self.word_pos = nn.Parameter(torch.zeros(1, cfg.max_words + 1, cfg.d_model))
        layer = nn.TransformerDecoderLayer(cfg.d_model, cfg.heads, 2 * cfg.d_model, dropout=0.1, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.layers)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.to_word = nn.Linear(cfg.d_model, len(cfg.vocab))
        nn.init.normal_(self.memory_pos, std=0.02)
        nn.init.normal_(self.word_pos, std=0.02)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] (or uint8) at any square size → the describer's input size."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
        x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
        if x.shape[-2:] != (self.cfg.size, self.cfg.size):
            x = F.interpolate(x, size=(self.cfg.size, self.cfg.size), mode="bilinear", antialias=True,
                              align_corners=False)
        return x.contiguous(memory_format=torch.channels_last)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Feature map (B, C, 8, 8)."""
        x = self.prepare(images)
        if self.training or not prepack.inference():
            return self.encoder(x)
        return self.encode_prepared(x)

    def encode_prepared(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder in inference: each batch norm folded into the convolution before it (kept while the
        weights are unchanged); for a few pictures the weights prepacked and the SiLU computed by the
        convolution (`pixelchat.models.prepack`). Same function as ``self.encoder`` in eval mode, float
        rounding aside."""
        for conv, bn in self._conv_bn:
            params = [conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var]
            weight, bias = prepack.derived(conv, "bn", params, lambda: fuse_conv_bn_weights(
                conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias))
            x = prepack.conv2d(conv, "bn", x, weight, bias, stride=conv.stride[0], padding=conv.padding[0],
                               activation="swish")
        return x

    def attribute_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = features.mean(dim=(2, 3))
        return {name: head(pooled) for name, head in self.heads.items()}

    def memory(self, features: torch.Tensor) -> torch.Tensor:
        return self.memory_proj(features.flatten(2).transpose(1, 2)) + self.memory_pos  # (B, 64, d)

    def word_logits(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Next-word logits (B, T, V) for token prefixes (B, T) starting with <bos>."""
        t = tokens.shape[1]
        x = self.embed(tokens) * math.sqrt(self.cfg.d_model) + self.word_pos[:, :t]
        causal = torch.ones((t, t), dtype=torch.bool).triu(1)  # True: may not attend
        pad = tokens == 0
        h = self.decoder(x, memory, tgt_mask=causal, tgt_key_padding_mask=pad, tgt_is_causal=True)
        return self.to_word(self.norm(h))

    @torch.no_grad()
    def caption(self, memory: torch.Tensor, no_repeat: int = 4) -> list[str]:
        """Greedy decoding, all images at once. No ``no_repeat``-word sequence is written twice
        (as ``no_repeat_ngram_size`` in common text generators): on pictures unlike its training
        renders the decoder would otherwise sometimes repeat a phrase."""
        b = memory.shape[0]
        vocab = self.cfg.vocab
        tokens = torch.full((b, 1), vocab.index(BOS), dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool)
        eos = vocab.index(EOS)
        for _ in range(self.cfg.max_words):
            logits = self.word_logits(memory, tokens)[:, -1]
            if no_repeat and tokens.shape[1] >= no_repeat:
                for i, row in enumerate(tokens.tolist()):
                    prefix = tuple(row[len(row) - no_repeat + 1:])
                    for j in range(len(row) - no_repeat + 1):
                        if tuple(row[j:j + no_repeat - 1]) == prefix:
                            logits[i, row[j + no_repeat - 1]] = float("-inf")
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done |= nxt == eos
            if done.all():
                break
        out = []
        for row in tokens[:, 1:].tolist():
            words = []
            for k in row:
                if k in (0, eos):
                    break
                words.append(vocab[k])
            out.append(detokenize(words))
        return out


@dataclass
class Description:
    caption: str  # natural language, written by the decoder
    attributes: dict[str, str]  # read by the attribute heads (a cloud colour only where there are clouds)
    confidence: dict[str, float]  # softmax probability of each reading
    prompt: str  # a prompt that redraws a similar picture with our generator
    # does the picture look like the scenes the describer knows (renders and generated pictures)? None:
    # the describer has no familiarity statistics; novelty: distance from them, 1.0 at the threshold
    familiar: bool | None = None
    novelty: float | None = None

    def to_dict(self) -> dict:
        out = {"caption": self.caption, "attributes": self.attributes,
               "confidence": {k: round(v, 4) for k, v in self.confidence.items()}, "prompt": self.prompt}
        if self.familiar is not None:
            out |= {"familiar": self.familiar, "novelty": self.novelty}
        return out


def load_describer(path: str | Path | None = None, *, familiarity: bool = True) -> Describer:
    """The describer from a checkpoint (the shipped one by default), in eval mode, with its familiarity
    statistics where they lie beside it (``<name>-familiarity.safetensors``) and ``familiarity`` is asked."""
    path = Path(path or DEFAULT_DESCRIBER)
    describer = load_network(path, "describer", lambda c: Describer(DescriberConfig.from_dict(c)))
    stats = familiarity_path(path)
    describer.familiarity = Familiarity.load(stats) if familiarity and stats.with_suffix(".safetensors").is_file() else None
    return describer


# --- familiarity: does a picture look like what the describer was made for? --------------------

FAMILIARITY_QUANTILE = 0.995  # of held-out familiar pictures under the threshold
UNFAMILIAR = ("this picture does not look like the scenes the describer knows (a photo, a drawing or a "
              "restyled picture reads unreliably), so its reading means little")


def familiarity_path(describer_path: str | Path) -> Path:
    weights = Path(describer_path)
    stem = weights.name[:-len(".safetensors")] if weights.name.endswith(".safetensors") else weights.name
    return weights.with_name(f"{stem}-familiarity.safetensors")


def familiarity_features(features: torch.Tensor) -> torch.Tensor:
    """(B, C, 8, 8) describer features → (B, 2C): each channel's mean and spread over the picture."""
    return torch.cat([features.mean((2, 3)), features.std((2, 3))], 1).double()


@dataclass
class Familiarity:
    """The Mahalanobis distance of a picture's describer features (`familiarity_features`) from those of
    scenes renders and generated pictures; at most ``threshold`` (the `FAMILIARITY_QUANTILE` of held-out
    familiar pictures) is familiar. A picture far from them (a photo, a drawing, noise) gets attributes
    all the same (the heads always pick a value), and they mean little."""

    mean: torch.Tensor  # (D,)
    precision: torch.Tensor  # (D, D)
    threshold: float

    def novelty(self, features: torch.Tensor) -> torch.Tensor:
        """(B,) distance over the threshold: above 1, unfamiliar."""
        f = familiarity_features(features) - self.mean
        return ((f @ self.precision) * f).sum(1) / self.threshold

    def save(self, path: str | Path, meta: dict) -> Path:
        from pixelchat.training.checkpoint import save_checkpoint

        return save_checkpoint(path, {"mean": self.mean.float(), "precision": self.precision.float()},
                               {"kind": "describer-familiarity", "threshold": self.threshold, **meta})

    @classmethod
    def load(cls, path: str | Path) -> "Familiarity":
        from pixelchat.training.checkpoint import CheckpointError, load_checkpoint

        ckpt = load_checkpoint(path)
        try:
            if ckpt.config.get("kind") != "describer-familiarity":
                raise ValueError(f"kind {ckpt.config.get('kind')!r}")
            mean, precision = ckpt.tensors["mean"].double(), ckpt.tensors["precision"].double()
            if mean.ndim != 1 or precision.shape != (len(mean), len(mean)):
                raise ValueError("mean and precision do not fit each other")
            return cls(mean, precision, float(ckpt.config["threshold"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path} is not a describer's familiarity statistics: {e}") from e


@torch.inference_mode()
def fit_familiarity(describer: Describer, fit: torch.Tensor, calibrate: torch.Tensor,
                    quantile: float = FAMILIARITY_QUANTILE, ridge: float = 1e-3) -> Familiarity:
    """Statistics of familiar pictures (B, 3, H, W): mean and (ridge-regularised) precision of ``fit``'s
    features, and the threshold at ``quantile`` of ``calibrate``'s distances (other pictures than ``fit``)."""
    feats = torch.cat([familiarity_features(describer.encode(fit[i:i + 256])) for i in range(0, len(fit), 256)])
    mean = feats.mean(0)
    cov = torch.cov(feats.T) + ridge * torch.eye(feats.shape[1], dtype=torch.float64)
    stats = Familiarity(mean, torch.linalg.inv(cov), 1.0)
    dist = torch.cat([stats.novelty(describer.encode(calibrate[i:i + 256])) for i in range(0, len(calibrate), 256)])
    stats.threshold = float(torch.quantile(dist, quantile))
    return stats


@torch.inference_mode()
def attribute_probabilities(describer: Describer, images: torch.Tensor, heads=None) -> dict[str, torch.Tensor]:
    """Per attribute, (B, values) probabilities; images (B, 3, H, W) uint8 or in [-1, 1]. ``heads``: what runs
    `AttributeHeads` of this describer (an inference runtime's prepared network; None: the module itself)."""
    if heads is None:
        return {k: v.softmax(-1) for k, v in describer.attribute_logits(describer.encode(images)).items()}
    probs = heads(describer.prepare(images).contiguous())
    return dict(zip(describer.cfg.schema, probs.split([len(v) for v in describer.cfg.schema.values()], dim=1)))


class AttributeHeads(nn.Module):
    """The describer's attribute reading as one network of one input and one output, for the inference
    runtimes: prepared pictures (B, 3, size, size) in [-1, 1] → the heads' probabilities side by side
    (B, Σ values, attributes in schema order)."""

    def __init__(self, describer: Describer):
        super().__init__()
        self.describer = describer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.describer.attribute_logits(self.describer.encoder(x))
        return torch.cat([v.softmax(-1) for v in logits.values()], dim=1)


def weights_key(module: nn.Module) -> str:
    """16 hex digits naming a network's weights (its parameters and buffers), for caches of derived graphs."""
    import hashlib

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.inference_mode()
def describe_images(describer: Describer, images: torch.Tensor, *, captions: bool = True,
                    batch_size: int = 256, consistent: bool = True) -> list[Description]:
    """Descriptions of (B, 3, H, W) images (uint8, or floats in [-1, 1]). consistent: a written
    caption that contradicts the attribute heads is replaced by the heads' sentence (False: the
    decoder's caption as written, for measuring the decoder)."""
    out: list[Description] = []
    for i in range(0, len(images), batch_size):
        feats = describer.encode(images[i:i + batch_size])
        probs = {k: v.softmax(-1) for k, v in describer.attribute_logits(feats).items()}
        stats = getattr(describer, "familiarity", None)
        familiarity = stats.novelty(feats) if stats is not None else None
        texts = describer.caption(describer.memory(feats)) if captions else [""] * len(feats)
        for j, text in enumerate(texts):
            attrs, conf = {}, {}
            for name, p in probs.items():
                k = int(p[j].argmax())
                attrs[name], conf[name] = describer.cfg.schema[name][k], float(p[j, k])
            attrs, conf = _consistent_sky(attrs, conf, probs, describer.cfg.schema, j)
            shown = observable(attrs)
            if shown.get("water") == "none":
                shown.pop("boat", None)
            prompt = scene_prompt(shown)
            novelty = float(familiarity[j]) if familiarity is not None else None
            # one reading: a caption that names a value the attribute heads did not read, or names one
            # thing twice ("with a dark cloud, with a few gray clouds"), is replaced by the sentence the
            # heads' reading makes
            said = read_attributes(text) if text else {}
            if consistent and captions and (any(shown.get(k, "none" if k != "boat" else "no") != v
                                                for k, v in said.items() if k in attrs) or _repeats(text)):
                text = prompt
            out.append(Description(text, shown, {k: conf[k] for k in shown}, prompt,
                                   None if novelty is None else novelty <= 1.0,
                                   None if novelty is None else round(novelty, 3)))
    return out


def _repeats(text: str) -> bool:
    """Does ``text`` name one attribute in two separate places?"""
    names = [name for _, _, name, _ in find_mentions(normalise(text))]
    return len(names) != len(set(names))


def _consistent_sky(attrs: dict, conf: dict, probs: dict, schema: dict, j: int) -> tuple[dict, dict]:
    """The likeliest (time, celestial) pair the schema allows: no sun at night, no moon by day."""
    if "time" not in probs or "celestial" not in probs:
        return attrs, conf
    allowed = {"day": ("sun", "none"), "sunset": ("sun", "none"), "night": ("moon", "none")}
    pt, pc = probs["time"][j], probs["celestial"][j]
    best = max(((t, c) for t, cs in allowed.items() for c in cs if t in schema["time"] and c in schema["celestial"]),
               key=lambda tc: float(pt[schema["time"].index(tc[0])] * pc[schema["celestial"].index(tc[1])]))
    attrs, conf = dict(attrs), dict(conf)
    for name, value, p in (("time", best[0], pt), ("celestial", best[1], pc)):
        attrs[name], conf[name] = value, float(p[schema[name].index(value)])
    return attrs, conf


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image → (1, 3, H, W) uint8, centre-cropped to a square."""
    from pixelchat.data.dataset import pil_to_uint8, to_square_rgb

    w, h = image.size
    return pil_to_uint8(to_square_rgb(image, min(w, h)))[None]


# --- training ----------------------------------------------------------------------------


def encode_captions(captions: list[str], vocab: list[str], max_words: int) -> torch.Tensor:
    """(N, max_words + 2) token ids: <bos> words <eos>, padded with 0."""
    index = {w: i for i, w in enumerate(vocab)}
    out = torch.zeros((len(captions), max_words + 2), dtype=torch.long)
    for i, text in enumerate(captions):
        ids = [index[BOS], *[index.get(w, index[UNK]) for w in tokenize(text)][:max_words], index[EOS]]
        out[i, :len(ids)] = torch.tensor(ids)
    return out


def masked_ce(logits: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Mean over attributes of the cross-entropy where the label is known (-1 = unknown)."""
    losses = [F.cross_entropy(out, labels[:, k], ignore_index=-1) for k, out in enumerate(logits.values())
              if (labels[:, k] >= 0).any()]
    return torch.stack(losses).mean()


def score(describer: Describer, images: torch.Tensor, labels: torch.Tensor, *, captions: bool = True) -> dict:
    """Held-out accuracy per attribute of the heads, and of the written caption as read back by the
    prompt reader (an attribute the caption leaves out counts as wrong)."""
    from pixelchat.text.instructions import read_attributes

    describer.eval()
    descs = describe_images(describer, images, captions=captions, consistent=False)
    names = list(SCHEMA)
    heads = {n: [0, 0] for n in names}
    written = {n: [0, 0] for n in names}
    for d, row in zip(descs, labels.tolist()):
        truth = labels_to_attributes(row)
        if truth.get("water") == "none":
            truth.pop("boat", None)
        said = read_attributes(d.caption) if captions else {}
        for name, value in truth.items():
            heads[name][0] += d.attributes.get(name) == value
            heads[name][1] += 1
            written[name][0] += said.get(name) == value
            written[name][1] += 1
    report = {"heads": {n: round(c / t, 4) for n, (c, t) in heads.items() if t}}
    if captions:
        report["caption"] = {n: round(c / t, 4) for n, (c, t) in written.items() if t}
        report["caption_exact"] = round(float(np.mean([
            read_attributes(d.caption) == {k: v for k, v in labels_to_attributes(r).items()
                                           if not (k == "boat" and labels_to_attributes(r).get("water") == "none")}
            for d, r in zip(descs, labels.tolist())])), 4)
    return report


def train_describer(out: str | Path, *, n_train: int = 30_000, n_test: int = 2_000, minutes: float = 20.0,
                    batch_size: int = 96, lr: float = 1e-3, cfg: DescriberConfig | None = None, seed: int = 0,
                    captions_per_image: int = 4, init: str | Path | None = None, caption_order: str = "fixed",
                    progress: bool = True, console=None) -> Path:
    """Train on fresh renders for a wall-clock budget (cosine schedule over it) and write
    ``out``.safetensors/.json with the held-out accuracy in the config. ``init``: a describer
    checkpoint to continue from (its config is kept)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from pixelchat.training.augment import robustness_augment

    console = console or Console(stderr=True)
    start = load_describer(init) if init else None
    cfg = start.cfg if start is not None else (cfg or DescriberConfig())
    if not cfg.vocab:
        cfg.vocab = build_vocabulary()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, labels = render_labelled(n_train, TRAIN_SEED, cfg.size, progress)
    rng = np.random.default_rng(seed)
    attrs = [labels_to_attributes(row) for row in labels.tolist()]
    texts = [full_caption(a, rng, order=caption_order) for a in attrs for _ in range(captions_per_image)]
    tokens = encode_captions(texts, cfg.vocab, cfg.max_words).view(n_train, captions_per_image, -1)
    model = start.float() if start is not None else Describer(cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    budget = minutes * 60
    t0, step = time.time(), 0
    columns = [TextColumn("[bold]training the describer"), BarColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not (progress and console.is_terminal)) as bar:
        task = bar.add_task("describer", total=budget, info="")
        while (elapsed := time.time() - t0) < budget:
            warm = min(1.0, (step + 1) / 100)
            for g in opt.param_groups:
                g["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * min(elapsed / budget, 1.0)))
            model.train()
            idx = torch.randint(n_train, (batch_size,), generator=gen)
            pick = torch.randint(captions_per_image, (batch_size,), generator=gen)
            tok = tokens[idx, pick]
            tok = tok[:, : int((tok > 0).sum(1).max())]
            x = robustness_augment(images[idx].float() / 127.5 - 1, gen)
            feats = model.encode(x)
            attr_loss = masked_ce(model.attribute_logits(feats), labels[idx])
            logits = model.word_logits(model.memory(feats), tok[:, :-1])
            word_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok[:, 1:].reshape(-1), ignore_index=0)
            loss = attr_loss + word_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if step % 10 == 0:
                info = f"step {step} attributes {attr_loss.item():.3f} words {word_loss.item():.3f}"
                bar.update(task, completed=min(elapsed, budget), info=info)
                if not console.is_terminal and step % 100 == 0:
                    console.log(f"{info} {step * batch_size / elapsed:.0f} img/s")
    model.eval()
    tensors = module_tensors("describer", model, torch.float16)
    config = {"kind": "describer", "describer": cfg.to_dict(), "steps": step, "batch_size": batch_size,
              "train_seconds": round(time.time() - t0, 1), "train_images": n_train, "train_seeds": TRAIN_SEED,
              "captions_per_image": captions_per_image, "caption_order": caption_order, "lr": lr,
              "init": str(init) if init else None, "threads": torch.get_num_threads()}
    path = save_checkpoint(out, tensors, config)  # written before scoring: the training is never lost
    test_images, test_labels = render_labelled(n_test, TEST_SEED, cfg.size, progress)
    model = load_describer(path)  # scored as shipped (fp16 weights)
    config.update(test_images=n_test, test_seeds=TEST_SEED, test_accuracy=score(model, test_images, test_labels))
    path = save_checkpoint(out, tensors, config)
    console.log(config["test_accuracy"])
    return path


def _complete(attributes: dict[str, str]) -> dict[str, str]:
    a = dict(attributes)
    a.setdefault("cloud_color", "white")
    return a
