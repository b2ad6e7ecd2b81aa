"""The image store: content-addressed pictures in a local folder or any fsspec location."""

from __future__ import annotations

import hashlib
import secrets
import sys

import pytest

from conftest import free_port
from pixelchat.server.store import ImageStore

PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 10


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def memory_store():
    import fsspec

    url = f"memory://images-{secrets.token_hex(4)}"
    yield ImageStore(url)
    fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


def stored_files(store: ImageStore) -> list[str]:
    store.fs.invalidate_cache()
    return sorted(store.fs.find(store.root))


def check_round_trip(store: ImageStore) -> None:
    """What every store must do: put, get, the same bytes once, delete (twice is fine)."""
    name = store.put(PNG)
    assert name == sha(PNG) and store.get(name) == PNG
    assert store.put(PNG) == name and stored_files(store) == [store.key(name)]
    assert store.key(name).endswith(f"/{name[:2]}/{name}.png")
    other = store.put(PNG + b"!", "webp")
    assert store.get(other, "webp") == PNG + b"!" and len(stored_files(store)) == 2
    store.delete(name)
    with pytest.raises(FileNotFoundError):
        store.get(name)
    store.delete(name)
    assert stored_files(store) == [store.key(other, "webp")]


def test_a_local_folder_keeps_the_layout_and_writes_whole_files(tmp_path):
    store = ImageStore(tmp_path / "images")
    check_round_trip(store)
    name = store.put(PNG)
    assert store.path(name) == tmp_path / "images" / name[:2] / f"{name}.png" and store.path(name).read_bytes() == PNG
    assert not list((tmp_path / "images").rglob("*.tmp")) and not list((tmp_path / "images").rglob(".*"))


def test_a_memory_store(memory_store):
    check_round_trip(memory_store)
    with pytest.raises(ValueError, match="not a local folder"):
        memory_store.path(sha(PNG))


@pytest.mark.parametrize("name", ["../" + "0" * 61, "A" * 64, "0" * 63, "0" * 64 + "/x", "/" + "0" * 63])
def test_only_sha256_names_are_accepted(tmp_path, name):
    store = ImageStore(tmp_path)
    for call in (store.get, store.key, store.path, store.delete):
        with pytest.raises(ValueError, match="not an image name"):
            call(name)


@pytest.mark.parametrize("ext", ["gif", "png/../x", ""])
def test_only_image_formats_are_accepted(tmp_path, ext):
    store = ImageStore(tmp_path)
    for call in (lambda: store.put(PNG, ext), lambda: store.get(sha(PNG), ext)):
        with pytest.raises(ValueError, match="not an image name"):
            call()
    assert not list(tmp_path.iterdir())


def test_a_missing_filesystem_package_is_one_clear_error(monkeypatch):
    import importlib

    registry = importlib.import_module("fsspec.registry")  # (the package's `registry` attribute is a read-only view)
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if the s3 extra were not installed
    with pytest.raises(ValueError, match=r"s3://.*pip install 'pixelchat\[s3\]'"):
        ImageStore("s3://bucket/images")


def test_the_server_keeps_its_pictures_in_the_configured_store(tmp_path, tiny_model, memory_store):
    from fastapi.testclient import TestClient

    from pixelchat.server.admin import create_key, create_user
    from pixelchat.server.app import create_app
    from pixelchat.server.config import Settings

    settings = Settings(data_dir=tmp_path / "data", model=str(tiny_model), secret_key="s", store_url=memory_store.url)
    app = create_app(settings)
    with app.state.sessions() as db:
        create_user(db, "ada")
        headers = {"Authorization": f"Bearer {create_key(db, 'ada')}"}
    with TestClient(app) as client:
        made = client.post("/v1/images/generations", headers=headers,
                           json={"prompt": "a lake", "n": 2, "response_format": "url"}).json()["data"]
        assert len(stored_files(memory_store)) == 2 and not (tmp_path / "data" / "images").exists()
        assert client.get(made[0]["url"]).content.startswith(b"\x89PNG")
        image = client.get(f"/api/images/{made[0]['id']}", headers=headers).json()
        assert client.get(f"/api/images/{made[0]['id']}/file", headers=headers).content == memory_store.get(image["sha256"])
        assert client.delete(f"/api/images/{made[0]['id']}", headers=headers).status_code == 204
        assert len(stored_files(memory_store)) == 1


def test_an_s3_bucket(tmp_path):
    """Against a local S3 (moto's server on loopback) through s3fs."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        options = {"key": "testing", "secret": "testing", "skip_instance_cache": True,
                   "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "eu-west-1"}}
        store = ImageStore("s3://pictures/served", **options)
        store.fs.mkdir("pictures")
        check_round_trip(store)
        assert store.key(sha(PNG)).startswith("pictures/served/")
    finally:
        server.stop()
