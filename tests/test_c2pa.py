"""Content Credentials: sign real PNG, JPEG and WebP files with a certificate chain made here, read
them back, and check that changed pixels, missing manifests and bad credentials are reported."""

from __future__ import annotations

import datetime as dt
import io
import struct
import sys

import pytest

pytest.importorskip("c2pa")
from cryptography import x509  # noqa: E402  (installed with c2pa-python)
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402
from PIL import Image  # noqa: E402

import pixelchat  # noqa: E402
from pixelchat.safety import c2pa as cc  # noqa: E402

FORMATS = ["png", "jpeg", "webp"]
RECORD = {"prompt": "a red circle above a blue square", "negative_prompt": None, "seed": 1234567,
          "truncation": 0.7, "size": [64, 64], "engine": "gan", "pixelchat_version": pixelchat.__version__,
          "model": {"id": "pixelchat-scenes64", "sha256": "5de772a95c45aec57fd90ac43ec087e8f3b7ca79d8087055d305776b67207e01",
                    "arch": "textgan", "text_encoder": "all-MiniLM-L6-v2"},
          "created": "2026-01-02T03:04:05+00:00"}


# -- a certificate chain shaped the way C2PA requires (C2PA 2.x §14.5, checked by c2pa-rs) ------------

def _name(common_name: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca: bool,
                 eku: list | None = None, days: int = 30) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    usage = dict.fromkeys(["content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
                           "encipher_only", "decipher_only"], False)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, **usage),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key, fmt=serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Root CA -> intermediate CA -> leaf (EC P-256, emailProtection), written as the operator would."""
    root_key, inter_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root_name = _name("Test Root CA", "Test Operator")
    inter_name = _name("Test Intermediate CA", "Test Operator")
    root = _certificate(root_name, root_key, root_name, root_key, ca=True)
    inter = _certificate(inter_name, inter_key, root_name, root_key, ca=True)
    leaf = _certificate(_name("pixelchat signer", "Test Studio"), leaf_key, inter_name, inter_key, ca=False,
                        eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION])
    folder = tmp_path_factory.mktemp("pki")
    (folder / "chain.pem").write_bytes(_pem(leaf) + _pem(inter))
    (folder / "key.pem").write_bytes(_key_pem(leaf_key))
    (folder / "root.pem").write_bytes(_pem(root))
    return {"folder": folder, "root": _pem(root), "inter": inter, "inter_key": inter_key, "inter_name": inter_name,
            "leaf": leaf, "leaf_key": leaf_key, "chain": _pem(leaf) + _pem(inter), "key": _key_pem(leaf_key)}


@pytest.fixture(scope="module")
def signer(pki):
    return cc.C2PASigner.from_pem(pki["chain"], pki["key"])


def picture(fmt: str) -> bytes:
    """A 64x64 gradient, encoded as ``fmt``."""
    image = Image.new("RGB", (64, 64))
    image.putdata([(4 * x, 4 * y, 128) for y in range(64) for x in range(64)])
    buf = io.BytesIO()
    image.save(buf, format=fmt.upper())
    return buf.getvalue()


def flip_pixel_byte(data: bytes, fmt: str) -> bytes:
    """``data`` with one byte of compressed pixel data changed, manifest untouched."""
    if fmt == "jpeg":
        at = data.rindex(b"\xff\xda") + 20  # inside the scan; stuffing keeps FF DA out of entropy data
    else:  # walk PNG chunks / RIFF chunks to the pixel chunk
        pos, pixel_chunks = (8, (b"IDAT",)) if fmt == "png" else (12, (b"VP8 ", b"VP8L"))
        while True:
            if fmt == "png":
                length, kind = struct.unpack(">I4s", data[pos:pos + 8])
                size = 12 + length
            else:
                kind, length = struct.unpack("<4sI", data[pos:pos + 8])
                size = 8 + length + (length & 1)
            if kind in pixel_chunks:
                at = pos + 8 + length // 2
                break
            pos += size
    out = bytearray(data)
    out[at] ^= 0x5A
    return bytes(out)


# -- signing and reading -------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_signed_image_reads_back_valid_with_our_record(signer, fmt):
    original = picture(fmt)
    signed = cc.sign(original, fmt, RECORD, signer)
    report = cc.read_manifest(signed, fmt)

    assert report is not None and report.valid, report
    assert report.errors == []
    assert report.record == RECORD
    assert report.digital_source_type == cc.TRAINED_ALGORITHMIC_MEDIA
    assert report.claim_generator == f"pixelchat/{pixelchat.__version__}"
    assert report.title == RECORD["prompt"]
    assert (report.signer, report.signer_common_name) == ("Test Studio", "pixelchat signer")
    # the operator's CA is not on the C2PA trust list: valid, but untrusted, and said so
    assert not report.trusted
    assert [w.split(":")[0] for w in report.warnings] == ["signingCredential.untrusted"]
    # the picture itself is unchanged and still opens anywhere
    assert len(signed) - len(original) < 8000
    assert Image.open(io.BytesIO(signed)).tobytes() == Image.open(io.BytesIO(original)).tobytes()


def test_operator_root_as_trust_anchor_makes_it_trusted(signer, pki):
    signed = cc.sign(picture("png"), "png", RECORD, signer)
    report = cc.read_manifest(signed, "png", trust_anchors=pki["root"])
    assert report.valid and report.trusted and report.warnings == [] and report.errors == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_changed_pixels_make_the_manifest_invalid(signer, fmt):
    signed = cc.sign(picture(fmt), fmt, RECORD, signer)
    report = cc.read_manifest(flip_pixel_byte(signed, fmt), fmt)
    assert report is not None and not report.valid
    assert any(e.startswith("assertion.dataHash.mismatch") for e in report.errors), report.errors


def test_edited_record_makes_the_manifest_invalid(signer):
    signed = cc.sign(picture("png"), "png", RECORD, signer, title="circle.png")
    assert signed.count(b"a red circle") == 1  # the record is stored uncompressed: easy to forge
    report = cc.read_manifest(signed.replace(b"a red circle", b"a red square"), "png")
    assert not report.valid
    assert any(e.startswith("assertion.hashedURI.mismatch") for e in report.errors), report.errors


@pytest.mark.parametrize("fmt", FORMATS)
def test_image_without_manifest_reads_none(fmt):
    assert cc.read_manifest(picture(fmt), fmt) is None


def test_bad_input_is_refused_clearly(signer):
    with pytest.raises(ValueError, match="png, jpeg and webp"):
        cc.sign(picture("png"), "gif", RECORD, signer)
    with pytest.raises(cc.C2PAError, match="could not sign the png image"):
        cc.sign(picture("jpeg"), "png", RECORD, signer)
    with pytest.raises(cc.C2PAError, match="could not read the png image"):
        cc.read_manifest(b"not an image", "png")
    with pytest.raises(ValueError, match="trust_anchors is not a PEM certificate bundle"):
        cc.read_manifest(picture("png"), "png", trust_anchors=b"not a certificate")


# -- credentials -------------------------------------------------------------------------------------

def test_signer_from_env(pki):
    folder = pki["folder"]
    env = {cc.ENV_CERT: str(folder / "chain.pem"), cc.ENV_KEY: str(folder / "key.pem")}
    assert cc.signer_from_env({}) is None
    signer = cc.signer_from_env(env)
    assert signer.algorithm == "es256" and signer.tsa_url is None
    assert "PRIVATE KEY" not in repr(signer)

    with pytest.raises(ValueError, match=f"{cc.ENV_KEY} is not set"):
        cc.signer_from_env({cc.ENV_CERT: env[cc.ENV_CERT]})
    missing = str(folder / "nope.pem")
    with pytest.raises(ValueError, match=f"{cc.ENV_KEY}={missing} cannot be read: No such file"):
        cc.signer_from_env({**env, cc.ENV_KEY: missing})
    other_key = folder / "other.pem"
    other_key.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ValueError, match="does not match the signing certificate"):
        cc.signer_from_env({**env, cc.ENV_KEY: str(other_key)})
    with pytest.raises(ValueError, match="must be http"):
        cc.signer_from_env({**env, cc.ENV_TSA_URL: "ftp://tsa.example"})


def test_from_pem_normalises_keys_and_checks_the_chain(pki):
    # an "EC PRIVATE KEY" (SEC1) file works: stored as PKCS#8, the only form c2pa-rs reads
    sec1 = _key_pem(pki["leaf_key"], serialization.PrivateFormat.TraditionalOpenSSL)
    signer = cc.C2PASigner.from_pem(pki["chain"], sec1)
    assert signer.private_key.startswith(b"-----BEGIN PRIVATE KEY-----")
    # P-384 keys sign as es384
    key384 = ec.generate_private_key(ec.SECP384R1())
    leaf384 = _certificate(_name("p384", "Test Studio"), key384, pki["inter_name"], pki["inter_key"], ca=False,
                           eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION])
    assert cc.C2PASigner.from_pem(_pem(leaf384) + _pem(pki["inter"]), _key_pem(key384)).algorithm == "es384"

    with pytest.raises(ValueError, match="put the signing \\(leaf\\) certificate first"):
        cc.C2PASigner.from_pem(_pem(pki["inter"]) + _pem(pki["leaf"]), pki["key"])
    with pytest.raises(ValueError, match="not PEM certificates"):
        cc.C2PASigner.from_pem(b"garbage", pki["key"])


def test_certificate_c2pa_rejects_fails_at_load_time(pki):
    # no extendedKeyUsage: c2pa-rs refuses the leaf, and we say so before any image is signed
    leaf = _certificate(_name("no eku", "Test Studio"), pki["leaf_key"], pki["inter_name"], pki["inter_key"],
                        ca=False)
    with pytest.raises(ValueError, match="C2PA rejects these signing credentials.*extendedKeyUsage"):
        cc.C2PASigner.from_pem(_pem(leaf) + _pem(pki["inter"]), pki["key"])


def test_missing_package_raises_c2pa_unavailable(signer, monkeypatch):
    monkeypatch.setitem(sys.modules, "c2pa", None)  # makes `import c2pa` fail
    assert not cc.available()
    with pytest.raises(cc.C2PAUnavailable, match="pip install"):
        cc.sign(picture("png"), "png", RECORD, signer)
    with pytest.raises(cc.C2PAUnavailable):
        cc.read_manifest(picture("png"), "png")


def test_an_operator_certificate_signs_every_file_written_and_verify_trusts_its_root(pki, tmp_path):
    """`pixelchat generate` with PIXELCHAT_C2PA_CERT/KEY set writes signed files; `pixelchat verify`
    finds the manifest valid, its record the file's own, and (given the root) trusted."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELCHAT_")}
    env.update(PIXELCHAT_C2PA_CERT=str(pki["folder"] / "chain.pem"), PIXELCHAT_C2PA_KEY=str(pki["folder"] / "key.pem"))
    cli = [sys.executable, "-m", "pixelchat.cli"]
    out = subprocess.run([*cli, "generate", "a lake at dawn", "--seed", "2", "--out", str(tmp_path), "--json"],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path = json.loads(out.stdout)["files"][0]
    env["PIXELCHAT_C2PA_TRUST_ANCHORS"] = str(pki["folder"] / "root.pem")
    checked = subprocess.run([*cli, "verify", path, "--json"], env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["agree"] and report["c2pa"]["status"] == "valid" and report["c2pa"]["trusted"] is True
    assert report["c2pa"]["has_record"]
    # a key that does not belong to the certificate stops the command before it writes anything
    env["PIXELCHAT_C2PA_KEY"] = str(tmp_path / "nope.pem")
    (tmp_path / "nope.pem").write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1())))
    refused = subprocess.run([*cli, "generate", "a lake", "--out", str(tmp_path / "more")], env=env,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "does not match" in refused.stderr, refused.stderr
    assert not list((tmp_path / "more").glob("*.png"))
