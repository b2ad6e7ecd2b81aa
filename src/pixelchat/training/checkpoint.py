"""Checkpoints: a safetensors file of weights plus a JSON file that fully describes them.

``NAME.safetensors`` holds tensors only (never pickles); ``NAME.json`` holds the model config,
the text encoder it was trained with, the training options and the safetensors file's sha256,
checked on load. A path may name either file, their common stem, or a directory holding
``model.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "pixelchat-gan"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")  # torch's pickle formats: loading one can run code
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # a Hugging Face repository: owner/name


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not fit what it is loaded into."""


def folder_or_hub(model: str | os.PathLike, *, what: str, check: Callable[[Path], object],
                  fetch: Callable[[str], str | os.PathLike], single_file: Callable[[Path], str]) -> tuple[Path, str | None]:
    """The local folder of a pretrained model named by a folder or a hub id ("owner/name"), checked by
    ``check``, and the hub id when it came from the hub (``fetch(name)`` downloads it and returns its
    folder). ``what`` names such a folder in errors ("pipeline folder"); ``single_file(path)`` is the
    error for a path to one file."""
    path = Path(model).expanduser()
    if path.is_file():
        raise CheckpointError(single_file(path))
    if path.is_dir():
        check(path)
        return path.resolve(), None
    name = str(model)
    if not HUB_ID.match(name):
        raise CheckpointError(f"no {what} at {path}, and {name!r} is not a hub id (owner/name)")
    try:
        folder = Path(fetch(name))
    except Exception as e:  # network, authentication, missing repository or files: all say the same to the user
        reason = (str(e).splitlines() or [type(e).__name__])[0].split(" Please check out the root cause")[0]
        raise CheckpointError(f"could not fetch {name!r} from the Hugging Face hub ({reason}); with no network, "
                              f"download it elsewhere (hf download {name}) and pass the folder") from None
    check(folder)
    return folder, name


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    config: dict
    path: Path  # the .safetensors file
    sha256: str


def checkpoint_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, config) paths for what the user named."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "model.safetensors"
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """Write both files atomically (temporary name, then rename), weights first."""
    weights, meta = checkpoint_files(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(weights.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, **config, "sha256": file_sha256(tmp)}
    os.replace(tmp, weights)
    tmp_meta = meta.with_name(meta.name + ".tmp")
    tmp_meta.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp_meta, meta)
    return weights


def checkpoint_arch(path: str | os.PathLike) -> str | None:
    """The architecture a generator checkpoint's config names (without reading its weights), or None."""
    try:
        config = json.loads(checkpoint_files(path)[1].read_text())
        return config["model"]["arch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    weights, meta = checkpoint_files(path)
    if not weights.is_file():
        raise CheckpointError(f"no checkpoint at {path}: {weights} does not exist")
    if not meta.is_file():
        raise CheckpointError(f"checkpoint {weights} has no config file {meta.name} beside it")
    try:
        config = json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint config {meta} is not valid JSON: {e}") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{meta} is not a pixelchat checkpoint config (format {FORMAT!r} expected)")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{meta} was written by a newer pixelchat (format version {config['format_version']})")
    sha = file_sha256(weights)
    if config.get("sha256") and config["sha256"] != sha:
        raise CheckpointError(f"checkpoint {weights} is corrupt or does not belong to {meta.name} (sha256 mismatch)")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {weights} is corrupt: {e}") from e
    return Checkpoint(tensors, config, weights, sha)


def module_tensors(prefix: str, module: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": (v.to(dtype) if dtype and v.is_floating_point() else v)
            for k, v in module.state_dict().items()}


def load_module(module: torch.nn.Module, ckpt: Checkpoint, prefix: str) -> None:
    """Load ``prefix.*`` tensors into ``module``, in its own dtype; shape or name mismatches are errors."""
    own = module.state_dict()
    state = {k[len(prefix) + 1:]: v for k, v in ckpt.tensors.items() if k.startswith(prefix + ".")}
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit the network: "
                              f"{len(missing)} missing and {len(unexpected)} unexpected tensors under {prefix!r}")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise CheckpointError(f"checkpoint {ckpt.path}: {prefix}.{k} has shape {tuple(v.shape)}, "
                                  f"the network expects {tuple(own[k].shape)}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def load_network(path: str | os.PathLike, kind: str, build) -> torch.nn.Module:
    """A network saved as ``kind`` (its config under ``config[kind]``, its tensors under ``kind.*``):
    ``build(config)`` makes it; returned in eval mode, channels_last. A checkpoint of another kind
    or with an unusable config is a CheckpointError."""
    ckpt = load_checkpoint(path)
    if ckpt.config.get("kind") != kind:
        raise CheckpointError(f"{path} is not a {kind} checkpoint (kind={ckpt.config.get('kind')!r})")
    try:
        module = build(ckpt.config[kind])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has an invalid {kind} config: {e}") from e
    load_module(module, ckpt, kind)
    return module.eval().to(memory_format=torch.channels_last)


def load_generator(path: str | os.PathLike):
    """A generator checkpoint's EMA generator (eval mode, channels_last, no gradients), its ModelConfig
    and the checkpoint itself."""
    from pixelchat.models import ModelConfig, build_generator

    ckpt = load_checkpoint(path)
    try:
        cfg = ModelConfig.from_dict(ckpt.config["model"])
        generator = build_generator(cfg).eval()
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {ckpt.path} has an invalid config: {e}") from e
    load_module(generator, ckpt, "G_ema")
    generator = generator.to(memory_format=torch.channels_last)
    generator.requires_grad_(False)
    return generator, cfg, ckpt


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """Flatten an optimizer's state into tensors (for safetensors) and its param groups (for JSON)."""
    sd = opt.state_dict()
    tensors = {f"{prefix}.{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v))
               for i, s in sd["state"].items() for k, v in s.items()}
    return tensors, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, ckpt: Checkpoint, prefix: str, param_groups: list) -> None:
    state: dict[int, dict] = {}
    for key, v in ckpt.tensors.items():
        if key.startswith(prefix + "."):
            i, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": param_groups})
