"""Tests for pixelchat.data.readers on tiny files written in the real formats."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelchat.data import readers
from pixelchat.data.readers import read_cifar, read_dataset, read_digits, read_image_folder, read_mnist_idx

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def close(pixel: torch.Tensor, rgb: tuple[int, int, int], tol: int = 40) -> bool:
    return bool((pixel.int() - torch.tensor(rgb)).abs().max() <= tol)


# --------------------------------------------------------------------------- writers


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, compress: bool = False) -> Path:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim if magic is None else magic
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if compress:
        path, data = path.with_name(path.name + ".gz"), gzip.compress(data)
    path.write_bytes(data)
    return path


def write_mnist(directory: Path, n_train: int = 6, n_test: int = 3, compress: bool = False) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) * 7 + 3) % 10
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, compress=compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress=compress)
        out[prefix] = (images, labels)
    return out


def cifar_pixels(n: int, seed: int) -> np.ndarray:
    """(n, 3072) uint8 rows, CIFAR layout (1024 R, 1024 G, 1024 B); image i is a flat colour."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    return np.repeat(colours, 1024, axis=1)


def dump_py2_style(obj: object, path: Path) -> None:
    """Pickle with bytes keys; numpy's global renamed to numpy.core.multiarray as in the real (Python 2) files."""
    data = pickle.dumps(obj, protocol=3)  # protocol 3 writes globals as text lines
    path.write_bytes(data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))


CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_cifar10(parent: Path, per_batch: int = 2) -> Path:
    directory = parent / "cifar-10-batches-py"
    directory.mkdir(parents=True)
    dump_py2_style({b"label_names": CIFAR10_NAMES, b"num_cases_per_batch": per_batch, b"num_vis": 3072},
                   directory / "batches.meta")
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {b"batch_label": f"batch {i}".encode(), b"data": cifar_pixels(per_batch, i),
                 b"labels": [(i * per_batch + j) % 10 for j in range(per_batch)],
                 b"filenames": [f"img{j}.png".encode() for j in range(per_batch)]}
        dump_py2_style(batch, directory / name)
    return directory


def write_cifar100(parent: Path) -> Path:
    directory = parent / "cifar-100-python"
    directory.mkdir(parents=True)
    fine = [b"apple", b"aquarium_fish", b"maple_tree"]
    with open(directory / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": fine, b"coarse_label_names": [b"fruit", b"fish", b"trees"]}, f, protocol=4)
    for name, n in (("train", 4), ("test", 2)):
        batch = {b"filenames": [b"x"] * n, b"batch_label": name.encode(), b"fine_labels": [j % 3 for j in range(n)],
                 b"coarse_labels": [0] * n, b"data": cifar_pixels(n, 7)}
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f, protocol=4)
    return directory


def write_cifar10_bin(parent: Path, per_batch: int = 2) -> Path:
    directory = parent / "cifar-10-batches-bin"
    directory.mkdir(parents=True)
    (directory / "batches.meta.txt").write_text("\n".join(n.decode() for n in CIFAR10_NAMES) + "\n\n")
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        labels = np.array([(i + j) % 10 for j in range(per_batch)], dtype=np.uint8)[:, None]
        (directory / name).write_bytes(np.hstack([labels, cifar_pixels(per_batch, i)]).tobytes())
    return directory


