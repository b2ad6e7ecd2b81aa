"""A BERT encoder in plain torch, for the sentence encoder's start-up time.

`transformers` spends about 4 s of CPU importing its BERT (its model code pulls in
torch.distributed, torch._dynamo and its generation utilities) before a 22 M-parameter MiniLM can
embed one prompt; every `pixelchat generate` paid it. This module is the same network (Devlin et
al. 2019, "BERT", §3; the post-LayerNorm Transformer of Vaswani et al. 2017) with the parameter
names of `transformers.BertModel`, so a checkpoint's safetensors load as they are and the
weights hash the same; the tokenizer is the checkpoint's own `tokenizer.json` read by `tokenizers`.
`pixelchat.text.encoder` uses it for a local BERT checkpoint and `transformers` for anything else;
tests/test_text.py checks that both give the same states.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_file(cls, path: Path) -> "BertConfig":
        raw = json.loads(path.read_text())
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


def supported(path: str | Path) -> bool:
    """Whether ``path`` is a local checkpoint this module runs: a BERT with absolute positions and the
    exact GELU, its weights in model.safetensors and a tokenizer.json beside them."""
    path = Path(path)
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (raw.get("model_type") == "bert" and raw.get("hidden_act") == "gelu"
            and raw.get("position_embedding_type", "absolute") == "absolute"
            and (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file())


class Linear(nn.Linear):
    """A linear layer left uninitialised: the checkpoint's weights replace whatever it starts with, and
    drawing 22 M random numbers cost about a tenth of a second of every start-up."""

    def reset_parameters(self) -> None:
        pass


class Embedding(nn.Embedding):
    """An embedding table left uninitialised, as `Linear`."""

    def reset_parameters(self) -> None:
        pass


class Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)[None]  # (1, T)
        x = self.word_embeddings(ids) + self.token_type_embeddings(types) + self.position_embeddings(positions)
        return self.LayerNorm(x)  # (B, T, D)


class SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query = Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        split = lambda t: t.view(B, T, self.heads, D // self.heads).transpose(1, 2)  # noqa: E731  (B, H, T, D/H)
        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                             attn_mask=keep[:, None, None, :])  # padding is never attended to
        return out.transpose(1, 2).reshape(B, T, D)


class DenseNorm(nn.Module):
    """dense → residual → LayerNorm: the output of attention and of the feed-forward block."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__()
        self.dense = Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = DenseNorm(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, keep), x)


class Intermediate(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # the exact (erf) GELU, BERT's "gelu"


class Layer(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = DenseNorm(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, keep)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))


class Pooler(nn.Module):  # unused by sentence embeddings; kept so the weights load and hash as they are
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.hidden_size)


class Bert(nn.Module):
    """Token ids (B, T) and attention mask (B, T) → last hidden states (B, T, D)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.pooler = Pooler(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, layers: int | None = None) -> torch.Tensor:
        """layers: run only the first so many layers (default: all), for whoever trains the rest."""
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        x = self.embeddings(input_ids, types)
        keep = attention_mask.bool()
        for layer in self.encoder.layer[:layers]:
            x = layer(x, keep)
        return x


def load_bert(path: str | Path, device: str = "cpu") -> tuple[Bert, "BertTokenizer"]:
    """The network and tokenizer of the local checkpoint ``path`` (see `supported`)."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = BertConfig.from_file(path / "config.json")
    model = Bert(cfg)  # uninitialised (see `Linear`); load_state_dict below fills every parameter
    state = {k: v for k, v in load_file(path / "model.safetensors").items() if not k.endswith("position_ids")}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().to(device), BertTokenizer(path / "tokenizer.json")


class BertTokenizer:
    """The checkpoint's tokenizer.json, called as `transformers` tokenizers are: a batch of texts →
    input_ids, token_type_ids and attention_mask tensors, padded to the longest, cut at ``max_length``."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def __call__(self, texts: list[str], *, max_length: int = 512, **_) -> "Batch":
        self.tokenizer.enable_truncation(max_length)  # counts [CLS] and [SEP], as transformers does
        rows = self.tokenizer.encode_batch(texts)
        T = max(len(e.ids) for e in rows)
        ids, types, mask = (torch.zeros(len(rows), T, dtype=torch.long) for _ in range(3))
        for i, e in enumerate(rows):
            n = len(e.ids)
            ids[i, :n] = torch.tensor(e.ids)
            types[i, :n] = torch.tensor(e.type_ids)
            mask[i, :n] = 1
        return Batch(input_ids=ids, token_type_ids=types, attention_mask=mask)


    def offsets(self, texts: list[str], *, max_length: int = 512) -> list[list[tuple[int, int]]]:
        self.tokenizer.enable_truncation(max_length)
        return [list(e.offsets) for e in self.tokenizer.encode_batch(texts)]


class Batch(dict):
    def to(self, device) -> "Batch":
        return Batch({k: v.to(device) for k, v in self.items()})

