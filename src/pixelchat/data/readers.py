"""Read datasets from disk into :class:`CaptionedImages` at one square size.

Supported sources:

* an image folder, captioned by a Hugging Face style ``metadata.jsonl``, by ``.txt`` sidecar
  files next to the images, or by class sub-folders (:func:`read_image_folder`);
* the MNIST IDX files, plain or gzipped (:func:`read_mnist_idx`);
* CIFAR-10 / CIFAR-100 python pickles (loaded with a restricted unpickler that only accepts
  numpy arrays) and the CIFAR-10 binary version (:func:`read_cifar`);
* scikit-learn's bundled 8x8 digits (:func:`read_digits`).

:func:`read_dataset` picks the right reader for a source string.
Every reader takes ``limit`` to keep only the first items in a deterministic (sorted) order.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps
from rich.progress import track

from pixelchat.data.dataset import CaptionedImages, pil_to_uint8, to_square_rgb

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

__all__ = [
    "IMAGE_EXTENSIONS",
    "read_cifar",
    "read_dataset",
    "read_digits",
    "read_image_folder",
    "read_mnist_idx",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"})
METADATA_FILE = "metadata.jsonl"
PROGRESS_THRESHOLD = 2000  # show a progress bar when converting more images than this
SPLITS = ("train", "test")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

T = TypeVar("T")


# --------------------------------------------------------------------------- shared helpers


def _check_args(size: int, limit: int | None, split: str | None = None) -> None:
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _take(items: Sequence[T], limit: int | None) -> Sequence[T]:
    return items if limit is None else items[:limit]


def _preview(names: Sequence[str], shown: int = 5) -> str:
    """'a, b, c and 4 more': a short list of names for error messages."""
    head = ", ".join(names[:shown])
    return head if len(names) <= shown else f"{head} and {len(names) - shown} more"


def _progress(items: Iterable[T], total: int, description: str) -> Iterable[T]:
    if total <= PROGRESS_THRESHOLD:
        return items
    return track(items, description=description, total=total, transient=True)


def _label_to_text(name: str) -> str:
    """'aquarium_fish' -> 'aquarium fish'."""
    return " ".join(name.replace("_", " ").replace("-", " ").split())


def _photo_caption(name: str) -> str:
    noun = _label_to_text(name)
    article = "an" if noun[:1].lower() in "aeiou" else "a"
    return f"a photo of {article} {noun}"


def _digit_captions(digit: int) -> list[str]:
    return [f"a handwritten digit {DIGIT_WORDS[digit]}", f"the number {digit}"]


def _stack(images: Iterable[Image.Image], count: int, size: int, description: str) -> torch.Tensor:
    """Bring each image to (3, size, size) uint8 and stack them, with a progress bar for many."""
    out = torch.empty((count, 3, size, size), dtype=torch.uint8)
    for i, image in enumerate(_progress(images, count, description)):
        out[i] = pil_to_uint8(to_square_rgb(image, size))
    return out


def _arrays_to_tensor(arrays: np.ndarray, size: int, description: str) -> torch.Tensor:
    """(N, H, W) grey or (N, H, W, 3) RGB uint8 arrays -> (N, 3, size, size) uint8 tensor."""
    if arrays.ndim == 3 and arrays.shape[1:] == (size, size):
        return torch.tensor(arrays).unsqueeze(1).repeat(1, 3, 1, 1)
    if arrays.ndim == 4 and arrays.shape[1:] == (size, size, 3):
        return torch.tensor(arrays).permute(0, 3, 1, 2).contiguous()
    return _stack((Image.fromarray(a) for a in arrays), len(arrays), size, description)


def _labelled(
    arrays: np.ndarray,
    labels: np.ndarray,
    size: int,
    limit: int | None,
    captions_for: Callable[[int], list[str]],
    source: str,
    extra: dict,
) -> CaptionedImages:
    """The CaptionedImages of a labelled array dataset (MNIST, CIFAR, digits)."""
    arrays, labels = _take(arrays, limit), _take(labels, limit)
    images = _arrays_to_tensor(arrays, size, f"Reading {source}")
    label_list = [int(x) for x in labels]
    captions = [captions_for(x) for x in label_list]
    return CaptionedImages(images, captions, source=source, extra={**extra, "labels": label_list})


# --------------------------------------------------------------------------- image folders


def _open_rgb(path: Path) -> Image.Image:
    """Open an image, apply its EXIF orientation and flatten it to RGB (transparency on white)."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, EOFError, ...) on bad files
        raise ValueError(f"cannot read image {path}: {error}") from error
    if image.mode.startswith("I;16"):  # 16-bit greyscale PNG
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8))
    bands = image.getbands()
    if "A" in bands or "a" in bands or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _list_images(root: Path) -> list[Path]:
    """Image files under root (any depth, hidden files and folders skipped), sorted by relative path."""
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if path.suffix.lower() in IMAGE_EXTENSIONS and not any(p.startswith(".") for p in relative.parts):
            if path.is_file():
                found.append(relative)
    return [root / rel for rel in sorted(found, key=lambda r: r.as_posix())]


