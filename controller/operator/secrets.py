"""IBM Quantum credentials from the Secret a QuantumModel names in ``training.credentialsSecret``.

Read when a training on an ``ibm:`` backend needs them (and once more after a 401), never cached in
status or logs; errors name the Secret and its keys, never a value."""

from __future__ import annotations

import base64
import binascii

from controller.engine.training import Credentials, CredentialsError
from controller.operator.kube import KubeClient, NotFound, resource_path


async def read_credentials(client: KubeClient, namespace: str, name: str) -> Credentials:
    where = f"training.credentialsSecret: Secret {namespace}/{name}"
    try:
        secret = await client.get(resource_path("v1", "secrets", namespace, name))
    except NotFound:
        raise CredentialsError(f"{where} does not exist") from None
    data: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            data[key] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsError(f"{where}: key {key!r} is not base64-encoded UTF-8 text") from None
    data.update({str(k): str(v) for k, v in (secret.get("stringData") or {}).items()})
    return Credentials.from_mapping(data, where)
