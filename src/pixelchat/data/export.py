"""Write `scenes` samples as an image folder in the Hugging Face imagefolder layout."""

from __future__ import annotations

import json
from pathlib import Path

from rich.progress import track

from pixelchat.data.captions import SPLITS
from pixelchat.data.scenes import SIZES, scene_sample

MAX_EXPORT = 1_000_000


def export_scenes(out_dir: str | Path, n: int, size: int = 64, *, split: str = "train", first_seed: int = 0,
                  progress: bool = True) -> Path:
    """``n`` samples as PNGs plus ``metadata.jsonl`` (``file_name``, ``text``, ``attributes``, ``mentioned``,
    ``seed``); returns the metadata file. Refuses a folder that already holds a dataset."""
    if not 1 <= n <= MAX_EXPORT:
        raise ValueError(f"n must be between 1 and {MAX_EXPORT}, got {n}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if first_seed < 0:
        raise ValueError("first seed must be non-negative")
    out = Path(out_dir)
    meta = out / "metadata.jsonl"
    if meta.exists():
        raise ValueError(f"{meta} already exists; choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".metadata.jsonl.tmp"
    with open(tmp, "w") as f:
        for seed in track(range(first_seed, first_seed + n), description=f"exporting {n} scenes",
                          transient=True, disable=not progress):
            s = scene_sample(seed, size, split)
            name = f"{seed:07d}.png"
            s.image.save(out / name)
            f.write(json.dumps({"file_name": name, "text": s.caption, "attributes": s.attributes,
                                "mentioned": s.mentioned, "seed": seed}) + "\n")
    tmp.replace(meta)
    return meta
