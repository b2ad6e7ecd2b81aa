"""What every picture file we write says about itself, in PNG, JPEG and WebP alike:

- our generation record (JSON: prompt, seed and latent, model id and SHA-256, engine, pixelchat
  version, time, and what an edit or variation started from);
- the AUTOMATIC1111-style ``parameters`` text that many image tools read;
- XMP with the IPTC digital source type ``trainedAlgorithmicMedia`` (the "made by AI" mark that
  photo software and platforms read), the creator tool and the prompt as description;
- the invisible watermark (`pixelchat.safety.watermark`) in the pixels, where the picture is large
  enough to carry it.

Where each part goes:

| part        | PNG                         | JPEG                              | WebP                     |
|-------------|-----------------------------|-----------------------------------|--------------------------|
| record      | iTXt ``pixelchat``          | COM segment ``pixelchat:{json}``  | XMP ``pixelchat:Record`` |
| parameters  | iTXt ``parameters``         | EXIF UserComment (UNICODE)        | EXIF UserComment         |
| XMP         | iTXt ``XML:com.adobe.xmp``  | APP1 XMP                          | XMP chunk                |

`image_bytes` is the one place files are made (the CLI, the server's store and its answers all
come through it); `read_provenance` reads any of the three back.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import zlib
from dataclasses import dataclass, field
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from PIL import Image
from PIL.ExifTags import IFD

from pixelchat.imagefiles import (
    MAX_FILE_BYTES, MAX_PIXELS, PARAMETERS_KEY, RECORD_KEY, ImageFileError, a1111_parameters, checked_file,
)
from pixelchat.png import png_bytes

FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
XMP_KEY = "XML:com.adobe.xmp"  # PNG's keyword for an XMP packet (XMP spec part 3, 1.1.5)
COMMENT_PREFIX = b"pixelchat:"  # our record's JPEG COM segment starts with this
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "pixelchat": "urn:pixelchat:xmp:1.0/",
}
EXIF_SOFTWARE = 0x0131
EXIF_USER_COMMENT = 0x9286
MAX_XMP_BYTES = 1 << 20


def canonical_format(fmt: str) -> str:
    """'png', 'jpeg' or 'webp' for any spelling we accept; ValueError otherwise."""
    key = str(fmt).lower().lstrip(".")
    if key not in FORMATS:
        raise ValueError(f"unsupported image format {fmt!r}; use png, jpeg or webp")
    return "jpeg" if key == "jpg" else key


def record_json(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)


def xmp_packet(record: dict, *, with_record: bool = False) -> bytes:
    """An XMP packet: IPTC digital source type, creator tool, creation time, the prompt as description
    (and IPTC's AI prompt fields), and our record itself when ``with_record``."""
    version = record.get("pixelchat_version", "")
    tool = f"pixelchat {version}".strip()
    attrs = {
        "Iptc4xmpExt:DigitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
        "Iptc4xmpExt:AISystemUsed": "pixelchat",
        "Iptc4xmpExt:AISystemVersionUsed": str(version),
        "xmp:CreatorTool": tool,
    }
    if record.get("created"):
        attrs["xmp:CreateDate"] = str(record["created"])
    if record.get("prompt"):
        attrs["Iptc4xmpExt:AIPromptInformation"] = str(record["prompt"])
    if with_record:
        attrs["pixelchat:Record"] = record_json(record)
    namespaces = " ".join(f"xmlns:{k}={quoteattr(v)}" for k, v in NS.items() if k not in ("x", "rdf"))
    properties = "\n    ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
    description = ""
    if record.get("prompt"):
        description = (f"\n   <dc:description><rdf:Alt><rdf:li xml:lang=\"x-default\">{escape(str(record['prompt']))}"
                       "</rdf:li></rdf:Alt></dc:description>")
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        f'<x:xmpmeta xmlns:x="{NS["x"]}">\n'
        f' <rdf:RDF xmlns:rdf="{NS["rdf"]}">\n'
        f'  <rdf:Description rdf:about="" {namespaces}\n    {properties}>{description}\n'
        '  </rdf:Description>\n </rdf:RDF>\n</x:xmpmeta>\n<?xpacket end="w"?>'
    ).encode("utf-8")


def exif_bytes(record: dict, parameters: str) -> bytes:
    """EXIF with Software and the ``parameters`` text as UserComment, as AUTOMATIC1111 writes it
    (character code UNICODE, UTF-16 in the EXIF's big-endian byte order)."""
    exif = Image.Exif()
    exif[EXIF_SOFTWARE] = f"pixelchat {record.get('pixelchat_version', '')}".strip()
    exif.get_ifd(IFD.Exif)[EXIF_USER_COMMENT] = b"UNICODE\0" + parameters.encode("utf-16-be")
    return exif.tobytes()


