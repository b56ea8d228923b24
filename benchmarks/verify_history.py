"""What a long, signed history costs: ``qmlops audit --verify --allowed-signers`` over a ledger of
10,000 entries, and ``qmlops plan`` and a no-op ``qmlops run --once`` over the same repository.

    .venv/bin/python benchmarks/verify_history.py [--entries 100 1000 10000]

The repository is made as the issue measured it: a model trained twice for real (``qmlops run`` with a
signing key: two versions, six signed entries), then a pin flipped back and forth until the ledger holds
the number of entries asked for. Those entries are real, well-formed, chained ledger entries in commits
signed with the controller's SSH key exactly as git signs them (SSHSIG over the commit, checked here
against ``git verify-commit``); they are written as Git objects directly (blobs by ``git fast-import``,
trees and commits by this script) because committing 10,000 decisions one by one through the reconcile
would take most of an hour. Printed: per size, the seconds each command took, wall clock, each in a
process of its own (Python's start-up and imports included).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.engine.registry.ledger import draft, entry_from_json  # noqa: E402
from tests.registry.repos import tiny_spec  # noqa: E402

IDENTITY = "qmlops <qmlops@example.invalid>"
QMLOPS = [sys.executable, "-m", "controller"]


def git(cwd: Path, *args: str, data: bytes | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, input=data, capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args[:3])}: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode().strip()


def qmlops(*args: str, env: dict[str, str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    done = subprocess.run([*QMLOPS, *args], capture_output=True, text=True, check=False, env=env, cwd=ROOT)
    return time.perf_counter() - started, done.returncode, (done.stderr or done.stdout)[-400:]


def s(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def sshsig(key: ed25519.Ed25519PrivateKey, payload: bytes) -> bytes:
    """The armored SSH signature ``ssh-keygen -Y sign -n git`` makes of ``payload``."""
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signed = b"SSHSIG" + s(b"git") + s(b"") + s(b"sha512") + s(hashlib.sha512(payload).digest())
    signature = s(b"ssh-ed25519") + s(key.sign(signed))
    blob = b"SSHSIG" + struct.pack(">I", 1) + s(s(b"ssh-ed25519") + s(public)) + s(b"git") + s(b"") + s(b"sha512")
    text = base64.b64encode(blob + s(signature)).decode()
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return ("-----BEGIN SSH SIGNATURE-----\n" + "\n".join(lines) + "\n-----END SSH SIGNATURE-----").encode()


class Objects:
    """Loose Git objects written straight into ``.git/objects``."""

    def __init__(self, repo: Path) -> None:
        self.root = repo / ".git" / "objects"

    def write(self, kind: str, body: bytes) -> str:
        raw = f"{kind} {len(body)}\0".encode() + body
        sha = hashlib.sha1(raw).hexdigest()
        path = self.root / sha[:2] / sha[2:]
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(zlib.compress(raw, 1))
        return sha

    def tree(self, entries: dict[str, tuple[str, str]]) -> str:
        """``entries``: name -> (mode, sha), sorted as git sorts them (a folder as if named 'name/')."""
        order = sorted(entries, key=lambda n: n + "/" if entries[n][0] == "40000" else n)
        body = b"".join(f"{entries[n][0]} {n}".encode() + b"\0" + bytes.fromhex(entries[n][1]) for n in order)
        return self.write("tree", body)


def ls_tree(repo: Path, rev: str) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for line in git(repo, "ls-tree", rev).splitlines():
        meta, name = line.split("\t", 1)
        mode, _kind, sha = meta.split()
        out[name] = ("40000" if mode == "040000" else mode, sha)
    return out


def seed(folder: Path, key: Path, env: dict[str, str]) -> Path:
    """A repository with a model trained twice, every commit signed by the controller's key."""
    repo = folder / "repo"
    git(folder, "init", "--quiet", "-b", "main", str(repo))
    (repo / "specs").mkdir()
    (repo / "specs/tiny.yaml").write_text(tiny_spec(iterations=4))
    git(repo, "add", ".")
    git(repo, "-c", "user.name=Alice", "-c", "user.email=alice@example.com", "commit", "--quiet", "-m", "tiny")
    for iterations in (4, 6):
        if iterations != 4:
            (repo / "specs/tiny.yaml").write_text(tiny_spec(iterations=iterations))
            git(repo, "-c", "user.name=Alice", "-c", "user.email=alice@example.com", "commit", "-qam", "more")
        _seconds, code, tail = qmlops(
            "run", "--repo", str(repo), "--once", "--no-push", "--signing-key", str(key), env=env
        )
        if code != 0:
            raise SystemExit(f"qmlops run failed ({code}): {tail}")
    return repo


