"""``qmlops serve``: the champions of a repository over HTTP, on the Open Inference Protocol v2."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from controller.cli import logs
from controller.cli.refusal import refuse
from controller.engine.live import MAX_WINDOW
from controller.shells.threads import load_qiskit_on_main_thread

EXIT_UNUSABLE = 2
_MODEL = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)/([a-z0-9]([-a-z0-9]*[a-z0-9])?)$")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the champions over HTTP (Open Inference Protocol v2), following promotions in Git",
        description=(
            "Serve the champion of each model over HTTP on the Open Inference Protocol v2 (KServe's REST API): "
            "/v2/health/live, /v2/health/ready, /v2/models/NS.NAME (metadata), /v2/models/NS.NAME/infer and "
            "/v2/models/NS.NAME/versions/N/infer; feedback at /v2/models/NS.NAME/feedback, live accuracy at "
            "/v2/models/NS.NAME/live, Prometheus metrics at /metrics. A promotion or rollback committed to the "
            "repository is served within one --interval (at once on SIGHUP). --repo is a work tree read as it is, "
            "or a URL cloned into the user's cache folder and fetched on every poll."
        ),
    )
    parser.add_argument("--repo", default=".", help="a Git work tree, or a repository URL to clone (default: .)")
    parser.add_argument("--branch", help="with a URL: the branch to follow (default: the remote's HEAD)")
    parser.add_argument("--models", metavar="NS/NAME,...", help="the models to serve (default: every registered one)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    parser.add_argument("--interval", type=float, default=30.0, metavar="S", help="seconds between polls of Git")
    parser.add_argument(
        "--git-secret-dir",
        type=Path,
        metavar="DIR",
        help="Git credentials for a URL, as a mounted Secret: ssh-privatekey (and known_hosts) or token (and username)",
    )
    parser.add_argument("--workdir", type=Path, help="where a URL is cloned (default: the user's cache folder)")
    parser.add_argument(
        "--prediction-log",
        type=Path,
        metavar="FILE",
        help="append one JSON line per request (id, version, inputs digest, labels), rotated at 10 MiB "
        "(default: predictions.jsonl in the work folder)",
    )
    parser.add_argument("--no-prediction-log", action="store_true", help="log no predictions")
    parser.add_argument("--log-inputs", action="store_true", help="put the raw inputs in the prediction log too")
    parser.add_argument("--window", type=int, default=1000, metavar="ROWS", help="labelled rows kept for live accuracy")
    parser.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, metavar="N", help="request size limit")
    parser.set_defaults(handler=run)


def _workdir(given: Path | None) -> Path:
    from controller.shells.workdir import default_workdir

    return given or default_workdir("serve")


def run(args: argparse.Namespace) -> int:
    load_qiskit_on_main_thread()  # before any thread trains (controller/shells/threads.py)
    from controller.serving.catalog import CatalogError, is_url
    from controller.serving.server import ServeConfig, Server

    models: list[tuple[str, str]] | None = None
    if args.models:
        models = []
        for item in (m.strip() for m in args.models.split(",")):
            match = _MODEL.match(item)
            if not match:
                return refuse("serve", f"--models: {item[:80]!r} is not NAMESPACE/NAME")
            models.append((match[1], match[3]))
    for flag, value in (
        ("--interval", args.interval),
        ("--window", args.window),
        ("--max-body-bytes", args.max_body_bytes),
    ):
        if value <= 0:
            return refuse("serve", f"{flag}: must be positive")
    if args.window > MAX_WINDOW:
        return refuse("serve", f"--window: at most {MAX_WINDOW} rows")
    if not is_url(args.repo) and not Path(args.repo).is_dir():
        return refuse("serve", f"--repo: {args.repo} is not a folder")
    logs.configure()
    config = ServeConfig(
        repo=args.repo,
        models=models,
        host=args.host,
        port=args.port,
        interval=args.interval,
        branch=args.branch,
        workdir=args.workdir,
        prediction_log=None
        if args.no_prediction_log
        else args.prediction_log or _workdir(args.workdir) / "predictions.jsonl",
        log_inputs=args.log_inputs,
        window=args.window,
        max_body_bytes=args.max_body_bytes,
        git_secret_dir=args.git_secret_dir,
    )
    from controller.shells.gitsource import GitSourceError

    try:
        server = Server(config)
    except GitSourceError as err:
        return refuse("serve", f"--git-secret-dir: {err}")
    except OSError as err:  # the prediction log's folder, or the credentials' files
        return refuse("serve", f"{err.filename}: {err.strerror or err}")
    try:
        server.catalog.refresh()  # a repository that cannot be read at all is said before the port opens
    except CatalogError as err:
        return refuse("serve", f"--repo: {err}")
    from aiohttp import web

    logging.getLogger("controller.cli.serve").info(
        "serving on http://%s:%s/v2 (Open Inference Protocol v2); Git looked at every %g s and on SIGHUP",
        config.host,
        config.port,
        config.interval,
    )
    try:
        web.run_app(server.app(), host=config.host, port=config.port, access_log=None, print=None)
    except OSError as err:  # the port is taken, or the address is not this machine's
        print(
            f"qmlops serve: --host/--port: cannot listen on {config.host}:{config.port}: {err.strerror or err}",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    return 0