def _metadata_captions(text: object, where: str) -> list[str]:
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{where}: 'text' must be a string or a list of strings")
    captions = [t.strip() for t in texts if t.strip()]
    if not captions:
        raise ValueError(f"{where}: 'text' holds no caption")
    return captions


def _metadata_path(root: Path, file_name: object, where: str) -> Path:
    if not isinstance(file_name, str) or not file_name:
        raise ValueError(f"{where}: missing or empty 'file_name'")
    relative = PurePosixPath(file_name.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"{where}: file_name {file_name!r} must be a relative path inside {root}")
    path = root.joinpath(*relative.parts)
    if not path.is_file():
        raise ValueError(f"{where}: file_name {file_name!r} not found in {root}")
    return path


def _read_metadata(root: Path) -> tuple[list[Path], list[list[str]], list[dict] | None]:
    """Images, captions and (when every line has them) attributes listed in root/metadata.jsonl."""
    metadata = root / METADATA_FILE
    entries: dict[str, tuple[Path, list[str], dict | None, int]] = {}
    with metadata.open(encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{metadata} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: malformed JSON ({error.msg})") from error
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object")
            path = _metadata_path(root, record.get("file_name"), where)
            key = path.relative_to(root).as_posix()
            if key in entries:
                raise ValueError(f"{where}: {key!r} already listed on line {entries[key][3]}; "
                                 "give several captions as a list in 'text'")
            attributes = record.get("attributes")
            if attributes is not None and not isinstance(attributes, dict):
                raise ValueError(f"{where}: 'attributes' must be a JSON object")
            entries[key] = (path, _metadata_captions(record.get("text"), where), attributes, number)
    if not entries:
        raise ValueError(f"{metadata} lists no images")
    ordered = [entries[key] for key in sorted(entries)]
    all_attributes = [entry[2] for entry in ordered]
    keep = all(a is not None for a in all_attributes)
    return [e[0] for e in ordered], [e[1] for e in ordered], all_attributes if keep else None


def _read_sidecar(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read caption file {path}: {error}") from error
    return [line.strip() for line in text.splitlines() if line.strip()]


def _sidecar_captions(root: Path, images: list[Path]) -> list[list[str]]:
    """Captions from the .txt next to each image; every image needs a non-empty one."""
    captions = [_read_sidecar(p.with_suffix(".txt")) if p.with_suffix(".txt").is_file() else [] for p in images]
    missing = [p.relative_to(root).as_posix() for p, caps in zip(images, captions) if not caps]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(images)} images in {root} have no caption ({_preview(missing)}): "
            f"add a non-empty .txt file next to each image, a {METADATA_FILE}, or put the images in class sub-folders"
        )
    return captions


