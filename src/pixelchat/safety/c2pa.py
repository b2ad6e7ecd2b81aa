"""Content Credentials (C2PA): a signed manifest inside the image saying a trained model made it.

`sign` embeds a manifest into PNG, JPEG or WebP bytes: the ``c2pa.created`` action with the IPTC
digital source type ``trainedAlgorithmicMedia``, and our generation record as the custom assertion
``org.pixelchat.record``. `read_manifest` validates one and reports what it says. Both work offline:
no thumbnails, no timestamp authority unless one is configured, no remote manifests, no OCSP.

An operator's own certificate authority is not on the C2PA trust list, so its manifests read as
``valid`` (signature and hashes check out) but not ``trusted``, unless its root is passed as a trust
anchor. Any change to the pixels after signing makes the manifest invalid
(``assertion.dataHash.mismatch``).

The ``c2pa-python`` package (``pip install 'pixelchat[c2pa]'``) is imported only when used, so this
module always imports; without it the functions raise `C2PAUnavailable`.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pixelchat

RECORD_LABEL = "org.pixelchat.record"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}
ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")

ENV_CERT = "PIXELCHAT_C2PA_CERT"
ENV_KEY = "PIXELCHAT_C2PA_KEY"
ENV_TSA_URL = "PIXELCHAT_C2PA_TSA_URL"

# Failures that only say the certificate chain does not end at an anchor the reader was given.
TRUST_CODES = frozenset({"signingCredential.untrusted"})

# c2pa-rs defaults we change: its thumbnail would add ~36 KB to a 64x64 PNG and ~400 KB to a WebP
# (more than the picture), and reading must never reach the network.
_SETTINGS = {"builder": {"thumbnail": {"enabled": False}},
             "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}

_PROFILE_HINT = ("the signing certificate must be X.509 v3, not a CA, with keyUsage digitalSignature, "
                 "extendedKeyUsage emailProtection (1.3.6.1.5.5.7.3.4), an authorityKeyIdentifier, "
                 "and be valid now; see docs/provenance.md")


class C2PAError(RuntimeError):
    """The C2PA library could not sign or parse an image."""


class C2PAUnavailable(C2PAError):
    """The optional ``c2pa-python`` package is not installed."""


def _c2pa():
    try:
        import c2pa
    except (ImportError, OSError) as e:  # OSError: the wheel's native library failed to load
        raise C2PAUnavailable("Content Credentials need the c2pa-python package: "
                              "pip install 'pixelchat[c2pa]'") from e
    return c2pa


def _crypto():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    except ImportError as e:
        raise C2PAUnavailable("Content Credentials need the cryptography package: "
                              "pip install 'pixelchat[c2pa]'") from e
    return x509, serialization, ec, ed25519, rsa


def available() -> bool:
    """Whether `sign` and `read_manifest` can run here."""
    try:
        _c2pa()
    except C2PAUnavailable:
        return False
    return True


def _mime_type(fmt: str) -> str:
    mime = MIME_TYPES.get(fmt.lower().lstrip("."))
    if mime is None:
        raise ValueError(f"Content Credentials support png, jpeg and webp, not {fmt!r}")
    return mime


@dataclass(frozen=True)
class C2PASigner:
    """What signing needs: a PEM certificate chain (leaf first, without the root), the leaf's PEM
    private key (PKCS#8), the COSE algorithm, and an optional RFC 3161 timestamp authority URL
    (None keeps signing offline). Build one with `from_pem`, which checks all of this."""

    cert_chain: bytes
    private_key: bytes = field(repr=False)
    algorithm: str = "es256"
    tsa_url: str | None = None

    @classmethod
    def from_pem(cls, cert_chain: bytes, private_key: bytes, *, tsa_url: str | None = None,
                 check: bool = True) -> C2PASigner:
        """A signer from PEM bytes: the algorithm is read from the key, any PEM key is stored as
        PKCS#8 (the only form c2pa-rs reads), and the key must belong to the first certificate.
        With ``check`` a 1x1 PNG is signed and verified, so a certificate profile C2PA rejects
        fails here rather than on the first image. Raises ValueError saying what to fix."""
        key_pem, algorithm = _load_credentials(cert_chain, private_key)
        if tsa_url is not None and not tsa_url.startswith(("http://", "https://")):
            raise ValueError(f"the timestamp authority URL must be http(s), got {tsa_url!r}")
        signer = cls(cert_chain=cert_chain, private_key=key_pem, algorithm=algorithm, tsa_url=tsa_url)
        if check:
            _check_signer(signer)
        return signer


def _load_credentials(cert_chain: bytes, private_key: bytes) -> tuple[bytes, str]:
    """(PKCS#8 PEM key, algorithm) after checking the key matches the chain's first certificate."""
    x509, serialization, ec, ed25519, rsa = _crypto()
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        certs = x509.load_pem_x509_certificates(cert_chain)
    except ValueError as e:
        raise ValueError(f"the certificate chain is not PEM certificates: {e}") from None
    try:
        key = serialization.load_pem_private_key(private_key, password=None)
    except TypeError:
        raise ValueError("the private key is encrypted; give an unencrypted PEM key "
                         "(openssl pkcs8 -topk8 -nocrypt)") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ValueError(f"the private key is not a readable PEM private key: {e}") from None

    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    public = key.public_key().public_bytes(*spki)
    if certs[0].public_key().public_bytes(*spki) != public:
        if any(c.public_key().public_bytes(*spki) == public for c in certs[1:]):
            raise ValueError("the private key belongs to a later certificate in the chain; "
                             "put the signing (leaf) certificate first")
        raise ValueError("the private key does not match the signing certificate "
                         "(the first certificate in the chain)")

    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}.get(key.curve.name)
        if algorithm is None:
            raise ValueError(f"C2PA signs with EC curves P-256, P-384 or P-521, not {key.curve.name}")
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm = "ed25519"
    elif isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ValueError(f"C2PA needs RSA keys of at least 2048 bits, not {key.key_size}")
        algorithm = "ps256"  # C2PA allows RSA only with PSS padding
    else:
        raise ValueError(f"C2PA cannot sign with a {type(key).__name__}; use an EC P-256 key")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, algorithm


def _check_signer(signer: C2PASigner) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    try:
        sign(buf.getvalue(), "png", {}, signer)
    except C2PAUnavailable:
        raise
    except C2PAError as e:
        raise ValueError(f"C2PA rejects these signing credentials: {e}; {_PROFILE_HINT}") from None


def signer_from_env(environ: Mapping[str, str] | None = None) -> C2PASigner | None:
    """The signer named by PIXELCHAT_C2PA_CERT (PEM chain, leaf first) and PIXELCHAT_C2PA_KEY (PEM
    private key), with PIXELCHAT_C2PA_TSA_URL if set; None when neither path is set. Raises
    ValueError when only one is set, a file cannot be read, or the credentials do not sign."""
    env = os.environ if environ is None else environ
    cert_path, key_path = env.get(ENV_CERT) or None, env.get(ENV_KEY) or None
    if cert_path is None and key_path is None:
        return None
    if cert_path is None or key_path is None:
        missing = ENV_CERT if cert_path is None else ENV_KEY
        raise ValueError(f"Content Credentials need both {ENV_CERT} and {ENV_KEY}; {missing} is not set")
    cert_chain, private_key = _read(cert_path, ENV_CERT), _read(key_path, ENV_KEY)
    try:
        return C2PASigner.from_pem(cert_chain, private_key, tsa_url=env.get(ENV_TSA_URL) or None)
    except ValueError as e:
        raise ValueError(f"{ENV_CERT}={cert_path}, {ENV_KEY}={key_path}: {e}") from None


def _read(path: str, name: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise ValueError(f"{name}={path} cannot be read: {e.strerror or e}") from None


def manifest_definition(record: dict, *, title: str) -> dict:
    """The manifest we sign: who made it, that a trained model made it, and our record."""
    version = pixelchat.__version__
    agent = {"name": "pixelchat", "version": version}
    created = {"action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
               "softwareAgent": agent}
    # C2PA 2.x claims carry claim_generator_info; the 1.x claim_generator string is dropped by c2pa-rs.
    return {"claim_generator_info": [agent], "title": title,
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [created]}},
                           {"label": RECORD_LABEL, "data": record}]}


