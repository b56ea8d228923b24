"""Fixtures for the operator tests: the Kubernetes API harness, served over HTTP in the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kmock
import pytest

from tests.support.kube import Client, KubeApi


@pytest.fixture
async def kube() -> AsyncIterator[KubeApi]:
    async with KubeApi() as api, kmock.Server(api):
        yield api


@pytest.fixture
async def client(kube: KubeApi) -> Client:
    return Client(kube)
