"""Shared fixtures: a tiny real model trained for a few steps on exported scenes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from pixelchat.data.export import export_scenes
from pixelchat.train import train

TINY_MODEL = {"ngf": 4, "ndf": 4, "max_channels": 16}
TINY_TRAIN = {"batch_size": 4, "checkpoint_every": 2, "sample_every": 2, "log_every": 1}


@pytest.fixture(scope="session")
def scenes_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    export_scenes(out, 12, 32, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, scenes_folder):
    """A run folder holding a tiny text GAN trained 3 steps on the exported folder (32 px)."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    train(str(scenes_folder), arch="textgan", size=32, out=out, steps=3, model_options=TINY_MODEL,
          train_options=TINY_TRAIN)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_run):
    return tiny_run / "model.safetensors"


@pytest.fixture(scope="session")
def tiny_judge(tmp_path_factory):
    """A judge trained for a few seconds: real code path, meaningless accuracy."""
    from pixelchat.evaluation.judge import JudgeConfig, train_judge

    out = tmp_path_factory.mktemp("judge") / "judge"
    return train_judge(out, n_train=200, n_test=40, minutes=0.03, batch_size=16, cfg=JudgeConfig(width=4),
                       progress=False)


@pytest.fixture(scope="session")
def tiny_describer(tmp_path_factory):
    """A describer trained for a few seconds: real code path, meaningless accuracy."""
    from pixelchat.vision.describer import DescriberConfig, train_describer

    out = tmp_path_factory.mktemp("describer") / "describer"
    cfg = DescriberConfig(size=32, width=4, d_model=16, layers=1, heads=2, max_words=12)
    return train_describer(out, n_train=120, n_test=20, minutes=0.02, batch_size=8, cfg=cfg, progress=False)


@pytest.fixture(scope="session")
def tiny_inverter(tmp_path_factory, tiny_model):
    from pixelchat.vision.inversion import train_inverter

    out = tmp_path_factory.mktemp("inverter") / "inverter"
    return train_inverter(tiny_model, out, minutes=0.05, batch_size=8, n_captions=8, n_test=8, width=4, progress=False)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model, tiny_describer, tiny_inverter):
    from pixelchat.engines import GANEngine

    return GANEngine(tiny_model, describer=tiny_describer, inverter=tiny_inverter)


def error_of(response, status: int) -> dict:
    """The OpenAI-shaped error of ``response``, after checking its status and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@contextmanager
def serving(data_dir: Path, model, *, engine: str | None = None, users: dict[str, str | None] | None = None):
    """The app in-process serving ``model`` from ``data_dir``, its queue started, with ``users`` (name →
    password or None; default: ada with no password), each with an API key: a TestClient whose ``keys``
    holds them and whose ``as_user(name)`` (default: the first user) gives the headers."""
    from fastapi.testclient import TestClient

    from pixelchat.server.admin import create_key, create_user
    from pixelchat.server.app import create_app
    from pixelchat.server.config import Settings

    users = users or {"ada": None}
    app = create_app(Settings(data_dir=data_dir, model=str(model), engine=engine, secret_key="test-secret"))
    with app.state.sessions() as db:
        for name, password in users.items():
            create_user(db, name, password)
        keys = {name: create_key(db, name) for name in users}
    with TestClient(app) as client:
        client.keys = keys
        client.as_user = lambda who=next(iter(users)): {"Authorization": f"Bearer {keys[who]}"}
        yield client


@pytest.fixture
def server(tmp_path, tiny_model):
    """The app in-process on the tiny model, with users ada (password 'correct horse'), bob and cy, each
    with an API key: ``server.as_user("bob")`` gives the headers."""
    with serving(tmp_path / "data", tiny_model,
                 users={"ada": "correct horse", "bob": "battery staple", "cy": None}) as client:
        yield client


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLI = [sys.executable, "-m", "pixelchat.cli"]


def cli_account(env: dict, name: str) -> str:
    """A server account made with `pixelchat users create`, and its new API key."""
    subprocess.run([*CLI, "users", "create", name], env=env, check=True, capture_output=True)
    out = subprocess.run([*CLI, "keys", "create", name, "--json"], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["key"]


def start_serve(env: dict, port: int, log: Path) -> subprocess.Popen:
    """`pixelchat serve` on ``port``, once it answers /health (its output goes to ``log``)."""
    import httpx

    with open(log, "ab") as out:
        proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                pytest.fail(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.1)
    proc.kill()
    pytest.fail("the server did not start in time")


# --- PostgreSQL: a throwaway cluster on loopback for the database tests ------------------------------

def postgres_bin() -> Path | None:
    """The folder of the newest PostgreSQL server binaries here (Debian's layout, else the PATH)."""
    import shutil

    debian = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parent.parent.name.isdigit()]
    if debian:
        return max(debian, key=lambda p: int(p.parent.name))
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def as_postgres_user(command: list[str]) -> list[str]:
    """``command`` as the `postgres` system user when we are root: initdb and postgres refuse root."""
    import os

    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def create_database(server_url: str) -> str:
    """A new empty database on the server at ``server_url``; returns its URL."""
    import secrets

    from sqlalchemy import create_engine, make_url, text

    name = f"pixelchat_test_{secrets.token_hex(6)}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, url: str) -> None:
    from sqlalchemy import create_engine, make_url, text

    from pixelchat.server.db import get_engine

    get_engine(url).dispose()
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_server():
    """A SQLAlchemy URL of a PostgreSQL server the tests may create databases on: the one named by
    PIXELCHAT_TEST_DATABASE_URL, else a throwaway cluster (initdb into a temporary folder, served on
    127.0.0.1 and a free port, stopped and removed at the end). Without PostgreSQL the tests that need
    it are skipped, or fail when PIXELCHAT_REQUIRE_POSTGRES=1."""
    import os
    import shutil
    import tempfile

    if os.environ.get("PIXELCHAT_TEST_DATABASE_URL"):
        yield os.environ["PIXELCHAT_TEST_DATABASE_URL"]
        return
    bin_dir = postgres_bin()
    if bin_dir is None:
        message = "PostgreSQL is not installed (apt-get install postgresql, or set PIXELCHAT_TEST_DATABASE_URL)"
        if os.environ.get("PIXELCHAT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PIXELCHAT_REQUIRE_POSTGRES=1 but {message}")
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="pixelchat-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    run = lambda *args: subprocess.run(as_postgres_user([str(bin_dir / args[0]), *args[1:]]),  # noqa: E731
                                       check=True, capture_output=True, text=True)
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale", "C", "--no-sync")
        run("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "start", "-o",
            f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=200")
    except subprocess.CalledProcessError as e:
        log = root / "server.log"
        detail = (e.stderr or e.stdout) + (log.read_text() if log.exists() else "")
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL from {bin_dir}: {detail}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh empty PostgreSQL database for one test, dropped after it."""
    url = create_database(postgres_server)
    yield url
    drop_database(postgres_server, url)
