"""A server follows the champion through Git: a rollback committed and pushed is served after SIGHUP
(or the next poll), and requests made all through the swap succeed."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.serving.server import ServeConfig, Server
from tests.registry.repos import git
from tests.serving.conftest import Trained

pytestmark = pytest.mark.slow

INFER = "/v2/models/demo.tiny/infer"
BODY = {"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP64", "data": [1.4, 0.2, 4.5, 1.5]}]}
MAX_REQUESTS = 400


async def served_version(client: TestClient[Any, Any]) -> str:
    response = await client.post(INFER, json=BODY)
    assert response.status == 200, await response.text()
    return str((await response.json())["model_version"])


async def test_a_rollback_pushed_to_the_remote_is_served_on_sighup_without_a_failed_request(
    trained: Trained, tmp_path: Path
) -> None:
    url = trained.repos.remote.as_uri()
    server = Server(ServeConfig(repo=url, interval=3600))
    async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
        assert await served_version(client) == "2"
        checkout = Path(os.environ["XDG_CACHE_HOME"]) / "qmlops" / "serve" / "clones"
        assert [p.name for p in checkout.glob("*/checkout")] == ["checkout"], "cloned into the user's cache folder"
        await asyncio.get_running_loop().run_in_executor(None, trained.pin, 1)
        assert await served_version(client) == "2", "nothing changes before the next poll or SIGHUP"
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN), "the server handles SIGHUP"
        os.kill(os.getpid(), signal.SIGHUP)
        seen: list[str] = []
        statuses: list[int] = []
        for _ in range(MAX_REQUESTS // 4):  # load during the swap: four requests at a time
            responses = await asyncio.gather(*(client.post(INFER, json=BODY) for _ in range(4)))
            statuses += [r.status for r in responses]
            seen += [str((await r.json())["model_version"]) for r in responses]
            if seen[-1] == "1":
                break
        assert set(statuses) == {200}, "no request fails during the swap"
        assert seen[-1] == "1", f"version 1 is served after SIGHUP (saw {sorted(set(seen))} in {len(seen)} requests)"
        assert seen == sorted(seen, reverse=True), "once swapped, the old champion is not served again"
        metrics = await (await client.get("/metrics")).text()
        assert 'qmlops_serving_version{model="demo/tiny"} 1.0' in metrics
        assert 'qmlops_serving_requests_total{code="200",model="demo/tiny"}' in metrics


async def test_a_work_tree_is_read_again_every_poll(trained: Trained, work: Path) -> None:
    server = Server(ServeConfig(repo=str(work), interval=0.05))
    async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
        before = await served_version(client)
        target = "2" if before == "1" else "1"
        await asyncio.get_running_loop().run_in_executor(None, trained.pin, int(target))
        git(work, "pull", "--quiet", "--rebase", "origin", "main")  # whoever owns the work tree keeps it current
        for _ in range(200):
            if await served_version(client) == target:
                break
            await asyncio.sleep(0.05)
        assert await served_version(client) == target


async def test_a_champion_that_fails_its_checks_leaves_the_served_one_in_place(trained: Trained, work: Path) -> None:
    server = Server(ServeConfig(repo=str(work), interval=3600))
    async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
        before = await served_version(client)
        target = "2" if before == "1" else "1"
        await asyncio.get_running_loop().run_in_executor(None, trained.pin, int(target))
        git(work, "pull", "--quiet", "--rebase", "origin", "main")
        version = work / f"registry/demo/tiny/versions/{target}.json"
        version.write_text(version.read_text().replace('"version": ', '"version":  ', 1).replace("0.", "0.9", 1))
        await server.refresh()
        assert await served_version(client) == before
        entry = server.catalog.entry("demo/tiny")
        assert entry is not None and entry.problem is not None and f"versions/{target}.json" in entry.problem
        assert (await client.get("/v2/health/ready")).status == 200, "still ready: a champion is served"


async def test_a_url_with_git_credentials_from_a_mounted_secret_keeps_them_out_of_the_clone(
    trained: Trained, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "token").write_text("ghp_servingtoken123456")
    (secret / "username").write_text("reader")
    config = ServeConfig(
        repo=trained.repos.remote.as_uri(), interval=3600, workdir=tmp_path / "cache", git_secret_dir=secret
    )
    server = Server(config)
    async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
        assert await served_version(client) in ("1", "2")
    [checkout] = (tmp_path / "cache" / "clones").glob("*/checkout")
    settings = git(checkout, "config", "--local", "--list")
    assert "credential.helper=" in settings and "ghp_servingtoken123456" not in settings