def sign(data: bytes, fmt: str, record: dict, signer: C2PASigner, *, title: str | None = None) -> bytes:
    """``data`` (an image in ``fmt``: png, jpeg or webp) with a signed C2PA manifest embedded.
    ``title`` defaults to the record's prompt. Raises C2PAError when the library refuses."""
    mime = _mime_type(fmt)
    c2pa = _c2pa()
    if signer.algorithm not in ALGORITHMS:
        raise ValueError(f"unknown signing algorithm {signer.algorithm!r}; expected one of {ALGORITHMS}")
    title = title or (record.get("prompt") or "pixelchat image")[:200]
    info = c2pa.C2paSignerInfo(signer.algorithm, signer.cert_chain, signer.private_key, signer.tsa_url)
    out = io.BytesIO()
    try:
        with c2pa.Context.from_dict(_SETTINGS) as context, c2pa.Signer.from_info(info) as c2pa_signer, \
                c2pa.Builder(manifest_definition(record, title=title), context=context) as builder:
            builder.sign(c2pa_signer, mime, io.BytesIO(data), out)
    except c2pa.C2paError as e:
        raise C2PAError(f"could not sign the {fmt} image: {e}") from e
    return out.getvalue()


@dataclass
class ManifestReport:
    """What an image's active C2PA manifest says and whether it holds up.

    ``valid``: the signature, the certificate profile and every hash check out. ``trusted``: also
    chains to a trust anchor given to `read_manifest`. ``errors`` are the failures that make it
    invalid, ``warnings`` the trust failures alone (``code: explanation``)."""

    valid: bool
    trusted: bool
    errors: list[str]
    warnings: list[str]
    record: dict | None
    signer: str | None  # the signing certificate's organization (what viewers show as "issued by")
    signer_common_name: str | None
    claim_generator: str | None
    digital_source_type: str | None
    title: str | None = None


