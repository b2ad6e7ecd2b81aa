"""`verify`: what a picture file says about where it came from, and whether the parts agree.

It reads, independently: the metadata (our record, the A1111 ``parameters`` text, XMP with the
IPTC digital source type), the invisible watermark in the pixels, and a C2PA manifest when the
optional `pixelchat.safety.c2pa` support is there. Then it cross-checks them:

- the watermark carries a hash of the record it was made for; a different record in the
  metadata (or in the C2PA manifest) means the record or the pixels were changed;
- the ``parameters`` text and the XMP description must say what the record says;
- a C2PA manifest must validate, and its record must be the metadata's.

``found``: any of these was present. ``agree``: nothing contradicts anything else. The exit code of
``pixelchat verify`` is 0 when something was found and all of it agrees, 1 when nothing was found
or something disagrees, 2 when the file cannot be read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from pixelchat.imagefiles import a1111_parameters
from pixelchat.safety.provenance import Provenance, file_bytes, open_image, provenance_of
from pixelchat.safety.watermark import MIN_SIDE, SYNC_BITS, Detection, detect, record_hash


@dataclass
class WatermarkCheck:
    """status: 'found', 'not found' or 'too small'; ``detection`` has the figures;
    ``matches_record``: whether its hash is the record's (None without a record to compare)."""

    status: str
    detection: Detection | None = None
    matches_record: bool | None = None

    def to_dict(self) -> dict:
        out = {"status": self.status, "matches_record": self.matches_record}
        if self.detection is not None:
            out.update(self.detection.to_dict())
        return out


@dataclass
class C2PACheck:
    """status: 'valid', 'invalid', 'absent' or 'not checked' (``reason`` says why)."""

    status: str
    reason: str | None = None
    errors: list[str] = field(default_factory=list)
    record: dict | None = None
    signer: str | None = None
    claim_generator: str | None = None
    trusted: bool | None = None  # chains to a trust anchor (an operator's own CA is not on the C2PA list)

    def to_dict(self) -> dict:
        return {"status": self.status, "reason": self.reason, "errors": self.errors, "signer": self.signer,
                "claim_generator": self.claim_generator, "trusted": self.trusted,
                "has_record": self.record is not None}


@dataclass
class Report:
    source: str
    format: str
    size: tuple[int, int]
    provenance: Provenance
    watermark: WatermarkCheck
    c2pa: C2PACheck
    disagreements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        """Whether anything about the picture's origin was found."""
        p = self.provenance
        generation_parameters = p.parameters is not None and "Steps: " in p.parameters  # A1111's line, not any comment
        return (p.record is not None or generation_parameters or p.ai_generated
                or self.watermark.status == "found" or self.c2pa.status in ("valid", "invalid"))

    @property
    def agree(self) -> bool:
        return not self.disagreements

    @property
    def exit_code(self) -> int:
        return 0 if self.found and self.agree else 1

    def to_dict(self) -> dict:
        return {"file": self.source, "format": self.format, "size": list(self.size), "found": self.found,
                "agree": self.agree, "disagreements": self.disagreements, "notes": self.notes,
                "metadata": self.provenance.to_dict(), "watermark": self.watermark.to_dict(),
                "c2pa": self.c2pa.to_dict()}


def verify(source: str | os.PathLike | bytes) -> Report:
    """Read and cross-check a picture's provenance (see the module docstring). ``source``: a path or
    the file's bytes. Unreadable, missing or oversized files raise ImageFileError (a ValueError)."""
    if isinstance(source, (str, os.PathLike)):
        name, data = str(source), file_bytes(source)
    else:
        name, data = "<bytes>", bytes(source)
    image = open_image(data, name)

    # 1. read each part on its own
    prov = provenance_of(image)
    mark = check_watermark(image)
    c2pa = check_c2pa(data, prov.format)
    report = Report(name, prov.format, image.size, prov, mark, c2pa)

    # 2. cross-check them
    record = prov.record if prov.record is not None else c2pa.record
    cross_check(report, record)
    return report


def check_watermark(image: Image.Image) -> WatermarkCheck:
    d = detect(image)
    if d.too_small:
        return WatermarkCheck("too small", d)
    return WatermarkCheck("found" if d.found else "not found", d)


def trust_anchors() -> bytes | None:
    """PEM root certificates to trust from PIXELCHAT_C2PA_TRUST_ANCHORS (say, the operator's own CA)."""
    path = os.environ.get("PIXELCHAT_C2PA_TRUST_ANCHORS")
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"PIXELCHAT_C2PA_TRUST_ANCHORS: cannot read {path} ({e.strerror})") from None


def check_c2pa(data: bytes, fmt: str) -> C2PACheck:
    """The C2PA manifest, through `pixelchat.safety.c2pa` when it and the c2pa package are installed."""
    if fmt not in ("png", "jpeg", "webp"):
        return C2PACheck("not checked", f"{fmt} files are not read for C2PA")
    try:
        from pixelchat.safety import c2pa
    except ImportError as e:
        return C2PACheck("not checked", f"C2PA support is not installed ({e})")
    unavailable = getattr(c2pa, "C2PAUnavailable", ImportError)
    anchors = trust_anchors()
    try:
        manifest = c2pa.read_manifest(data, fmt, trust_anchors=anchors)
    except (ImportError, unavailable) as e:
        return C2PACheck("not checked", f"the c2pa package is not installed ({e})")
    except Exception as e:  # a reader failure is reported, never taken for "no manifest"
        return C2PACheck("not checked", f"the manifest could not be read ({type(e).__name__}: {e})")
    if manifest is None:
        return C2PACheck("absent")
    return C2PACheck("valid" if manifest.valid else "invalid", errors=list(manifest.errors or []),
                     record=manifest.record, signer=manifest.signer, claim_generator=manifest.claim_generator,
                     trusted=getattr(manifest, "trusted", None))