def grow(repo: Path, key_file: Path, entries: int) -> None:
    """Flip the champion between versions 1 and 2 until the ledger holds ``entries`` entries, each in
    its own commit signed by the controller's key; the last one leaves version 2 the champion."""
    key = serialization.load_ssh_private_key(key_file.read_bytes(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    ledger_path = repo / "registry/demo/tiny/ledger.jsonl"
    text = ledger_path.read_bytes()
    lines = text.decode().splitlines()
    last = entry_from_json(json.loads(lines[-1]), len(lines))
    digests = {v: json.loads((repo / f"registry/demo/tiny/versions/{v}.json").read_text())["digest"] for v in (1, 2)}
    start = len(lines)
    extra = entries - start
    if extra <= 0:
        return
    if extra % 2:
        extra += 1  # end on version 2
    new_lines: list[tuple[Any, bytes]] = []
    for i in range(extra):
        version = 1 if i % 2 == 0 else 2
        kind = "rolled-back" if version == 1 else "promoted"
        data = {"versionDigest": digests[version], "previous": 3 - version, "pin": version}
        message = f"{'rolled back to' if version == 1 else 'promoted'} version {version}: pinned"
        last = draft(last, at=last.at, kind=kind, model="demo/tiny", version=version, message=message, data=data)
        new_lines.append((last, last.to_line().encode()))
    # the ledger's blobs, in one fast-import (each a delta against the one before)
    marks = repo / ".git" / "bench-marks"
    importer = subprocess.Popen(
        ["git", "fast-import", "--quiet", f"--export-marks={marks}"], cwd=repo, stdin=subprocess.PIPE
    )
    assert importer.stdin is not None
    content = bytearray(text)
    for n, (_, line) in enumerate(new_lines, start=1):
        content += line
        importer.stdin.write(b"blob\nmark :%d\ndata %d\n" % (n, len(content)))
        importer.stdin.write(content)
        importer.stdin.write(b"\n")
    importer.stdin.close()
    if importer.wait() != 0:
        raise SystemExit("git fast-import failed")
    blobs = {int(m[1:]): sha for m, sha in (line.split() for line in marks.read_text().splitlines())}
    objects = Objects(repo)
    root = ls_tree(repo, "HEAD")
    registry = ls_tree(repo, "HEAD:registry")
    demo = ls_tree(repo, "HEAD:registry/demo")
    tiny = ls_tree(repo, "HEAD:registry/demo/tiny")
    parent = git(repo, "rev-parse", "HEAD")
    stamp = int(time.time())
    for n, (entry, _) in enumerate(new_lines, start=1):
        tiny["ledger.jsonl"] = ("100644", blobs[n])
        demo["tiny"] = ("40000", objects.tree(tiny))
        registry["demo"] = ("40000", objects.tree(demo))
        root["registry"] = ("40000", objects.tree(registry))
        tree = objects.tree(root)
        who = f"{IDENTITY} {stamp + n} +0000"
        message = (
            f"qmlops: demo/tiny: {entry.message}\n\nQmlops-Model: demo/tiny\nQmlops-Version: {entry.version}\n"
            f"Qmlops-Decision: {entry.kind}\nQmlops-Entry: {entry.digest}\n"
        )
        head = f"tree {tree}\nparent {parent}\nauthor {who}\ncommitter {who}\n".encode()
        payload = head + b"\n" + message.encode()
        signature = sshsig(key, payload).replace(b"\n", b"\n ")
        parent = objects.write("commit", head + b"gpgsig " + signature + b"\n\n" + message.encode())
    git(repo, "update-ref", "refs/heads/main", parent)
    git(repo, "reset", "--quiet", "--hard", "main")
    # as a repository that grew by git commit would be: packed by git's automatic gc (every 6,700 loose
    # objects), with the commit-graph `qmlops run` keeps (Registry.index_history)
    git(repo, "repack", "-a", "-d", "-q")
    git(repo, "commit-graph", "write", "--reachable", "--changed-paths", "--split")


def measure(entries: int, folder: Path, env: dict[str, str]) -> dict[str, Any]:
    key = folder / "controller"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    signers = folder / "allowed_signers"
    signers.write_text(f'qmlops@example.invalid namespaces="git" {Path(str(key) + ".pub").read_text()}')
    repo = seed(folder, key, env)
    started = time.perf_counter()
    grow(repo, key, entries)
    built = time.perf_counter() - started
    checked = git(repo, "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", "HEAD")
    del checked  # git itself accepts the signature the script made (verify-commit exits 0)
    count = len((repo / "registry/demo/tiny/ledger.jsonl").read_text().splitlines())
    out = folder / "audit.json"
    audit = qmlops(
        "audit", "--repo", str(repo), "--verify", "--allowed-signers", str(signers), "--format", "json",
        "--output", str(out), env=env,
    )  # fmt: skip
    if audit[1] != 0:
        raise SystemExit(f"audit --verify failed at {count} entries: {audit[2]}")
    plain = qmlops("audit", "--repo", str(repo), "--verify", "--format", "json", "--output", str(out), env=env)
    plan = qmlops("plan", "--repo", str(repo), env=env)
    run = qmlops("run", "--repo", str(repo), "--once", "--no-push", env=env)
    signed_run = qmlops(
        "run", "--repo", str(repo), "--once", "--no-push", "--signing-key", str(key), "--allowed-signers",
        str(signers), env=env,
    )  # fmt: skip
    head = git(repo, "rev-parse", "HEAD")
    assert git(repo, "rev-parse", "main") == head
    for name, result in (("plan", plan), ("run", run), ("signed run", signed_run)):
        if result[1] != 0:
            raise SystemExit(f"{name} at {count} entries exited {result[1]}: {result[2]}")
    return {
        "entries": count,
        "built_seconds": round(built, 1),
        "audit_verify_signed": round(audit[0], 2),
        "audit_verify_unsigned": round(plain[0], 2),
        "plan": round(plan[0], 2),
        "run_noop": round(run[0], 2),
        "run_noop_signed": round(signed_run[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[100, 1000, 10000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / ".gitconfig").write_text("[user]\n\tname = Bench\n\temail = bench@example.com\n")
        env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "PYTHONPATH": str(ROOT)}
        env.pop("GIT_CONFIG_GLOBAL", None)
        os.environ.update({"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"})
        for entries in args.entries:
            folder = Path(tmp) / f"n{entries}"
            folder.mkdir()
            print(json.dumps(measure(entries, folder, env)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
