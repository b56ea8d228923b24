"""Helpers to build spec repositories for the registry tests: a bare remote, clones, tiny specs."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

TINY_SPEC = """\
# A tiny model for the registry tests: 2 qubits, a few iterations, exact statevector simulation.
apiVersion: qmlops.io/v1alpha1
kind: QuantumModel
metadata:
  name: {name}
  namespace: {namespace}
spec:
  owner: alice@example.com
  dataset:
    source: builtin:iris
    features: [petal_length, petal_width]
    classes: [0, 1]
    testFraction: 0.2
    seed: 42
  circuit:
    qubits: 2
    featureMap: {{kind: ZFeatureMap, reps: 1}}
    ansatz: {{kind: RealAmplitudes, reps: 1}}
  training:
    backend: local:statevector
    shots: 128
    optimizer: {{kind: COBYLA, maxIterations: {iterations}}}
    seed: 7
  promotion:
{promotion}
  governance:
{governance}
"""

DEFAULT_PROMOTION = """\
    policy: auto
    gates:
      - {metric: accuracy, min: 0.5}"""
DEFAULT_GOVERNANCE = """\
    allowedBackends: ["local:*"]
    approvers: [alice@example.com, bob@example.com]"""


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    import os

    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


def ssh_key(folder: Path, who: str, kind: str = "ed25519") -> Path:
    """A real SSH key pair made by ssh-keygen: the private key's path (the public key beside it, .pub)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / who.replace("@", "_at_")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", who, "-f", str(path)], check=True, capture_output=True
    )
    return path


def allowed_signers(path: Path, keys: dict[str, Path]) -> Path:
    """git's allowed-signers file listing each principal (an email) with its key's public half."""
    lines = [f'{who} namespaces="git" {Path(str(key) + ".pub").read_text().strip()}' for who, key in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def trust_flags(key: Path, signers: Path) -> list[str]:
    """``qmlops run``'s flags that sign its commits with ``key`` and act only on what ``signers`` vouch for."""
    return ["--signing-key", str(key), "--allowed-signers", str(signers)]


@dataclass(frozen=True)
class SigningController:
    """The controller's own SSH key and the allowed-signers file (outside the repository) that lists it."""

    key: Path
    signers: Path

    @property
    def flags(self) -> list[str]:
        return trust_flags(self.key, self.signers)


def signing_controller(folder: Path, who: str = "qmlops@example.invalid") -> SigningController:
    """A controller that signs: its key made by ssh-keygen in ``folder``, and ``folder/allowed_signers``."""
    key = ssh_key(folder, who)
    return SigningController(key, allowed_signers(folder / "allowed_signers", {who: key}))


def signing(key: Path) -> list[str]:
    """``git -c`` arguments that sign a commit with ``key`` (pass ``-S`` to the commit, or use these)."""
    return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "-c", "commit.gpgSign=true"]


def tiny_spec(
    name: str = "tiny",
    namespace: str = "demo",
    *,
    iterations: int = 4,
    promotion: str = DEFAULT_PROMOTION,
    governance: str = DEFAULT_GOVERNANCE,
    monitoring: str | None = None,
) -> str:
    """``monitoring``: the lines of ``spec.monitoring`` (indented by four), appended when given."""
    text = TINY_SPEC.format(
        name=name, namespace=namespace, iterations=iterations, promotion=promotion, governance=governance
    )
    return text if monitoring is None else text + "  monitoring:\n" + monitoring.rstrip("\n") + "\n"


class Repos:
    """A bare remote under ``base/remote.git`` and work clones of it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.remote = base / "remote.git"
        git(base, "init", "--quiet", "--bare", str(self.remote))
        seed = base / "seed"
        git(base, "clone", "--quiet", str(self.remote), str(seed))
        (seed / "README.md").write_text("spec repository\n")
        git(seed, "add", "README.md")
        git(seed, "commit", "--quiet", "-m", "start")
        git(seed, "push", "--quiet", "origin", "main")
        self.seed = seed

    def clone(self, name: str) -> Path:
        path = self.base / name
        git(self.base, "clone", "--quiet", str(self.remote), str(path))
        return path

    def commit_file(
        self,
        repo: Path,
        relative: str,
        text: str,
        message: str,
        *,
        author: str = "Alice <alice@example.com>",
        trailers: tuple[str, ...] = (),
        signing_key: Path | None = None,
    ) -> str:
        path = repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        git(repo, "add", relative)
        sign = signing(signing_key) if signing_key else []
        extra = [f"--trailer={t}" for t in trailers]
        git(repo, *sign, "commit", "--quiet", f"--author={author}", "-m", message, *extra)
        return git(repo, "rev-parse", "HEAD")

    def push(self, repo: Path) -> None:
        git(repo, "push", "--quiet", "origin", "HEAD:main")

    def pull(self, repo: Path) -> None:
        git(repo, "pull", "--quiet", "--rebase", "origin", "main")

    def remote_log(self, *args: str) -> str:
        return git(self.remote, "log", "main", *args)
