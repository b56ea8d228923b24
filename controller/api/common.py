"""Building blocks shared by every resource type: the strict base model and the constrained scalars.

Each constrained scalar checks itself in Python (with a message a spec author understands) and states
the same rule as JSON schema, so the generated CRD refuses what the validator refuses.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema
from pydantic.alias_generators import to_camel

from controller.api.devices import fake_devices

GROUP = "qmlops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class SpecModel(BaseModel):
    """Strict base: camelCase on the wire, unknown fields refused (a typo is an error, not ignored)."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=False,
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in YAML or in the Kubernetes API: camelCase, no unset fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _pattern_type(pattern: str, what: str, max_length: int | None = None) -> Any:
    """A ``str`` type that checks ``pattern`` with a readable message and states it in JSON schema."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if max_length is not None and len(value) > max_length:
            raise ValueError(f"{what} must be at most {max_length} characters")
        if not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    schema: dict[str, Any] = {"type": "string", "pattern": pattern}
    if max_length is not None:
        schema["maxLength"] = max_length
    return Annotated[str, AfterValidator(check), WithJsonSchema(schema)]


DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"
# a whole number of days from 1d to 366d: the window a QPU budget counts over
DAYS_PATTERN = r"^([1-9]|[1-9][0-9]|[12][0-9][0-9]|3[0-5][0-9]|36[0-6])d$"

if TYPE_CHECKING:
    DnsLabel = str
    Email = str
    Duration = str
    Days = str
else:
    DnsLabel = _pattern_type(DNS_LABEL_PATTERN, "DNS-1123 label (lowercase letters, digits, '-')", 63)
    Email = _pattern_type(EMAIL_PATTERN, "email address", 254)
    Duration = _pattern_type(DURATION_PATTERN, "duration (like 30m, 6h, 1h30m)")
    Days = _pattern_type(DAYS_PATTERN, "number of days from 1d to 366d (like 30d)")


def days(text: str) -> int:
    """``30d`` -> 30 (a :data:`Days` value)."""
    if not re.fullmatch(DAYS_PATTERN, text):
        raise ValueError(f"{text!r} is not a number of days from 1d to 366d (like 30d)")
    return int(text[:-1])


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """A duration as DURATION_PATTERN writes it (``6h``, ``1h30m``, ``90s``) in seconds."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a valid duration (like 30m, 6h, 1h30m)")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text))


# --- cron ------------------------------------------------------------------------------------------

CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _check_cron(value: str) -> str:
    from croniter import croniter

    text = value.strip()
    if text in CRON_MACROS:
        return text
    if len(text.split()) != 5:
        raise ValueError(f"{value!r} is not a cron expression: expected 5 fields (minute hour day month weekday)")
    if not croniter.is_valid(text):
        raise ValueError(f"{value!r} is not a valid cron expression")
    return text


Cron = Annotated[str, AfterValidator(_check_cron), WithJsonSchema({"type": "string", "minLength": 1})]

# --- backends --------------------------------------------------------------------------------------

LOCAL_BACKENDS = ("aer", "statevector")
BACKEND_PATTERN = r"^(local:(aer|statevector)|fake:[a-z0-9_]+|ibm:([a-z0-9_]+|least-busy))$"


def _check_backend(value: str) -> str:
    if not re.fullmatch(BACKEND_PATTERN, value):
        raise ValueError(
            f"{value!r} is not a backend: use local:aer, local:statevector, fake:<device>, ibm:<backend> "
            "or ibm:least-busy"
        )
    kind, _, name = value.partition(":")
    if kind == "fake":
        name = name.removeprefix("fake_")
        if name not in fake_devices():
            close = [d for d in fake_devices() if d.startswith(name[:3])][:5]
            hint = f" (did you mean {', '.join('fake:' + c for c in close)}?)" if close else ""
            raise ValueError(f"qiskit_ibm_runtime.fake_provider has no device {name!r}{hint}")
        return f"fake:{name}"
    return value


BackendRef = Annotated[
    str, AfterValidator(_check_backend), WithJsonSchema({"type": "string", "pattern": BACKEND_PATTERN})
]

BACKEND_GLOB_PATTERN = r"^(\*|(local|fake|ibm|\*):[a-z0-9_*?\[\]-]+)$"


def _check_backend_glob(value: str) -> str:
    if not re.fullmatch(BACKEND_GLOB_PATTERN, value):
        raise ValueError(f"{value!r} is not a backend pattern: use globs like 'local:*', 'fake:*', 'ibm:ibm_kyiv'")
    return value


BackendGlob = Annotated[
    str, AfterValidator(_check_backend_glob), WithJsonSchema({"type": "string", "pattern": BACKEND_GLOB_PATTERN})
]


def backend_allowed(backend: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(backend, p) for p in patterns)


# --- paths in the repository -----------------------------------------------------------------------


def check_repo_path(value: str) -> str:
    """A path that stays inside the repository: relative, POSIX, no '..', no control characters."""
    if not value:
        raise ValueError("path is empty")
    if "\\" in value or any(ord(c) < 32 for c in value):
        raise ValueError(f"{value!r} is not a repository path: use '/' and no control characters")
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"{value!r} is absolute: paths are relative to the repository root")
    if ".." in value.split("/"):
        raise ValueError(f"{value!r} leaves the repository: '..' is not allowed")
    normal = posixpath.normpath(value)
    if normal in (".", ""):
        raise ValueError(f"{value!r} names the repository itself, not a file")
    return normal
