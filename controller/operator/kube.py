"""The operator's own calls to the Kubernetes API (status, checkpoint ConfigMaps, Secrets), made with the
same credentials as kopf's: a kubeconfig (``KUBECONFIG``, ``--kubeconfig``) or the in-cluster service
account. Transient failures (5xx, 429, timeouts, dropped connections) are retried with backoff; what a
retry cannot fix is raised as :class:`ApiError` with the apiserver's reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from controller import __version__

log = logging.getLogger(__name__)

JSON = dict[str, Any]
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


@dataclass(frozen=True)
class ApiAccess:
    """Where the apiserver is and how to authenticate; the token is read anew for every request, so a
    rotated service-account token is picked up."""

    server: str
    ca_path: str | None = None
    insecure: bool = False
    cert_path: str | None = None
    key_path: str | None = None
    token: Callable[[], str | None] = field(default=lambda: None, repr=False)

    def connection_info(self) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=self.server,
            ca_path=self.ca_path,
            insecure=self.insecure,
            certificate_path=self.cert_path,
            private_key_path=self.key_path,
            scheme="Bearer" if self.token() else None,
            token=self.token(),
        )


def load_access(kubeconfig: str | None = None, context: str | None = None) -> ApiAccess:
    """A kubeconfig when one is named (``--kubeconfig`` or ``KUBECONFIG``), else the in-cluster service
    account, else ``~/.kube/config``."""
    from kubernetes import client, config

    cfg = client.Configuration()
    named = kubeconfig or os.environ.get("KUBECONFIG")
    if named:
        config.load_kube_config(config_file=named, context=context, client_configuration=cfg)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(context=context, client_configuration=cfg)

    def token() -> str | None:
        header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
        if not header:
            return None
        return str(header.split(" ", 1)[-1])

    return ApiAccess(
        server=str(cfg.host),
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        cert_path=cfg.cert_file,
        key_path=cfg.key_file,
        token=token,
    )


class KubeClient:
    """A small JSON client over aiohttp; one per operator, used from the event loop."""

    def __init__(
        self,
        access: ApiAccess,
        *,
        backoffs: Iterable[float] = (0.2, 0.5, 1, 2, 4, 8),
        timeout: float = 30.0,
        agent: str = f"qmlops-operator/{__version__}",
    ):
        self.access = access
        self.agent = agent
        self.backoffs = tuple(backoffs)
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None
        self.calls = 0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.access.insecure:
            return False
        context = ssl.create_default_context(cafile=self.access.ca_path)
        if self.access.cert_path and self.access.key_path:
            context.load_cert_chain(self.access.cert_path, self.access.key_path)
        return context

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=32)
            self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": self.agent})
        return self._session

    async def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> JSON:
        """One API call, retried through transient failures."""
        delays = iter(self.backoffs)
        while True:
            try:
                return await self._once(method, path, body, content_type)
            except ApiError as err:
                if err.status not in RETRIED_STATUSES:
                    raise
                failure: Exception = err
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as err:
                failure = err
            delay = next(delays, None)
            if delay is None:
                raise failure
            log.debug("retrying %s %s in %.1fs after %s", method, path, delay, type(failure).__name__)
            await asyncio.sleep(delay)

    async def _once(self, method: str, path: str, body: Any, content_type: str) -> JSON:
        self.calls += 1
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        token = self.access.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = self.access.server.rstrip("/") + path
        data = json.dumps(body) if body is not None else None
        async with self._client().request(method, url, data=data, headers=headers, timeout=self.timeout) as rsp:
            text = await rsp.text()
            payload = _json(text)
            if rsp.status >= 400:
                reason = str(payload.get("reason") or rsp.reason or "Error")
                message = str(payload.get("message") or text[:200])
                kind = NotFound if rsp.status == 404 else Conflict if rsp.status == 409 else ApiError
                raise kind(rsp.status, reason, message)
            return payload

    async def get(self, path: str) -> JSON:
        return await self.call("GET", path)

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.call("POST", path, body)

    async def replace(self, path: str, body: JSON) -> JSON:
        return await self.call("PUT", path, body)

    async def merge_patch(self, path: str, patch: JSON) -> JSON:
        return await self.call("PATCH", path, patch, MERGE_PATCH)

    async def delete(self, path: str) -> JSON:
        return await self.call("DELETE", path)


def _json(text: str) -> JSON:
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def resource_path(
    api_version: str, plural: str, namespace: str | None, name: str | None = None, subresource: str | None = None
) -> str:
    root = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    parts = [root]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


def merge_diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> JSON:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (removed keys become ``null``)."""
    patch: JSON = {}
    old = old or {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_diff(before, value)
            if sub:
                patch[key] = sub
        elif value != before:
            patch[key] = value
    return patch
