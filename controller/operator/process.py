"""The operator process: ``qmlops operator`` runs ``main``, which prepares the work folder and the
webhook's certificate, builds the handlers over a :class:`Runtime` and runs kopf until SIGINT/SIGTERM.

Imports go one way: this module imports the handlers, which import the workers and pipelines, which
import the runtime; none of them imports this one.
"""

from __future__ import annotations

import dataclasses
import logging

import kopf

from controller.operator.certificates import self_signed
from controller.operator.handlers import build_registry
from controller.operator.kube import ApiAccess
from controller.operator.runtime import Runtime
from controller.operator.settings import OperatorConfig, kopf_settings
from controller.shells.workdir import private_folder

log = logging.getLogger(__name__)


def with_certificate(config: OperatorConfig) -> OperatorConfig:
    """``config`` with a self-signed certificate made in the work folder when one was asked for."""
    hook = config.webhook
    if hook is None or not hook.self_signed or (hook.certfile and hook.keyfile):
        return config
    certfile, keyfile = self_signed(private_folder(config.workdir / "webhook-tls"), hook.host)
    log.info("webhook served with a self-signed certificate (%s), for local runs", certfile)
    return dataclasses.replace(config, webhook=dataclasses.replace(hook, certfile=certfile, keyfile=keyfile))


def main(config: OperatorConfig, access: ApiAccess) -> int:
    """Run the operator until SIGINT/SIGTERM."""
    from controller.engine.training import data

    config = with_certificate(config)
    data.preload()  # before the first event, not during it
    runtime = Runtime(config, access)
    registry = build_registry(runtime)
    settings = kopf_settings(config)
    kopf.run(
        registry=registry,
        settings=settings,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        standalone=not config.peering,
        liveness_endpoint=config.liveness,
    )
    return 0
