"""Images named by the SHA-256 of their bytes, in a local folder or any fsspec location (s3://bucket/prefix,
memory:// for tests): a picture stored twice is one file, and a name can never point outside the store
(it is always 64 hex digits)."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

SHA = re.compile(r"^[0-9a-f]{64}$")
EXTENSIONS = ("png", "jpeg", "webp")


def filesystem(url: str, **storage_options):
    """The fsspec filesystem and root path of ``url``; a protocol whose package is missing is one clear error."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **storage_options)
    except ImportError as e:
        protocol = url.split("://", 1)[0]
        hint = "pip install 'pixelchat[s3]'" if protocol in ("s3", "s3a") else "install its fsspec package"
        raise ValueError(f"the image store {url!r} needs support for {protocol}:// ({hint}): {e}") from None


class ImageStore:
    """``url``: a folder (local path or file://) or an fsspec URL; ``storage_options`` go to its filesystem
    (credentials and endpoints may also come from the environment, e.g. AWS_* for s3://)."""

    def __init__(self, url: str | Path, **storage_options):
        self.url = str(url)
        self.fs, self.root = filesystem(self.url, **storage_options)
        self.root = self.root.rstrip("/")
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def key(self, sha256: str, ext: str = "png") -> str:
        """Where the picture named ``sha256`` lives in the store's filesystem."""
        if not SHA.match(sha256) or ext not in EXTENSIONS:
            raise ValueError("not an image name")
        return f"{self.root}/{sha256[:2]}/{sha256}.{ext}"

    def path(self, sha256: str, ext: str = "png") -> Path:
        """The picture's file on this machine (a local store only)."""
        if not self.local:
            raise ValueError(f"the image store {self.url!r} is not a local folder")
        return Path(self.key(sha256, ext))

    def put(self, data: bytes, ext: str = "png") -> str:
        sha = hashlib.sha256(data).hexdigest()
        key = self.key(sha, ext)
        if self.fs.exists(key):
            return sha
        if self.local:  # written aside, then renamed: a reader never sees half a file
            path = Path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            # a name of its own: two threads may store the same picture at once
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        else:  # one PUT: object stores make it visible whole or not at all
            self.fs.pipe_file(key, data)
        return sha

    def get(self, sha256: str, ext: str = "png") -> bytes:
        return self.fs.cat_file(self.key(sha256, ext))

    def delete(self, sha256: str) -> None:
        for ext in EXTENSIONS:
            try:
                self.fs.rm_file(self.key(sha256, ext))
            except FileNotFoundError:
                pass
