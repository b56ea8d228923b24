"""``qmlops operator``: the kopf operator that reconciles QuantumModels and QuantumPipelines in a cluster."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from controller.cli import logs, signing
from controller.cli.refusal import refuse
from controller.engine.registry.trust import AllowedSigners, TrustError
from controller.operator.settings import (
    MAX_PEERING_LIFETIME,
    MIN_PEERING_LIFETIME,
    PEERING_LIFETIME,
    OperatorConfig,
    WebhookConfig,
)
from controller.shells.gitsource import normalized_repo
from controller.shells.threads import load_qiskit_on_main_thread
from controller.shells.workdir import WorkdirError, default_workdir, private_folder

log = logging.getLogger("controller.cli.operator")
WEBHOOK_OFF = (
    "webhook off: no certificate (give --webhook-cert and --webhook-key, or --webhook-self-signed for a local run); "
    "specs are still checked at each reconcile"
)

EXIT_OK, EXIT_UNUSABLE = 0, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    env = os.environ.get
    parser = subparsers.add_parser(
        "operator",
        help="run the kopf operator in a cluster",
        description=(
            "Reconcile QuantumModels and QuantumPipelines with the same engine as `qmlops run`, writing the registry "
            "and ledger to a GitOps repository. Connects with KUBECONFIG (or --kubeconfig), else the in-cluster "
            "service account."
        ),
    )
    parser.add_argument(
        "--repo",
        default=env("QMLOPS_REPO"),
        metavar="URL|PATH",
        help="the GitOps repository the registry and ledger are written to (env QMLOPS_REPO)",
    )
    parser.add_argument("--branch", default=env("QMLOPS_BRANCH") or None, help="branch to clone (env QMLOPS_BRANCH)")
    parser.add_argument(
        "--git-secret",
        default=env("QMLOPS_GIT_SECRET") or None,
        metavar="NAMESPACE/NAME",
        help="Secret with the repository's SSH key or token (env QMLOPS_GIT_SECRET)",
    )
    parser.add_argument(
        "--signing-key-secret",
        default=env("QMLOPS_SIGNING_KEY_SECRET") or None,
        metavar="NAMESPACE/NAME",
        help="Secret whose ssh-privatekey signs every commit the operator makes (env QMLOPS_SIGNING_KEY_SECRET)",
    )
    signing.add_arguments(parser, signing=False)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", dest="namespaces", metavar="NAMESPACE", help="watch this namespace"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ["QMLOPS_WORKDIR"]) if env("QMLOPS_WORKDIR") else None,
        help=(
            "where the Git checkouts and local checkpoints go (env QMLOPS_WORKDIR; default: this user's "
            "$XDG_CACHE_HOME/qmlops/operator or ~/.cache/qmlops/operator, made 0700)"
        ),
    )
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: KUBECONFIG, then in-cluster)")
    parser.add_argument("--context", default=None, help="kubeconfig context")
    parser.add_argument("--webhook-port", type=int, default=9443, help="validating webhook port; 0 turns it off")
    parser.add_argument("--webhook-host", default=None, help="host name the apiserver reaches the webhook at")
    parser.add_argument("--webhook-cert", type=Path, default=None, help="TLS certificate of the webhook")
    parser.add_argument("--webhook-key", type=Path, default=None, help="TLS private key of the webhook")
    parser.add_argument(
        "--webhook-self-signed",
        action="store_true",
        help="serve the webhook with a certificate made at start (local runs; in a cluster cert-manager gives one)",
    )
    parser.add_argument(
        "--webhook-insecure", action="store_true", help="serve the webhook over plain HTTP (local runs)"
    )
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port; 0 turns it off")
    parser.add_argument("--liveness-port", type=int, default=8081, help="kopf's /healthz port; 0 turns it off")
    parser.add_argument("--training-workers", type=int, default=2, help="reconciles (and trainings) run at once")
    parser.add_argument(
        "--peering",
        action="store_true",
        help="several replicas, one active: the live one with the highest priority (kopf peering; needs deploy/peering)",
    )
    parser.add_argument(
        "--peering-priority",
        type=int,
        default=None,
        help="this replica's priority among its peers (default: drawn at random at start, so that one is active)",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=PEERING_LIFETIME,
        help=f"seconds a replica's keep-alive stays valid; a standby resumes when it lapses (default {PEERING_LIFETIME})",
    )
    parser.add_argument(
        "--serving-image",
        default=env("QMLOPS_SERVING_IMAGE") or None,
        help="image of the Deployments that serve models with spec.serving (env QMLOPS_SERVING_IMAGE; "
        "default: this release's qmlops image)",
    )
    parser.add_argument(
        "--serving-git-secret",
        default=env("QMLOPS_SERVING_GIT_SECRET") or None,
        metavar="NAME",
        help="a Secret of this name in each served model's namespace, mounted into its serving pods as their "
        "Git credentials (env QMLOPS_SERVING_GIT_SECRET; default: none, the repository is read anonymously)",
    )
    parser.add_argument(
        "--serving-live-url",
        default=env("QMLOPS_SERVING_LIVE_URL") or None,
        metavar="TEMPLATE",
        help="where monitoring's live check reads a model's live accuracy, with {namespace}, {name} and "
        "{service} (env QMLOPS_SERVING_LIVE_URL; default: the model's serving Service, http://{service}.{namespace}.svc:8080)",
    )
    jobs = parser.add_argument_group("trainings as Kubernetes Jobs (--executor jobs)")
    jobs.add_argument(
        "--executor",
        choices=("in-process", "jobs"),
        default=env("QMLOPS_EXECUTOR") or "in-process",
        help="where trainings run: on the operator's own threads (default) or as a Job each (env QMLOPS_EXECUTOR)",
    )
    jobs.add_argument(
        "--job-image",
        default=env("QMLOPS_IMAGE") or None,
        help="the Jobs' image: the operator's own (env QMLOPS_IMAGE; default: this release's qmlops image)",
    )
    jobs.add_argument(
        "--job-service-account", default="qmlops-training", help="the Jobs' ServiceAccount in each namespace"
    )
    jobs.add_argument("--job-backoff-limit", type=int, default=3, help="pods a Job may lose before it fails")
    jobs.add_argument("--job-default-cpu", default=None, help="CPU a training gets when its spec names none")
    jobs.add_argument("--job-default-memory", default=None, help="memory a training gets when its spec names none")
    jobs.add_argument("--job-max-cpu", default=None, help="the most CPU a spec may ask for (refused at admission)")
    jobs.add_argument(
        "--job-max-memory", default=None, help="the most memory a spec may ask for (refused at admission)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.set_defaults(handler=run)


class UsageError(Exception):
    pass


def build_config(args: argparse.Namespace) -> OperatorConfig:
    if not args.repo:
        raise UsageError("--repo (or QMLOPS_REPO) is required: the repository the registry and ledger are written to")
    if args.training_workers < 1:
        raise UsageError("--training-workers must be at least 1")
    if bool(args.webhook_cert) != bool(args.webhook_key):
        raise UsageError("--webhook-cert and --webhook-key go together")
    if args.git_secret and args.git_secret.count("/") != 1:
        raise UsageError(f"--git-secret {args.git_secret!r}: expected NAMESPACE/NAME")
    if args.signing_key_secret and args.signing_key_secret.count("/") != 1:
        raise UsageError(f"--signing-key-secret {args.signing_key_secret!r}: expected NAMESPACE/NAME")
    signers = None
    if args.allowed_signers:
        try:
            signers = AllowedSigners.read(Path(args.allowed_signers))
        except TrustError as err:
            raise UsageError(f"--allowed-signers: {err}") from None
    elif args.signed_since:
        raise UsageError("--signed-since: needs --allowed-signers (there is nothing to check signatures with)")
    if args.peering_priority is not None and not args.peering:
        raise UsageError("--peering-priority goes with --peering")
    if args.peering_lifetime != PEERING_LIFETIME and not args.peering:
        raise UsageError("--peering-lifetime goes with --peering")
    if not MIN_PEERING_LIFETIME <= args.peering_lifetime <= MAX_PEERING_LIFETIME:
        raise UsageError(f"--peering-lifetime: between {MIN_PEERING_LIFETIME} and {MAX_PEERING_LIFETIME} seconds")
    if args.webhook_self_signed and (args.webhook_cert or args.webhook_insecure):
        raise UsageError("--webhook-self-signed goes with neither --webhook-cert nor --webhook-insecure")
    if args.job_backoff_limit < 0:
        raise UsageError("--job-backoff-limit must be at least 0")
    if args.serving_live_url:
        from controller.shells.live import checked_template

        try:
            checked_template(args.serving_live_url)
        except ValueError as err:
            raise UsageError(f"--serving-live-url: {err}") from None
    resources, ceiling = job_quantities(args)
    webhook = None
    if args.webhook_port:
        webhook = WebhookConfig(
            port=args.webhook_port,
            host=args.webhook_host,
            certfile=args.webhook_cert,
            keyfile=args.webhook_key,
            insecure=args.webhook_insecure,
            self_signed=args.webhook_self_signed,
        )
        if not webhook.serveable:
            webhook = None  # run() says so, once
    return OperatorConfig(
        repo=normalized_repo(args.repo),
        workdir=args.workdir or default_workdir(),
        namespaces=tuple(args.namespaces or ()),
        branch=args.branch,
        git_secret=args.git_secret,
        signing_key_secret=args.signing_key_secret,
        allowed_signers=signers,
        signed_since=args.signed_since,
        webhook=webhook,
        metrics_port=args.metrics_port or None,
        liveness=f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None,
        training_workers=args.training_workers,
        peering=args.peering,
        peering_priority=args.peering_priority,
        peering_lifetime=args.peering_lifetime,
        serving_git_secret=args.serving_git_secret,
        **({"serving_image": args.serving_image} if args.serving_image else {}),
        **({"serving_live_url": args.serving_live_url} if args.serving_live_url else {}),
        executor=args.executor,
        **({"job_image": args.job_image} if args.job_image else {}),
        job_service_account=args.job_service_account,
        job_backoff_limit=args.job_backoff_limit,
        job_resources=resources,
        job_ceiling=ceiling,
    )


def job_quantities(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, str]]:
    """The Jobs' default resources and their ceiling, each a Kubernetes quantity."""
    from controller.engine.quantities import QuantityError, parse

    named = {
        "--job-default-cpu": ("default", "cpu", args.job_default_cpu),
        "--job-default-memory": ("default", "memory", args.job_default_memory),
        "--job-max-cpu": ("ceiling", "cpu", args.job_max_cpu),
        "--job-max-memory": ("ceiling", "memory", args.job_max_memory),
    }
    found: dict[str, dict[str, str]] = {"default": {}, "ceiling": {}}
    for flag, (which, resource, value) in named.items():
        if value is None:
            continue
        try:
            parse(value)
        except QuantityError as err:
            raise UsageError(f"{flag}: {err}") from None
        found[which][resource] = value
    return found["default"], found["ceiling"]


def run(args: argparse.Namespace) -> int:
    load_qiskit_on_main_thread()  # before any thread trains (controller/shells/threads.py)
    logs.configure(args.verbose)
    try:
        config = build_config(args)
    except UsageError as err:
        return refuse("operator", err)
    if args.webhook_port and config.webhook is None:
        log.warning(WEBHOOK_OFF)
    if args.workdir is None:  # the default, in this user's cache: kept to this user
        try:
            private_folder(config.workdir)
        except WorkdirError as err:
            return refuse("operator", err)
    from controller.operator import process
    from controller.operator.kube import load_access

    try:
        access = load_access(args.kubeconfig, args.context)
    except Exception as err:  # kubernetes' config loader raises several types; all mean "no cluster"
        return refuse("operator", f"cannot reach a cluster: {type(err).__name__}: {err}")
    return process.main(config, access)
