"""Image files that say how they were made: our JSON record, an A1111-style ``parameters`` line
(read by many image tools), XMP with the IPTC "made by AI" source type and an invisible watermark
(written by `pixelchat.safety.provenance.image_bytes`, in PNG, JPEG or WebP); and the safe opening
of picture files users hand us."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

RECORD_KEY = "pixelchat"
PARAMETERS_KEY = "parameters"


def a1111_parameters(record: dict) -> str:
    """The one-line summary AUTOMATIC1111's web UI writes, so existing tools can read our files."""
    lines = [record.get("prompt", "")]
    if record.get("negative_prompt"):
        lines.append(f"Negative prompt: {record['negative_prompt']}")
    size = record.get("size") or [0, 0]
    model = record.get("model", {})
    # a GAN draws in one step; a diffusion record names its steps, scheduler and guidance
    fields = {"Steps": record.get("steps", 1), "Sampler": record.get("scheduler") or "GAN",
              "CFG scale": record.get("guidance"), "Seed": record.get("seed"), "Size": f"{size[0]}x{size[1]}",
              "Model hash": (model.get("sha256") or "")[:10], "Model": model.get("id"),
              "Version": f"pixelchat {record.get('pixelchat_version', '')}".strip()}
    if record.get("truncation") is not None:
        fields["Truncation"] = record["truncation"]
    change = (record.get("edit") or record.get("vary") or {}) if record.get("engine") == "diffusers" else {}
    if change.get("strength") is not None:  # a pipeline's image-to-image redraw: A1111's name for strength
        fields["Denoising strength"] = change["strength"]
    if change.get("image_guidance") is not None:
        fields["Image CFG scale"] = change["image_guidance"]
    if record.get("scheduler_name"):
        fields["Scheduler"] = record["scheduler_name"]
    if record.get("device"):  # where a pipeline ran: the same seed may differ in its last bits elsewhere
        fields["Device"] = record["device"]
        fields["Dtype"] = record.get("dtype")
        if record.get("offload"):
            fields["CPU offload"] = "yes"
    lines.append(", ".join(f"{k}: {v}" for k, v in fields.items() if v not in (None, "")))
    return "\n".join(lines)


def png_bytes(image: Image.Image, record: dict) -> bytes:
    """``image`` as PNG bytes carrying ``record`` (see `pixelchat.safety.provenance.image_bytes`)."""
    from pixelchat.safety.provenance import image_bytes

    return image_bytes(image, record, "png")


def save_png(image: Image.Image, path: str | os.PathLike, record: dict) -> Path:
    """Write ``image`` with ``record`` embedded; written to a temporary name first, so no half files."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(png_bytes(image, record))
    os.replace(tmp, path)
    return path


def read_record(path_or_image: str | os.PathLike | Image.Image) -> dict | None:
    """Our generation record from a file (PNG, JPEG or WebP) or opened image; None when it has none."""
    from pixelchat.safety.provenance import provenance_of

    if isinstance(path_or_image, Image.Image):
        return provenance_of(path_or_image).record
    with Image.open(path_or_image) as image:
        return provenance_of(image).record


MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000


class ImageFileError(ValueError):
    """An image file that cannot be used: missing, too large, or not an image we can read."""


def checked_file(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> Path:
    """``path``, refused (ImageFileError) when it is not a file or is over ``max_bytes``."""
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"no image file at {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ImageFileError(f"{path} is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB")
    return path


def open_image_file(path: str | os.PathLike, *, max_bytes: int = MAX_FILE_BYTES,
                    max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and decode a picture file as it is (mode kept), EXIF rotation applied; oversized or
    unreadable files raise ImageFileError."""
    from PIL import ImageOps, UnidentifiedImageError

    path = checked_file(path, max_bytes)
    try:
        with Image.open(path) as im:
            if im.width * im.height > max_pixels:
                raise ImageFileError(f"{path} is {im.width}×{im.height} pixels; the limit is {max_pixels:,} pixels")
            im.load()
            out = ImageOps.exif_transpose(im)
            out.info.update({k: v for k, v in im.info.items() if k not in out.info})
            return out
    except ImageFileError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise ImageFileError(f"{path} is not a readable image ({type(e).__name__}: {e})") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB, with transparency composited on white and greyscale expanded; text chunks kept."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
    else:
        out = im.convert("RGB")
    out.info.update(im.info)
    return out


def load_image(path: str | os.PathLike, *, max_bytes: int = MAX_FILE_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open any reasonable picture (PNG, JPEG, WebP, …) as RGB: EXIF rotation applied, transparency
    composited on white, greyscale expanded; our generation record stays in ``info``. Oversized or
    unreadable files raise ImageFileError."""
    return to_rgb(open_image_file(path, max_bytes=max_bytes, max_pixels=max_pixels))


MASK_MODES = ("1", "L", "LA", "RGBA", "P", "I", "I;16")


def mask_array(mask: Image.Image, size: tuple[int, int]):
    """A mask picture → float array (H, W) in [0, 1], 1 where the picture may change.

    Greyscale masks: white changes, black stays. Masks with transparency (OpenAI's convention):
    transparent changes, opaque stays. The mask must have the picture's size ``(width, height)``."""
    import numpy as np

    if mask.size != tuple(size):
        raise ImageFileError(f"the mask is {mask.size[0]}×{mask.size[1]} but the image is {size[0]}×{size[1]}; "
                             "they must be the same size")
    if mask.mode == "P":
        mask = mask.convert("RGBA") if "transparency" in mask.info else mask.convert("L")
    if mask.mode not in MASK_MODES:
        raise ImageFileError(f"a mask must be greyscale (white = change) or have transparency (transparent = change); "
                             f"got a {mask.mode} image")
    if mask.mode in ("LA", "RGBA"):
        return 1.0 - np.asarray(mask.getchannel("A"), dtype=np.float32) / 255.0
    if mask.mode in ("I", "I;16"):
        a = np.asarray(mask, dtype=np.float32)
        return a / max(float(a.max()), 1.0)
    return np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