def _uses_class_folders(root: Path, images: list[Path]) -> bool:
    """True when no image has a sidecar and all images sit in sub-folders (root/<class>/...)."""
    return all(p.parent != root and not p.with_suffix(".txt").is_file() for p in images)


def read_image_folder(path: str | os.PathLike, size: int, limit: int | None = None) -> CaptionedImages:
    """Read a folder of images captioned by metadata.jsonl, by .txt sidecars or by class sub-folders.

    The first source found wins: ``metadata.jsonl`` (one JSON object per line with ``file_name`` and
    ``text``, a string or a list of strings, and optionally ``attributes``); otherwise a ``.txt`` file
    next to each image (one caption per non-empty line); otherwise ``root/<class>/<image>`` gives
    "a photo of a <class>". Images are taken sorted by relative path.
    """
    _check_args(size, limit)
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    attributes: list[dict] | None = None
    if (root / METADATA_FILE).is_file():
        images, captions, attributes = _read_metadata(root)
        kind = "metadata"
    else:
        images = _list_images(root)
        if not images:
            raise ValueError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {root}")
        if _uses_class_folders(root, images):
            captions = [[_photo_caption(p.relative_to(root).parts[0])] for p in images]
            kind = "class folders"
        else:
            captions = _sidecar_captions(root, images)
            kind = "sidecars"
    images, captions = list(_take(images, limit)), list(_take(captions, limit))
    if attributes is not None:
        attributes = list(_take(attributes, limit))
    tensor = _stack((_open_rgb(p) for p in images), len(images), size, f"Reading {root.name or root}")
    return CaptionedImages(tensor, captions, attributes=attributes, source="folder",
                           extra={"path": str(root), "captions_from": kind,
                                  "files": [p.relative_to(root).as_posix() for p in images]})


# --------------------------------------------------------------------------- MNIST (IDX files)

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_MNIST_PREFIX = {"train": "train", "test": "t10k"}


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it is gzip-compressed."""
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: corrupt gzip data ({error})") from error


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file, checking its magic number and that its size matches its header."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(data)} bytes)")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise ValueError(f"{path}: bad IDX magic number 0x{found:08X}, expected 0x{magic:08X}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise ValueError(f"{path}: {len(data)} bytes, but the IDX header's dimensions {dims} need {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _mnist_file(directory: Path, split: str, kind: str) -> Path | None:
    """e.g. train-images-idx3-ubyte, also with '.idx3' spelling and/or a .gz suffix."""
    prefix, n = _MNIST_PREFIX[split], 3 if kind == "images" else 1
    for name in (f"{prefix}-{kind}-idx{n}-ubyte", f"{prefix}-{kind}.idx{n}-ubyte"):
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _find_mnist_dir(path: Path) -> Path | None:
    """The folder holding MNIST IDX files: path itself, or torchvision's raw/ or MNIST/raw/ below it."""
    for directory in (path, path / "raw", path / "MNIST" / "raw"):
        if any(_mnist_file(directory, split, "images") for split in SPLITS):
            return directory
    return None


