"""Shared fixtures: a temporary content store of generated media and app clients on loopback ports."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fixtures.generate import fixture_path
from gateway.http.app import make_app
from gateway.settings import Settings

STORE_FILES = ("title_360p.mp4", "title_240p.mp4", "title_180p.mp4", "two_audio.mp4", "audio_only.mp4")
URLSET = "/hls/title_,360p,240p,180p,.mp4.urlset"

MakeClient = Callable[..., Awaitable[TestClient]]


def add_to_store(store: Path, name: str, as_name: str | None = None) -> Path:
    """Copy (not symlink: a link would point outside the store and be refused) a fixture into the store."""
    dest = store / (as_name or name)
    shutil.copyfile(fixture_path(name), dest)
    return dest


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    for name in STORE_FILES:
        add_to_store(root, name)
    return root


@pytest.fixture
async def make_client(store: Path) -> AsyncIterator[MakeClient]:
    clients: list[TestClient] = []

    async def make(**overrides) -> TestClient:
        client = TestClient(TestServer(make_app(Settings(store=store, **overrides))))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client()


async def status(client: TestClient) -> dict:
    response = await client.get("/status")
    assert response.status == 200
    return await response.json()


from .processes import gateways  # noqa: E402,F401  (a fixture: real `gateway serve` processes)