@functools.lru_cache(maxsize=1)
def configured_signer():
    """The operator's Content Credentials signer (PIXELCHAT_C2PA_CERT and PIXELCHAT_C2PA_KEY), read
    once; None when not configured. Misconfigured credentials raise ValueError."""
    from pixelchat.safety.c2pa import C2PAError, signer_from_env

    try:
        return signer_from_env()
    except C2PAError as e:  # configured, but the c2pa package is missing or refuses the credentials
        raise ValueError(f"PIXELCHAT_C2PA_CERT/KEY are set but cannot be used: {e}") from None


# Deflate for PNG (files written by `pixelchat.png`): level 1 with the run-length strategy. On the
# generator's 256 px pictures it takes about 60% of level 3's time and a sixth of the default level
# 6's, for files about 17% smaller than level 3's; on flat pictures (renders, graphics) its files are
# as small as level 3's. Huffman-only coding is a little faster on generated pictures but makes flat
# ones six times larger (RESULTS.md, "Runtimes").
PNG_COMPRESS_LEVEL = 1
PNG_STRATEGY = zlib.Z_RLE


def image_bytes(image: Image.Image, record: dict, fmt: str = "png", quality: int = 90, *,
                watermark: bool = True, sign: bool = True) -> bytes:
    """``image`` as PNG, JPEG or WebP bytes carrying ``record`` (see the module docstring), with the
    invisible watermark for ``record`` in its pixels when it is large enough, and, when an operator
    has configured a certificate (`configured_signer`), a signed C2PA manifest as the last step.
    ``quality`` (0–100) applies to JPEG and WebP; PNG is lossless."""
    from pixelchat.imagefiles import to_rgb
    from pixelchat.safety.watermark import embed, record_hash

    fmt = canonical_format(fmt)
    if not 0 <= quality <= 100:
        raise ValueError(f"quality must be in 0..100; got {quality}")
    picture = image if image.mode == "RGB" else to_rgb(image)
    if watermark:
        picture = embed(picture, record_hash(record))
    parameters = a1111_parameters(record)
    buf = io.BytesIO()
    if fmt == "png":
        texts = [(RECORD_KEY, record_json(record)), (PARAMETERS_KEY, parameters),
                 (XMP_KEY, xmp_packet(record).decode("utf-8"))]
        buf.write(png_bytes(np.asarray(picture), texts, level=PNG_COMPRESS_LEVEL, strategy=PNG_STRATEGY))
    elif fmt == "jpeg":
        picture.save(buf, format="JPEG", quality=quality, exif=exif_bytes(record, parameters), xmp=xmp_packet(record),
                     comment=COMMENT_PREFIX + record_json(record).encode("utf-8"))
    else:
        picture.save(buf, format="WEBP", quality=quality, exif=exif_bytes(record, parameters),
                     xmp=xmp_packet(record, with_record=True))
    signer = configured_signer() if sign else None
    if signer is None:
        return buf.getvalue()
    from pixelchat.safety.c2pa import sign as sign_c2pa

    return sign_c2pa(buf.getvalue(), fmt, record, signer)  # last: it hashes the finished file


@dataclass
class Provenance:
    """What a file says about itself. ``format``: 'png', 'jpeg' or 'webp' (or Pillow's name for
    another); ``record``: our generation record, or None; ``parameters``: the A1111 text; XMP fields;
    ``problems``: metadata that was there but could not be read."""

    format: str
    record: dict | None = None
    parameters: str | None = None
    digital_source_type: str | None = None
    creator_tool: str | None = None
    description: str | None = None
    xmp: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ai_generated(self) -> bool:
        return self.digital_source_type == TRAINED_ALGORITHMIC_MEDIA

    def to_dict(self) -> dict:
        return {"format": self.format, "record": self.record, "parameters": self.parameters,
                "digital_source_type": self.digital_source_type, "creator_tool": self.creator_tool,
                "description": self.description, "xmp": self.xmp, "problems": self.problems}


def file_bytes(path: str | os.PathLike) -> bytes:
    """A picture file's bytes, refused (ImageFileError) when missing or over the size limit."""
    return checked_file(path).read_bytes()


