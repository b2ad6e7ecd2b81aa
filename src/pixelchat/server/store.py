"""Images on disk, named by the SHA-256 of their bytes: a picture stored twice is one file, and a
name can never point outside the folder (it is always 64 hex digits)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

SHA = re.compile(r"^[0-9a-f]{64}$")


class ImageStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, sha256: str, ext: str = "png") -> Path:
        if not SHA.match(sha256) or ext not in ("png", "jpeg", "webp"):
            raise ValueError("not an image name")
        return self.root / sha256[:2] / f"{sha256}.{ext}"

    def put(self, data: bytes, ext: str = "png") -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(sha, ext)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha

    def get(self, sha256: str, ext: str = "png") -> bytes:
        return self.path(sha256, ext).read_bytes()

    def delete(self, sha256: str) -> None:
        for ext in ("png", "jpeg", "webp"):
            self.path(sha256, ext).unlink(missing_ok=True)
