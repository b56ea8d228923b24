"""A Git repository cloned into a work folder (the operator's GitOps repository, which it writes the
registry and ledger to; the one `qmlops serve` reads when given a URL),
with credentials from a Secret (an SSH key or a token), never logged and never put on a command line.

The credentials are written to files (mode 0600) in the work folder, and the checkout's own Git
config points at them (``core.sshCommand``, a credential helper reading the token file), so every Git
command the engine's registry runs in the checkout authenticates the same way.

Secret keys understood (those of ``kubernetes.io/ssh-auth`` and ``kubernetes.io/basic-auth`` Secrets,
and of Flux's Git secrets): ``ssh-privatekey`` or ``identity``, with ``known_hosts``; or ``token`` or
``password``, with ``username`` (default ``x-access-token``).
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SCP_LIKE = re.compile(r"^[^/]+:")  # [user@]host:path
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")


class GitSourceError(Exception):
    """The repository cannot be cloned or fetched; the message is safe to show (no credentials)."""


@dataclass(frozen=True)
class GitCredentials:
    ssh_key: bytes | None = field(default=None, repr=False)
    known_hosts: bytes | None = None
    username: str | None = None
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_secret(cls, secret: dict[str, Any]) -> GitCredentials:
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        key = data.get("ssh-privatekey") or data.get("identity")
        token = data.get("token") or data.get("password")
        if not key and not token:
            name = secret.get("metadata", {}).get("name", "?")
            raise GitSourceError(
                f"Secret {name} holds no Git credentials: expected ssh-privatekey (or identity) or token (or password)"
            )
        username = data.get("username")
        return cls(
            ssh_key=key,
            known_hosts=data.get("known_hosts"),
            username=username.decode().strip() if username else None,
            token=token.decode().strip() if token else None,
        )

    @classmethod
    def from_folder(cls, folder: Path) -> GitCredentials:
        """A Secret mounted as files (a pod's volume): the same keys as :meth:`from_secret`."""
        files = (
            {p.name: p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
            if folder.is_dir()
            else {}
        )
        encoded = {name: base64.b64encode(path.read_bytes()).decode() for name, path in files.items()}
        return cls.from_secret({"metadata": {"name": str(folder)}, "data": encoded})

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.ssh_key.decode(errors="replace") if self.ssh_key else None) if s]


def redact(text: str, credentials: GitCredentials | None = None) -> str:
    """Text with URL user-info and any known credential replaced, fit for logs and conditions."""
    text = _URL_USERINFO.sub(r"\1***@", text)
    for secret in credentials.secrets() if credentials else ():
        text = text.replace(secret, "***")
    return text


class GitSource:
    def __init__(
        self, repo: str, checkout: Path, *, branch: str | None = None, credentials: GitCredentials | None = None
    ) -> None:
        self.repo = repo
        self.checkout = checkout
        self.branch = branch
        self.credentials = credentials
        self._private = checkout.parent / ".git-credentials"

    # --- credentials as files ----------------------------------------------------------------------

    def _write_private(self, name: str, content: bytes) -> Path:
        self._private.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._private / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        return path

    def git_config(self) -> dict[str, str]:
        """Settings that make Git authenticate with the Secret's credentials (file paths, no secrets)."""
        creds = self.credentials
        settings = {"credential.interactive": "never"}
        if creds is None:
            return settings
        if creds.ssh_key:
            key = self._write_private("id", creds.ssh_key if creds.ssh_key.endswith(b"\n") else creds.ssh_key + b"\n")
            command = ["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
            if creds.known_hosts:
                hosts = self._write_private("known_hosts", creds.known_hosts)
                command += ["-o", f"UserKnownHostsFile={hosts}", "-o", "StrictHostKeyChecking=yes"]
            else:
                command += ["-o", "StrictHostKeyChecking=accept-new"]
            settings["core.sshCommand"] = shlex.join(command)
        if creds.token:
            token = self._write_private("token", creds.token.encode())
            user = self._write_private("username", (creds.username or "x-access-token").encode())
            helper = f"!f() {{ echo username=$(cat {shlex.quote(str(user))}); echo password=$(cat {shlex.quote(str(token))}); }}; f"
            settings["credential.helper"] = helper
        return settings

    # --- clone and fetch ---------------------------------------------------------------------------

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        command = next(a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] != "-c"))
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true"}
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise GitSourceError(redact(f"git {command}: {err}", self.credentials)) from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise GitSourceError(redact(f"git {command} failed: {' '.join(detail[-3:])}", self.credentials))
        return done.stdout

    def prepare(self) -> Path:
        """A checkout of the repository, cloned on first use and fetched afterwards. A checkout found
        in the folder whose ``origin`` is another repository is never reused (its commits would be
        pushed there): it is moved aside, untouched, and the repository cloned afresh."""
        config = self.git_config()
        if (self.checkout / ".git").is_dir() and not self._same_remote():
            aside = self._set_aside()
            log.warning("%s is a clone of another repository: moved to %s, cloning afresh", self.checkout, aside.name)
        if (self.checkout / ".git").is_dir():
            for key, value in config.items():
                self._git("config", key, value, cwd=self.checkout)
            self._git("fetch", "--prune", "origin", cwd=self.checkout)
            return self.checkout
        self.checkout.parent.mkdir(parents=True, exist_ok=True)
        options = [arg for key, value in config.items() for arg in ("-c", f"{key}={value}")]
        branch = ["--branch", self.branch] if self.branch else []
        self._git(*options, "clone", "--no-tags", *branch, "--", self.repo, str(self.checkout))
        for key, value in config.items():
            self._git("config", key, value, cwd=self.checkout)
        log.info("cloned %s into %s", redact(self.repo, self.credentials), self.checkout)
        return self.checkout

    def _same_remote(self) -> bool:
        try:
            url = self._git("remote", "get-url", "origin", cwd=self.checkout).strip()
        except GitSourceError:
            return False  # no origin, or not a readable repository: not one this source made
        return url == self.repo

    def _set_aside(self) -> Path:
        for n in itertools.count(1):
            aside = self.checkout.with_name(f"{self.checkout.name}.other-{n}")
            if not aside.exists():
                self.checkout.rename(aside)
                return aside
        raise AssertionError("unreachable")


def normalized_repo(repo: str) -> str:
    """A local repository path made absolute (Git records a local clone's origin that way); a URL
    (``scheme://...`` or ``user@host:path``) as given."""
    if "://" in repo or _SCP_LIKE.match(repo):
        return repo
    return str(Path(repo).expanduser().absolute())