def open_image(source: str | os.PathLike | bytes | Image.Image, name: str = "the image") -> Image.Image:
    """A picture from a path, bytes or an opened image, decoded as it is stored (no EXIF rotation:
    the watermark is in the stored pixels) under the size limits of `pixelchat.imagefiles`;
    ImageFileError (a ValueError) for anything missing, oversized or unreadable."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (str, os.PathLike)):
        source, name = file_bytes(source), str(source)
    data = bytes(source)
    if len(data) > MAX_FILE_BYTES:
        raise ImageFileError(f"{name} is {len(data) / 2**20:.1f} MiB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MiB")
    try:
        im = Image.open(io.BytesIO(data))
        if im.width * im.height > MAX_PIXELS:
            raise ImageFileError(f"{name} is {im.width}×{im.height} pixels; the limit is {MAX_PIXELS:,} pixels")
        im.load()
        return im
    except ImageFileError:
        raise
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise ImageFileError(f"{name} is not a readable image ({type(e).__name__}: {e})") from None


def read_provenance(source: str | os.PathLike | bytes | Image.Image) -> Provenance:
    """Our record, the ``parameters`` text and the XMP fields from a PNG, JPEG or WebP file (a path,
    its bytes, or the opened image). Missing parts are None; unreadable ones are named in ``problems``."""
    return provenance_of(open_image(source))


def provenance_of(im: Image.Image) -> Provenance:
    fmt = (im.format or "").lower() or "unknown"
    p = Provenance(format="jpeg" if fmt == "mpo" else fmt)
    info, text = im.info, getattr(im, "text", None) or {}

    # the record: PNG iTXt, JPEG COM, else the XMP (WebP)
    raw = text.get(RECORD_KEY, info.get(RECORD_KEY))
    if isinstance(raw, dict):  # set in memory by pixelchat.generate
        p.record = raw
    elif raw is not None:
        p.record = _json_record(raw, "the pixelchat text chunk", p.problems)
    comment = info.get("comment")
    if p.record is None and isinstance(comment, bytes) and comment.startswith(COMMENT_PREFIX):
        p.record = _json_record(comment[len(COMMENT_PREFIX):].decode("utf-8", "replace"), "the JPEG comment", p.problems)

    # parameters: PNG text, else EXIF UserComment
    parameters = text.get(PARAMETERS_KEY, info.get(PARAMETERS_KEY))
    p.parameters = parameters if isinstance(parameters, str) else _exif_parameters(im, p.problems)

    # XMP
    packet = info.get("xmp") or text.get(XMP_KEY) or info.get(XMP_KEY)
    if packet:
        p.xmp = True
        fields = _parse_xmp(packet, p.problems)
        p.digital_source_type = fields.get("DigitalSourceType")
        p.creator_tool = fields.get("CreatorTool")
        p.description = fields.get("description")
        if p.record is None and fields.get("Record"):
            p.record = _json_record(fields["Record"], "the XMP record", p.problems)
    return p


def _json_record(raw: str, where: str, problems: list[str]) -> dict | None:
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        problems.append(f"{where} is not valid JSON")
        return None
    if not isinstance(record, dict):
        problems.append(f"{where} is not a JSON object")
        return None
    return record


def _exif_parameters(im: Image.Image, problems: list[str]) -> str | None:
    if "exif" not in im.info:
        return None
    try:
        exif = im.getexif()
        raw = exif.get_ifd(IFD.Exif).get(EXIF_USER_COMMENT)
    except Exception as e:  # a broken EXIF block must not stop the rest being read
        problems.append(f"the EXIF block cannot be read ({type(e).__name__})")
        return None
    if not isinstance(raw, bytes) or len(raw) < 8:
        return raw if isinstance(raw, str) and raw else None
    code, body = raw[:8], raw[8:]
    if code == b"UNICODE\0":
        big = exif.endian != "<" if getattr(exif, "endian", None) else True
        return body.decode("utf-16-be" if big else "utf-16-le", "replace")
    if code in (b"ASCII\0\0\0", b"\0" * 8):
        return body.rstrip(b"\0").decode("utf-8", "replace")
    return None


_LOCAL = re.compile(r"^\{[^}]*\}")


def _parse_xmp(packet: bytes | str, problems: list[str]) -> dict[str, str]:
    """The properties we use from an XMP packet, by local name, whether written as attributes or
    elements. Packets with a DTD are refused (no entity expansion from files we are handed)."""
    data = packet.encode("utf-8") if isinstance(packet, str) else bytes(packet)
    if len(data) > MAX_XMP_BYTES or b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        problems.append("the XMP packet is too large or declares a DTD; not read")
        return {}
    start, end = data.find(b"<x:xmpmeta"), data.rfind(b"</x:xmpmeta>")
    body = data[start:end + len(b"</x:xmpmeta>")] if start >= 0 and end > start else data.strip(b"\0 \r\n\t")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        problems.append("the XMP packet is not well-formed XML")
        return {}
    wanted = {"DigitalSourceType", "CreatorTool", "Record", "description"}
    out: dict[str, str] = {}
    for el in root.iter():
        for key, value in el.attrib.items():
            name = _LOCAL.sub("", key)
            if name in wanted and name not in out:
                out[name] = value
        name = _LOCAL.sub("", el.tag)
        if name in wanted and name not in out:
            if name == "DigitalSourceType" and el.get(f"{{{NS['rdf']}}}resource"):
                out[name] = el.get(f"{{{NS['rdf']}}}resource")
            else:
                texts = [t.strip() for t in el.itertext() if t.strip()]
                if texts:
                    out[name] = texts[0]
    return out