def read_manifest(data: bytes, fmt: str, *, trust_anchors: bytes | None = None) -> ManifestReport | None:
    """The validated manifest in ``data`` (png, jpeg or webp), or None when it has none.
    ``trust_anchors``: PEM root certificates to trust (say, the operator's own CA). Raises
    C2PAError when the bytes cannot be parsed as ``fmt``."""
    mime = _mime_type(fmt)
    c2pa = _c2pa()
    settings = dict(_SETTINGS)
    if trust_anchors:
        settings["trust"] = {"user_anchors": trust_anchors.decode("ascii", "replace")}
    try:
        context = c2pa.Context.from_dict(settings)
    except c2pa.C2paError as e:
        raise ValueError(f"trust_anchors is not a PEM certificate bundle: {e}") from None
    try:
        with context:
            reader = c2pa.Reader.try_create(mime, io.BytesIO(data), context=context)
            if reader is None:
                return None
            with reader:
                store = json.loads(reader.json())
                cr_store = json.loads(reader.crjson()) if hasattr(reader, "crjson") else {}
    except c2pa.C2paError as e:
        raise C2PAError(f"could not read the {fmt} image: {e}") from e
    return _report(store, cr_store)


def _report(store: dict, cr_store: dict) -> ManifestReport:
    """A `ManifestReport` from c2pa's two renderings of a manifest store: ``Reader.json()`` (validation
    state, signature info) and ``Reader.crjson()`` (assertion data)."""
    label = store.get("active_manifest")
    manifest = store.get("manifests", {}).get(label, {})
    failures = [(s.get("code", ""), ": ".join(filter(None, (s.get("code"), s.get("explanation")))))
                for s in store.get("validation_status") or []]
    errors = [text for code, text in failures if code not in TRUST_CODES]
    warnings = [text for code, text in failures if code in TRUST_CODES]
    state = store.get("validation_state")  # "Invalid", "Valid" or "Trusted"
    valid = state in ("Valid", "Trusted") if state else not errors

    # Reader.json() renders arrays of small integers as base64 bytes and wraps values over 255
    # (contentauth/c2pa-rs#2570; the stored CBOR is right), so our record comes from crJSON.
    cr_manifest = next((m for m in cr_store.get("manifests", []) if m.get("label") == label), {})
    record = cr_manifest.get("assertions", {}).get(RECORD_LABEL)
    source_type = None
    for assertion in manifest.get("assertions", []):
        name, body = assertion.get("label", ""), assertion.get("data") or {}
        if name == RECORD_LABEL and record is None:
            record = body
        elif name.split(".v")[0] == "c2pa.actions":
            created = [a for a in body.get("actions", []) if a.get("action") == "c2pa.created"]
            source_type = source_type or (created[0].get("digitalSourceType") if created else None)

    generator = manifest.get("claim_generator")
    if not generator and manifest.get("claim_generator_info"):
        info = manifest["claim_generator_info"][0]
        generator = "/".join(str(info[k]) for k in ("name", "version") if info.get(k))
    signature = manifest.get("signature_info") or {}
    return ManifestReport(valid=valid, trusted=state == "Trusted", errors=errors, warnings=warnings,
                          record=record, signer=signature.get("issuer"),
                          signer_common_name=signature.get("common_name"),
                          claim_generator=generator or None, digital_source_type=source_type,
                          title=manifest.get("title"))