def read_mnist_idx(
    path: str | os.PathLike, size: int, split: str = "train", limit: int | None = None
) -> CaptionedImages:
    """Read MNIST digits from the IDX files in ``path`` (``train-*`` or ``t10k-*``, optionally ``.gz``)."""
    _check_args(size, limit, split)
    root = Path(path)
    directory = _find_mnist_dir(root) or root
    files = {kind: _mnist_file(directory, split, kind) for kind in ("images", "labels")}
    for kind, found in files.items():
        if found is None:
            n = 3 if kind == "images" else 1
            expected = f"{_MNIST_PREFIX[split]}-{kind}-idx{n}-ubyte[.gz]"
            raise FileNotFoundError(f"no MNIST {split} {kind} in {root}: expected {expected}")
    images = _read_idx(files["images"], IDX_IMAGES_MAGIC)
    labels = _read_idx(files["labels"], IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(f"MNIST {split}: {len(images)} images in {files['images'].name} "
                         f"but {len(labels)} labels in {files['labels'].name}")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{files['labels']}: label {int(labels.max())} is not a digit 0-9")
    return _labelled(images, labels, size, limit, _digit_captions, "mnist",
                     {"path": str(directory), "split": split, "class_names": list(DIGIT_WORDS)})


# --------------------------------------------------------------------------- CIFAR

_CIFAR_SUBDIRS = {  # standard folder name -> kind
    "cifar-10-batches-py": "cifar-10",
    "cifar-100-python": "cifar-100",
    "cifar-10-batches-bin": "cifar-10-bin",
}
_CIFAR_FILES = {
    "cifar-10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    "cifar-100": {"train": ["train"], "test": ["test"]},
    "cifar-10-bin": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
}
_CIFAR_LABEL_KEYS = {"cifar-10": ("labels", "label_names"), "cifar-100": ("fine_labels", "fine_label_names")}
_CIFAR_SIDE = 32
_CIFAR_PIXELS = 3 * _CIFAR_SIDE * _CIFAR_SIDE

# Everything a CIFAR python pickle may reference: what numpy needs to rebuild an array, nothing else.
_PICKLE_ALLOWED: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RefusedGlobal(ValueError):
    """A pickle referenced a global outside _PICKLE_ALLOWED."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy globals in _PICKLE_ALLOWED, so no code can run."""

    def __init__(self, file, source: Path):
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> object:
        allowed = _PICKLE_ALLOWED.get((module, name))
        if allowed is None:
            raise _RefusedGlobal(
                f"refusing to load {module}.{name} from {self.source}: a CIFAR file may only hold numpy arrays")
        return allowed


def _load_cifar_pickle(path: Path) -> dict:
    with path.open("rb") as file:
        try:
            loaded = _ArraysOnlyUnpickler(file, path).load()
        except _RefusedGlobal:
            raise
        except Exception as error:  # corrupt pickles raise UnpicklingError, EOFError, TypeError, ...
            raise ValueError(f"{path}: not a readable CIFAR pickle ({error})") from error
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a dict, found {type(loaded).__name__}")
    return loaded


def _field(batch: dict, key: str, path: Path) -> object:
    """batch[b'key'] (Python 2 pickles read with encoding='bytes') or batch['key']."""
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise ValueError(f"{path}: no {key!r} entry")


def _cifar_kind(directory: Path) -> str | None:
    if (directory / "batches.meta").is_file():
        return "cifar-10"
    if (directory / "meta").is_file() and any((directory / name).is_file() for name in ("train", "test")):
        return "cifar-100"
    if (directory / "batches.meta.txt").is_file():
        return "cifar-10-bin"
    return None


def _find_cifar(path: Path) -> tuple[str, Path] | None:
    """(kind, folder) of the CIFAR data at path or in one of its standard sub-folders."""
    kind = _cifar_kind(path)
    if kind:
        return kind, path
    found = {k: path / name for name, k in _CIFAR_SUBDIRS.items() if _cifar_kind(path / name) == k}
    if "cifar-10" in found:
        found.pop("cifar-10-bin", None)  # same images: prefer the python version
    if len(found) > 1:
        names = _preview([p.name for p in found.values()])
        raise ValueError(f"{path} holds several CIFAR datasets ({names}): pass one of them")
    return next(iter(found.items()), None)


def _cifar_names(kind: str, directory: Path) -> list[str]:
    if kind == "cifar-10-bin":
        meta = directory / "batches.meta.txt"
        names = [line.strip() for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        meta = directory / ("batches.meta" if kind == "cifar-10" else "meta")
        raw = _field(_load_cifar_pickle(meta), _CIFAR_LABEL_KEYS[kind][1], meta)
        names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in raw]
    if not names:
        raise ValueError(f"{meta}: no class names")
    return names


def _read_cifar_batch(kind: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3072) uint8 pixels and (N,) labels of one CIFAR batch file."""
    if kind == "cifar-10-bin":
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % (_CIFAR_PIXELS + 1):
            raise ValueError(
                f"{path}: {raw.size} bytes is not a whole number of {_CIFAR_PIXELS + 1}-byte CIFAR records")
        records = raw.reshape(-1, _CIFAR_PIXELS + 1)
        return records[:, 1:], records[:, 0]
    batch = _load_cifar_pickle(path)
    data = _field(batch, "data", path)
    labels = np.asarray(_field(batch, _CIFAR_LABEL_KEYS[kind][0], path))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
        raise ValueError(f"{path}: 'data' must be a (N, {_CIFAR_PIXELS}) uint8 array")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: expected {len(data)} integer labels, found shape {labels.shape} {labels.dtype}")
    return data, labels


def read_cifar(path: str | os.PathLike, size: int, split: str = "train", limit: int | None = None) -> CaptionedImages:
    """Read CIFAR-10 (python or binary version) or CIFAR-100 (fine labels) from its extracted folder.

    ``path`` is the dataset folder (``cifar-10-batches-py``, ``cifar-100-python``, ``cifar-10-batches-bin``)
    or a folder containing one. Python batches are unpickled with an unpickler that accepts numpy arrays only.
    """
    _check_args(size, limit, split)
    root = Path(path)
    located = _find_cifar(root)
    if located is None:
        raise FileNotFoundError(f"no CIFAR data in {root}: expected {', '.join(_CIFAR_SUBDIRS)} or their contents")
    kind, directory = located
    names = _cifar_names(kind, directory)
    data, labels = [], []
    for name in _CIFAR_FILES[kind][split]:
        if limit is not None and sum(map(len, labels)) >= limit:
            break
        batch_path = directory / name
        if not batch_path.is_file():
            raise FileNotFoundError(f"{kind}: missing {batch_path}")
        batch_data, batch_labels = _read_cifar_batch(kind, batch_path)
        data.append(batch_data)
        labels.append(batch_labels)
    all_labels = np.concatenate(labels).astype(np.int64)
    if all_labels.size and (all_labels.min() < 0 or all_labels.max() >= len(names)):
        raise ValueError(f"{directory}: labels outside 0..{len(names) - 1} for {len(names)} class names")
    pixels = np.concatenate(data).reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)
    source = kind.removesuffix("-bin")
    return _labelled(pixels, all_labels, size, limit, lambda label: [_photo_caption(names[label])], source,
                     {"path": str(directory), "split": split, "class_names": names})


# --------------------------------------------------------------------------- scikit-learn digits


def read_digits(size: int, limit: int | None = None) -> CaptionedImages:
    """scikit-learn's bundled 1797 8x8 handwritten digits (no download), upscaled, captioned like MNIST."""
    _check_args(size, limit)
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return _labelled(images, digits.target, size, limit, _digit_captions, "digits",
                     {"class_names": list(DIGIT_WORDS)})


# --------------------------------------------------------------------------- dispatch


def read_dataset(source: str | os.PathLike, size: int, limit: int | None = None) -> CaptionedImages:
    """Read ``"digits"``, an MNIST IDX folder, a CIFAR folder or an image folder (checked in that order)."""
    if str(source) == "digits":
        return read_digits(size, limit)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"dataset {str(source)!r} not found: give 'digits', an image folder, an MNIST IDX folder or a CIFAR folder")
    if not path.is_dir():
        raise ValueError(f"dataset {str(source)!r} is a file: give a folder (extract archives first)")
    if _find_mnist_dir(path) is not None:
        return read_mnist_idx(path, size, limit=limit)
    if _find_cifar(path) is not None:
        return read_cifar(path, size, limit=limit)
    return read_image_folder(path, size, limit)