def cross_check(report: Report, record: dict | None) -> None:
    """Fill ``report.disagreements`` and ``report.notes``; ``record``: the metadata's, else the manifest's."""
    prov, mark, c2pa = report.provenance, report.watermark, report.c2pa
    bad, notes = report.disagreements, report.notes
    d = mark.detection

    if record is not None and d is not None and mark.status == "found":
        expected = record_hash(record)
        mark.matches_record = d.matches(expected)
        if not mark.matches_record:
            bad.append(f"the watermark was made for another record (hash {d.hash32:08x}, the record's is "
                       f"{expected:08x}): the record or the picture was changed")
    elif record is not None and mark.status == "not found":
        if min(report.size) >= MIN_SIDE:
            notes.append("the record says pixelchat made this picture but its pixels carry no pixelchat watermark: "
                         "it was written before watermarks, changed heavily, or the record was put on another picture")
    elif record is None and mark.status == "found":
        notes.append(f"the pixels carry a pixelchat watermark (record hash {d.hash32:08x}) but the file has no record: "
                     "its metadata was removed")
    if mark.status == "too small":
        notes.append(f"the picture is too small for a watermark (pixelchat marks pictures from {MIN_SIDE} px on)")

    if prov.record is not None:
        if prov.parameters is not None and prov.parameters != a1111_parameters(prov.record):
            bad.append("the 'parameters' text does not say what the record says")
        prompt = prov.record.get("prompt")
        if prov.description is not None and prompt is not None and prov.description.strip() != str(prompt).strip():
            bad.append("the XMP description is not the record's prompt")
        if c2pa.record is not None and c2pa.record != prov.record:
            bad.append("the C2PA manifest's record is not the file's record")
    if c2pa.status == "invalid":
        bad.append("the C2PA manifest does not validate" + (f": {'; '.join(c2pa.errors)}" if c2pa.errors else ""))
    for problem in prov.problems:
        bad.append(f"unreadable metadata: {problem}")


def summary(report: Report) -> list[tuple[str, str, bool | None]]:
    """The report as (part, what was found, good / bad / neutral) lines for people."""
    p, mark, c2pa, d = report.provenance, report.watermark, report.c2pa, report.watermark.detection
    lines: list[tuple[str, str, bool | None]] = [("file", f"{report.source} ({report.format}, {report.size[0]}×{report.size[1]})", None)]
    if p.record is not None:
        r = p.record
        model = r.get("model") if isinstance(r.get("model"), dict) else {}
        lines.append(("record", f"prompt {str(r.get('prompt', ''))!r}, seed {r.get('seed')}, model {model.get('id')} "
                                f"({str(model.get('sha256') or '')[:12]}), pixelchat {r.get('pixelchat_version')}, "
                                f"{r.get('created')}", True))
    else:
        lines.append(("record", "absent", None))
    lines.append(("parameters", "present" if p.parameters is not None else "absent", True if p.parameters else None))
    if p.xmp:
        kind = "AI-generated (trainedAlgorithmicMedia)" if p.ai_generated else (p.digital_source_type or "no source type")
        lines.append(("XMP", f"digital source type: {kind}; creator tool: {p.creator_tool}", p.ai_generated or None))
    else:
        lines.append(("XMP", "absent", None))
    if mark.status == "found":
        match = {True: ", matches the record", False: ", does NOT match the record", None: ""}[mark.matches_record]
        lines.append(("watermark", f"found: record hash {d.hash32:08x}{match} (p ≤ {d.p_value:.1e}, "
                                   f"{d.sync_matched}/{SYNC_BITS} sync bits close)", mark.matches_record is not False))
    elif mark.status == "too small":
        lines.append(("watermark", f"not embedded: the picture is too small (pixelchat marks from {MIN_SIDE} px)", None))
    else:
        lines.append(("watermark", f"not found (best p {d.p_value:.2g})" if d else "not found", None))
    c2pa_text = c2pa.status + (f" ({c2pa.reason})" if c2pa.reason else "")
    if c2pa.status in ("valid", "invalid"):
        c2pa_text += f", signed by {c2pa.signer}" if c2pa.signer else ""
        c2pa_text += "" if c2pa.trusted else ", not on a trust list" if c2pa.status == "valid" else ""
    lines.append(("C2PA", c2pa_text, {"valid": True, "invalid": False}.get(c2pa.status)))
    for note in report.notes:
        lines.append(("note", note, None))
    for problem in report.disagreements:
        lines.append(("disagrees", problem, False))
    verdict = ("nothing about its origin was found" if not report.found
               else "everything found agrees" if report.agree else "the parts disagree: changed after it was made")
    lines.append(("verdict", verdict, report.found and report.agree))
    return lines
