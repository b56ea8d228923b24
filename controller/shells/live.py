"""Live accuracy read from a ``qmlops serve`` server: the typed source monitoring's ``live`` check calls.

:class:`ServingEndpoint` asks ``GET <base>/v2/models/<namespace>.<name>/live?window=N`` of the server
that serves a model (``qmlops run --serving-url``, ``qmlops monitor --serving-url``; the operator: the
model's serving Service) and answers :class:`controller.engine.live.LiveAccuracy`. What comes back is
hostile until read: the answer is bounded (64 KiB), must be JSON in ``LiveAccuracy``'s shape, and is
never quoted into a reason (only its HTTP status is).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from controller.engine.live import MAX_WINDOW, LiveAccuracy, LiveAccuracyError, LiveUnavailable

MAX_ANSWER_BYTES = 64 * 1024
TIMEOUT_SECONDS = 5.0
SERVICE_URL = "http://{service}.{namespace}.svc:8080"  # the operator's serving Service (spec.serving)
PLACEHOLDERS = ("namespace", "name", "service")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a server that redirects is not answering: never followed elsewhere


_OPENER = urllib.request.build_opener(_NoRedirects)


def checked_base(url: str) -> str:
    """An ``http(s)://host[:port][/path]`` base URL without credentials, query or fragment; ValueError names what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected http://HOST[:PORT] or https://HOST[:PORT]")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("expected a base URL without credentials, query or fragment")
    return url.rstrip("/")


class ServingEndpoint:
    """A :data:`controller.engine.live.LiveSource` over HTTP. ``base(namespace, name)`` is the server's
    base URL for that model (one server for all: ``lambda ns, n: url``)."""

    def __init__(self, base: Callable[[str, str], str], *, timeout: float = TIMEOUT_SECONDS) -> None:
        self.base = base
        self.timeout = timeout

    @classmethod
    def at(cls, url: str) -> ServingEndpoint:
        fixed = checked_base(url)
        return cls(lambda _ns, _name: fixed)

    @classmethod
    def services(cls, service: Callable[[str], str], template: str = SERVICE_URL) -> ServingEndpoint:
        """The operator's: each model's own serving Service, by ``template`` (``{namespace}``, ``{name}``
        and ``{service}``: ``service(name)``, the Service's name)."""
        checked_template(template)
        return cls(lambda ns, name: checked_base(template.format(namespace=ns, name=name, service=service(name))))

    def __call__(self, namespace: str, name: str, window: int) -> LiveAccuracy:
        if not 1 <= window <= MAX_WINDOW:
            raise LiveUnavailable(f"window: {window} rows is outside 1 to {MAX_WINDOW}")
        base = self.base(namespace, name)
        model = urllib.parse.quote(f"{namespace}.{name}", safe="")
        url = f"{base}/v2/models/{model}/live?window={window}"
        where = urllib.parse.urlsplit(base).netloc
        try:
            with _OPENER.open(
                urllib.request.Request(url, headers={"Accept": "application/json"}), timeout=self.timeout
            ) as answer:
                raw = answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as err:
            raise LiveUnavailable(f"the server at {where} answered HTTP {err.code} for {namespace}/{name}") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or type(err).__name__
            kind = reason if isinstance(reason, str) else type(reason).__name__
            raise LiveUnavailable(f"the server at {where} did not answer ({kind[:120]})") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise LiveUnavailable(f"the server at {where} answered more than {MAX_ANSWER_BYTES} bytes")
        try:
            live = LiveAccuracy.from_json(json.loads(raw))
        except (ValueError, RecursionError, LiveAccuracyError) as err:
            detail = str(err) if isinstance(err, LiveAccuracyError) else "not JSON"
            raise LiveUnavailable(f"the server at {where} answered no live accuracy ({detail})") from None
        return live


def checked_template(template: str) -> str:
    """A URL template naming only ``{namespace}``, ``{name}`` and ``{service}``; ValueError says what is wrong."""
    try:
        checked_base(template.format(namespace="ns", name="model", service="model-serving"))
    except (KeyError, IndexError, ValueError) as err:
        if isinstance(err, KeyError | IndexError):
            named = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"a template may name only {named}") from None
        raise
    return template