def save_png(path: Path, colour=RED, size=(12, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """Stored 40x20, left half red / right half blue, EXIF orientation 6 (display rotated 90° clockwise)."""
    image = Image.new("RGB", (40, 20), BLUE)
    image.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, quality=95, exif=exif.tobytes())
    return path


# --------------------------------------------------------------------------- image folders


def test_metadata_jsonl_with_attributes_lists_and_subfolders(tmp_path):
    save_png(tmp_path / "b.png", RED)
    save_png(tmp_path / "sub" / "a.jpg", BLUE)
    save_png(tmp_path / "unlisted.png")  # not in metadata: ignored
    lines = [{"file_name": "b.png", "text": "a red square", "attributes": {"colour": "red"}},
             {"file_name": "sub/a.jpg", "text": ["a blue square", "blue"], "attributes": {"colour": "blue"}}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    data = read_image_folder(tmp_path, 8)
    assert data.images.shape == (2, 3, 8, 8) and data.images.dtype == torch.uint8
    assert data.captions == [["a red square"], ["a blue square", "blue"]]  # sorted by file name
    assert data.attributes == [{"colour": "red"}, {"colour": "blue"}]
    assert close(data.images[0, :, 4, 4], RED) and close(data.images[1, :, 4, 4], BLUE)
    limited = read_image_folder(tmp_path, 8, limit=1)
    assert limited.captions == [["a red square"]] and limited.attributes == [{"colour": "red"}]


def test_metadata_attributes_dropped_unless_every_line_has_them(tmp_path):
    save_png(tmp_path / "a.png")
    save_png(tmp_path / "b.png")
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png", "text": "x", "attributes": {"k": 1}}) + "\n"
        + json.dumps({"file_name": "b.png", "text": "y"}) + "\n")
    assert read_image_folder(tmp_path, 4).attributes is None


def test_sidecars_and_pixel_conversions(tmp_path):
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 16, 8))  # top half opaque red, bottom transparent
    rgba.save(tmp_path / "1_rgba.PNG")
    Image.new("L", (16, 16), 128).save(tmp_path / "2_grey.jpeg")
    exif_rotated_jpeg(tmp_path / "3_rotated.jpg")
    Image.new("P", (16, 16), 3).save(tmp_path / "4_palette.gif")
    for stem, text in (("1_rgba", "red over white\n\n  second caption  \n"), ("2_grey", "grey"),
                       ("3_rotated", "rotated"), ("4_palette", "palette")):
        (tmp_path / f"{stem}.txt").write_text(text)
    data = read_image_folder(tmp_path, 16)
    assert data.images.shape == (4, 3, 16, 16)
    assert data.captions == [["red over white", "second caption"], ["grey"], ["rotated"], ["palette"]]
    rgba_out, grey_out, rotated = data.images[0], data.images[1], data.images[2]
    assert close(rgba_out[:, 2, 8], RED, 5) and close(rgba_out[:, 13, 8], WHITE, 5)  # composited on white
    assert close(grey_out[:, 8, 8], (128, 128, 128), 3)
    # EXIF applied: displayed 20 wide x 40 tall with red on top; the centre square is red above blue.
    assert close(rotated[:, 3, 8], RED) and close(rotated[:, 12, 8], BLUE)
    assert close(rotated[:, 8, 2], rotated[:, 8, 13].tolist(), 10)  # no left/right split


def test_missing_sidecar_lists_images(tmp_path):
    for name in ("a", "b", "c"):
        save_png(tmp_path / f"{name}.png")
    (tmp_path / "a.txt").write_text("a caption")
    with pytest.raises(ValueError, match=r"2 of 3 images .*no caption \(b\.png, c\.png\)"):
        read_image_folder(tmp_path, 8)


def test_class_subfolders(tmp_path):
    save_png(tmp_path / "golden_retriever" / "1.png", RED)
    save_png(tmp_path / "sports-car" / "1.webp", BLUE)
    save_png(tmp_path / "sports-car" / "2.bmp", BLUE)
    save_png(tmp_path / "owl" / "x.png", RED)
    save_png(tmp_path / ".hidden" / "y.png", RED)  # hidden folders are skipped
    data = read_image_folder(tmp_path, 6)
    assert data.captions == [["a photo of a golden retriever"], ["a photo of an owl"],
                             ["a photo of a sports car"], ["a photo of a sports car"]]
    assert data.images.shape == (4, 3, 6, 6)
    assert read_image_folder(tmp_path, 6, limit=2).captions == data.captions[:2]


def test_corrupt_image_named(tmp_path):
    save_png(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"this is not a png at all")
    for stem in ("good", "bad"):
        (tmp_path / f"{stem}.txt").write_text("caption")
    with pytest.raises(ValueError, match="bad.png"):
        read_image_folder(tmp_path, 8)


def test_metadata_missing_file_and_malformed_json(tmp_path):
    save_png(tmp_path / "a.png")
    meta = tmp_path / "metadata.jsonl"
    meta.write_text(json.dumps({"file_name": "a.png", "text": "x"}) + "\n"
                    + json.dumps({"file_name": "gone.png", "text": "y"}) + "\n")
    with pytest.raises(ValueError, match="gone.png"):
        read_image_folder(tmp_path, 8)
    meta.write_text(json.dumps({"file_name": "a.png", "text": "x"}) + "\n" + '{"file_name": "a.png", "text": \n')
    with pytest.raises(ValueError, match="line 2"):
        read_image_folder(tmp_path, 8)
    meta.write_text(json.dumps({"file_name": "../a.png", "text": "x"}) + "\n")
    with pytest.raises(ValueError, match="relative path"):
        read_image_folder(tmp_path, 8)


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no images"):
        read_image_folder(tmp_path, 8)


def test_progress_bar_for_many_images(tmp_path, monkeypatch):
    for i in range(3):
        save_png(tmp_path / "cat" / f"{i}.png")
    calls = []
    monkeypatch.setattr(readers, "PROGRESS_THRESHOLD", 2)
    monkeypatch.setattr(readers, "track", lambda items, **kw: calls.append(kw) or items)
    assert len(read_image_folder(tmp_path, 4)) == 3
    assert calls and calls[0]["transient"] is True and calls[0]["total"] == 3


