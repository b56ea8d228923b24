"""IBM Quantum credentials: read from a Kubernetes Secret (the operator) or from a file or the
environment (the local runner), never from the spec. They are never printed: ``repr`` hides the token
and :meth:`Credentials.redact` takes it out of any text that might quote it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controller.engine.training.errors import TrainingError

DEFAULT_CHANNEL = "ibm_quantum_platform"
CREDENTIALS_DIR_ENV = "QMLOPS_CREDENTIALS_DIR"
TOKEN_ENV, INSTANCE_ENV, CHANNEL_ENV = "QMLOPS_IBM_TOKEN", "QMLOPS_IBM_INSTANCE", "QMLOPS_IBM_CHANNEL"
TOKEN_KEYS = ("token", "apiKey", "api_key", "apikey")


class CredentialsError(TrainingError):
    """The credentials Secret is missing or incomplete. The message names the Secret and its keys, never a value."""


@dataclass(frozen=True)
class Credentials:
    token: str = field(repr=False)
    instance: str | None = None
    channel: str = DEFAULT_CHANNEL
    url: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(token=<hidden>, instance={self.instance!r}, channel={self.channel!r})"

    __str__ = __repr__

    def redact(self, text: str) -> str:
        return text.replace(self.token, "<hidden>") if self.token else text

    @classmethod
    def from_mapping(cls, data: Mapping[str, str], where: str) -> Credentials:
        """From a Secret's decoded data: ``token`` (or ``apiKey``), optional ``instance``, ``channel``, ``url``."""
        token = next((str(data[k]).strip() for k in TOKEN_KEYS if data.get(k)), "")
        if not token:
            keys = ", ".join(sorted(data)) or "no keys"
            raise CredentialsError(f"{where}: no token (expected key 'token' or 'apiKey'; found {keys})")
        channel = str(data.get("channel") or DEFAULT_CHANNEL).strip()
        instance = str(data["instance"]).strip() if data.get("instance") else None
        url = str(data["url"]).strip() if data.get("url") else None
        return cls(token=token, instance=instance, channel=channel, url=url)


CredentialsSource = Credentials | Callable[[], Credentials] | None


def resolve(source: CredentialsSource) -> Credentials | None:
    """A credentials value, or the lookup that reads it (called again to reload after a 401)."""
    return source() if callable(source) else source


def local_credentials(namespace: str, secret: str) -> Credentials:
    """The local runner's stand-in for ``Secret <namespace>/<secret>``: a folder laid out like a mounted
    Secret (``$QMLOPS_CREDENTIALS_DIR/<namespace>/<secret>/token``, or ``.../<secret>.json``), else the
    environment (``QMLOPS_IBM_TOKEN``, ``QMLOPS_IBM_INSTANCE``, ``QMLOPS_IBM_CHANNEL``)."""
    root = Path(os.environ.get(CREDENTIALS_DIR_ENV) or Path.home() / ".config" / "qmlops" / "secrets")
    where = f"credentials {namespace}/{secret}"
    folder, file = root / namespace / secret, root / namespace / f"{secret}.json"
    if folder.is_dir():
        data = {p.name: p.read_text().strip() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
        return Credentials.from_mapping(data, f"{where} ({folder})")
    if file.is_file():
        try:
            data = json.loads(file.read_text())
        except ValueError:
            raise CredentialsError(f"{where} ({file}): not a JSON object") from None
        if not isinstance(data, dict):
            raise CredentialsError(f"{where} ({file}): not a JSON object")
        return Credentials.from_mapping({str(k): str(v) for k, v in data.items()}, f"{where} ({file})")
    env = {"token": os.environ.get(TOKEN_ENV, ""), "instance": os.environ.get(INSTANCE_ENV, "")}
    env["channel"] = os.environ.get(CHANNEL_ENV, "")
    if env["token"]:
        return Credentials.from_mapping(env, f"{where} (environment)")
    raise CredentialsError(f"{where}: not found in {folder}, {file} or ${TOKEN_ENV}")