# --------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx(tmp_path, compress):
    written = write_mnist(tmp_path, compress=compress)
    data = read_mnist_idx(tmp_path, 28)
    images, labels = written["train"]
    assert data.images.shape == (6, 3, 28, 28) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert torch.equal(data.images[:, 2], data.images[:, 0])
    assert data.captions[0] == ["a handwritten digit three", "the number 3"]
    assert data.captions[1] == ["a handwritten digit zero", "the number 0"]
    assert data.extra["labels"] == labels.tolist()
    test = read_mnist_idx(tmp_path, 32, split="test", limit=2)
    assert test.images.shape == (2, 3, 32, 32) and len(test.captions) == 2


def test_mnist_bad_magic_and_size(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(6), magic=0x00000803)
    with pytest.raises(ValueError, match="magic number 0x00000803, expected 0x00000801"):
        read_mnist_idx(tmp_path, 28)
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="need"):
        read_mnist_idx(tmp_path, 28)
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5))
    with pytest.raises(ValueError, match="6 images .* but 5 labels"):
        read_mnist_idx(tmp_path, 28)


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_python(tmp_path):
    directory = write_cifar10(tmp_path)
    data = read_cifar(directory, 32)
    assert data.images.shape == (10, 3, 32, 32) and data.source == "cifar-10"
    assert data.captions[:3] == [["a photo of an airplane"], ["a photo of an automobile"], ["a photo of a bird"]]
    expected = cifar_pixels(2, 0)[0]  # first image of data_batch_1: flat colour
    assert data.images[0, :, 5, 7].tolist() == [expected[0], expected[1024], expected[2048]]
    assert read_cifar(tmp_path, 16, limit=3).images.shape == (3, 3, 16, 16)  # parent folder works too
    assert len(read_cifar(directory, 8, split="test")) == 2


def test_cifar100_fine_labels(tmp_path):
    write_cifar100(tmp_path)
    data = read_cifar(tmp_path, 8)
    assert data.source == "cifar-100" and data.images.shape == (4, 3, 8, 8)
    assert data.captions == [["a photo of an apple"], ["a photo of an aquarium fish"],
                             ["a photo of a maple tree"], ["a photo of an apple"]]


def test_cifar10_binary(tmp_path):
    write_cifar10_bin(tmp_path)
    data = read_cifar(tmp_path, 32, split="test")
    expected = cifar_pixels(2, 5)[1]
    assert data.captions == [["a photo of a dog"], ["a photo of a frog"]]
    assert data.images[1, :, 0, 0].tolist() == [expected[0], expected[1024], expected[2048]]
    assert len(read_cifar(tmp_path, 32)) == 10


class Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("target", ["batch", "meta"])
def test_cifar_refuses_malicious_pickle(tmp_path, target):
    directory = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    payload = {b"data": Evil(os.system, f"touch {marker}"), b"labels": [0]}
    victim = directory / ("data_batch_1" if target == "batch" else "batches.meta")
    victim.write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(ValueError, match=r"refusing to load (posix|nt|os)\.system"):
        read_cifar(directory, 32)
    assert not marker.exists()


def test_cifar_refuses_builtins_eval(tmp_path):
    directory = write_cifar10(tmp_path)
    (directory / "data_batch_1").write_bytes(pickle.dumps(Evil(eval, "1+1"), protocol=4))
    with pytest.raises(ValueError, match=r"refusing to load builtins\.eval"):
        read_cifar(directory, 32)


# --------------------------------------------------------------------------- digits and dispatch


def test_digits():
    from sklearn.datasets import load_digits

    data = read_digits(16)
    assert data.images.shape == (1797, 3, 16, 16) and data.images.dtype == torch.uint8
    target = load_digits().target
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert all(caps == [f"a handwritten digit {words[t]}", f"the number {t}"] for caps, t in zip(data.captions, target))
    assert int(data.images.max()) > 200 and int(data.images.min()) == 0
    assert len(read_digits(8, limit=10)) == 10


def test_read_dataset_dispatch(tmp_path):
    assert read_dataset("digits", 8, limit=4).source == "digits"
    write_mnist(tmp_path / "mnist", compress=True)
    assert read_dataset(str(tmp_path / "mnist"), 8, limit=2).source == "mnist"
    write_cifar100(tmp_path / "c100")
    assert read_dataset(str(tmp_path / "c100"), 8).source == "cifar-100"
    write_cifar10(tmp_path / "c10")
    assert read_dataset(str(tmp_path / "c10" / "cifar-10-batches-py"), 8, limit=1).source == "cifar-10"
    save_png(tmp_path / "folder" / "cat" / "a.png")
    assert read_dataset(str(tmp_path / "folder"), 8).captions == [["a photo of a cat"]]
    with pytest.raises(FileNotFoundError, match="not found"):
        read_dataset(str(tmp_path / "nowhere"), 8)
    with pytest.raises(ValueError, match="is a file"):
        read_dataset(str(tmp_path / "folder" / "cat" / "a.png"), 8)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="limit"):
        read_digits(8, limit=0)
    with pytest.raises(ValueError, match="split"):
        read_mnist_idx(tmp_path, 8, split="val")
