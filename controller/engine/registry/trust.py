"""Trust in Git history that holds against someone with push access: SSH-signed commits.

The controller signs every commit it makes with an SSH key (git's own ``gpg.format=ssh`` signing, see
:func:`signing_settings`). Whoever checks the history names the keys it trusts in an allowed-signers
file (git's format, ``ssh-keygen(1)`` ALLOWED SIGNERS), kept outside the repository being checked.

Signatures are checked here, in process, rather than by one ``ssh-keygen -Y verify`` per commit: the
commit objects are read in one ``git cat-file --batch`` and each SSHSIG is verified with
``cryptography`` (ed25519, RSA, ECDSA keys), so that a history of ten thousand decisions is checked in
seconds. The result for a commit never changes and is remembered by its sha.

- :class:`AllowedSigners` parses the file (a line that does not parse is an error naming the line);
- :func:`check_signing_key` refuses a key that is missing, unreadable or not an SSH private key;
- :class:`Trust` answers "was commit X signed by a key the file lists for principal P?", with the
  commits before ``--signed-since`` exempt, so that an existing registry adopts signing without
  rewriting its history.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import functools
import hashlib
import os
import re
import shlex
import stat
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

SIGNERS_FILE_LIMIT = 1_000_000  # bytes: an allowed-signers file is a short list of people
SIGNING_KEY_LIMIT = 64_000
_ARMOR_BEGIN, _ARMOR_END = b"-----BEGIN SSH SIGNATURE-----", b"-----END SSH SIGNATURE-----"
_KEY_TYPES = frozenset({"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"})
_CURVES: dict[str, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
    "nistp256": (ec.SECP256R1(), hashes.SHA256()),
    "nistp384": (ec.SECP384R1(), hashes.SHA384()),
    "nistp521": (ec.SECP521R1(), hashes.SHA512()),
}
_TIME = re.compile(r"^(\d{8})(\d{4}(\d{2})?)?Z?$")


class TrustError(ValueError):
    """An allowed-signers file or a signing key that cannot be used; the message names the line."""


# --- the allowed-signers file ----------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """One line of an allowed-signers file: principals (patterns) allowed to sign with one key."""

    principals: tuple[str, ...]
    key_type: str
    key: bytes  # the public key blob
    namespaces: tuple[str, ...] | None = None
    valid_after: datetime | None = None
    valid_before: datetime | None = None

    def names(self, principal: str) -> bool:
        wanted = principal.lower()
        matched = False
        for pattern in self.principals:
            negated = pattern.startswith("!")
            if fnmatch.fnmatchcase(wanted, pattern.lstrip("!").lower()):
                if negated:
                    return False
                matched = True
        return matched

    def valid_at(self, moment: datetime | None) -> bool:
        if moment is None:
            return self.valid_after is None and self.valid_before is None
        if self.valid_after is not None and moment < self.valid_after:
            return False
        return not (self.valid_before is not None and moment > self.valid_before)


@dataclass(frozen=True)
class AllowedSigners:
    signers: tuple[Signer, ...]
    source: str = ""

    @classmethod
    def read(cls, path: Path) -> AllowedSigners:
        """The file at ``path``; :class:`TrustError` when it is missing, too big or does not parse."""
        try:
            if path.stat().st_size > SIGNERS_FILE_LIMIT:
                raise TrustError(f"{path}: larger than {SIGNERS_FILE_LIMIT} bytes: not an allowed-signers file")
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TrustError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as err:
            raise TrustError(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err})") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "allowed signers") -> AllowedSigners:
        signers = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                signers.append(_signer(line))
            except TrustError as err:
                raise TrustError(f"{source} line {number}: {err}") from None
        if not signers:
            raise TrustError(f"{source}: lists no signer (write 'principal key-type base64-key' lines)")
        return cls(tuple(signers), source)

    def keys_for(self, key: bytes) -> list[Signer]:
        return [s for s in self.signers if s.key == key and (s.namespaces is None or "git" in s.namespaces)]


def _signer(line: str) -> Signer:
    try:
        words = shlex.split(line, posix=True)
    except ValueError:
        raise TrustError("unbalanced quotes") from None
    if len(words) < 3:
        raise TrustError("expected 'principals [options] key-type base64-key'")
    principals = tuple(p for p in words[0].split(",") if p)
    rest = words[1:]
    options: dict[str, str] = {}
    if not rest[0].startswith(("ssh-", "ecdsa-", "sk-")):  # else it is the key type (perhaps one not supported)
        for option in rest[0].split(","):
            key, _, value = option.partition("=")
            options[key.strip().lower()] = value.strip().strip('"')
        rest = rest[1:]
    if len(rest) < 2:
        raise TrustError("expected a key type and a base64 key after the principals")
    key_type, encoded = rest[0], rest[1]
    if key_type not in _KEY_TYPES:
        raise TrustError(f"key type {key_type[:40]!r} is not one of {', '.join(sorted(_KEY_TYPES))}")
    unknown = set(options) - {"namespaces", "valid-after", "valid-before"}
    if unknown:
        raise TrustError(f"option {sorted(unknown)[0][:40]!r} is not supported (namespaces, valid-after, valid-before)")
    after, before = _option_time(options.get("valid-after")), _option_time(options.get("valid-before"))
    try:
        blob = base64.b64decode(encoded, validate=True)
        if _Reader(blob).string().decode() != key_type:
            raise TrustError(f"the base64 key is not a {key_type} key")
        _public_key(blob)
    except (binascii.Error, ValueError, UnicodeDecodeError) as err:
        if isinstance(err, TrustError):
            raise
        raise TrustError("the key is not valid base64 SSH public key data") from None
    namespaces = tuple(options["namespaces"].split(",")) if "namespaces" in options else None
    return Signer(principals, key_type, blob, namespaces, after, before)


def _option_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    match = _TIME.match(text)
    if not match:
        raise TrustError(f"time {text[:20]!r} is not YYYYMMDD[HHMM[SS]]")
    digits = (match[1] + (match[2] or "0000")).ljust(14, "0")
    return datetime.strptime(digits, "%Y%m%d%H%M%S").replace(tzinfo=UTC)


# --- the signing key ---------------------------------------------------------------------------------


def check_signing_key(path: Path) -> str:
    """The public key of the SSH private key at ``path`` (what to list in an allowed-signers file);
    :class:`TrustError` when it is missing, unreadable, readable by others, protected by a passphrase
    or not an SSH private key."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise TrustError(f"{path}: not a file")
        if info.st_size > SIGNING_KEY_LIMIT:
            raise TrustError(f"{path}: larger than {SIGNING_KEY_LIMIT} bytes: not an SSH private key")
        with path.open("rb") as handle:
            head = handle.read(64)
    except FileNotFoundError:
        raise TrustError(f"{path}: no such file") from None
    except OSError as err:
        raise TrustError(f"{path}: cannot be read ({err.strerror})") from None
    if b"PRIVATE KEY-----" not in head:
        raise TrustError(f"{path}: not an SSH private key")
    if info.st_mode & 0o077:
        raise TrustError(f"{path}: readable by others (mode {stat.S_IMODE(info.st_mode):o}); ssh-keygen wants 600")
    try:
        done = subprocess.run(
            ["ssh-keygen", "-y", "-P", "", "-f", str(path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise TrustError("ssh-keygen is not installed (signing commits needs OpenSSH's ssh-keygen)") from None
    public = done.stdout.strip()
    if done.returncode != 0 or public.split(" ", 1)[0] not in _KEY_TYPES:
        raise TrustError(f"{path}: not an SSH private key that signs without a passphrase")
    return public


def signing_settings(key: Path) -> dict[str, str]:
    """``git -c`` settings that sign every commit (rebased ones too) with the SSH key at ``key``."""
    return {"gpg.format": "ssh", "user.signingKey": str(key), "commit.gpgSign": "true"}


# --- SSHSIG --------------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError("truncated SSH data")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def string(self) -> bytes:
        return self.take(self.u32())

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


@functools.lru_cache(maxsize=256)  # a history is signed by a handful of keys
def _public_key(blob: bytes) -> ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    reader = _Reader(blob)
    kind = reader.string().decode()
    if kind == "ssh-ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(reader.string())
    if kind == "ssh-rsa":
        e, n = reader.mpint(), reader.mpint()
        return rsa.RSAPublicNumbers(e, n).public_key()
    if kind.startswith("ecdsa-sha2-"):
        curve = reader.string().decode()
        if curve not in _CURVES:
            raise ValueError(f"unknown curve {curve}")
        return ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[curve][0], reader.string())
    raise ValueError(f"unsupported key type {kind[:40]}")


def verify_sshsig(armored: bytes, message: bytes, namespace: str = "git") -> bytes | None:
    """The public key blob that made this SSH signature of ``message`` in ``namespace``; None when it
    is not a valid signature."""
    try:
        body = armored.strip()
        if not body.startswith(_ARMOR_BEGIN) or not body.endswith(_ARMOR_END):
            return None
        blob = base64.b64decode(b"".join(body[len(_ARMOR_BEGIN) : -len(_ARMOR_END)].split()))
        reader = _Reader(blob)
        if reader.take(6) != b"SSHSIG" or reader.u32() != 1:
            return None
        key, ns, reserved, hash_name = reader.string(), reader.string(), reader.string(), reader.string()
        signature = _Reader(reader.string())
        if ns.decode() != namespace or hash_name not in (b"sha256", b"sha512"):
            return None
        digest = hashlib.new(hash_name.decode(), message).digest()
        signed = b"SSHSIG" + _string(ns) + _string(reserved) + _string(hash_name) + _string(digest)
        sig_type, sig = signature.string().decode(), signature.string()
        public = _public_key(key)
        if isinstance(public, ed25519.Ed25519PublicKey) and sig_type == "ssh-ed25519":
            public.verify(sig, signed)
        elif isinstance(public, rsa.RSAPublicKey) and sig_type in ("rsa-sha2-256", "rsa-sha2-512"):
            rsa_hash: hashes.HashAlgorithm = hashes.SHA512() if sig_type == "rsa-sha2-512" else hashes.SHA256()
            public.verify(sig, signed, padding.PKCS1v15(), rsa_hash)
        elif isinstance(public, ec.EllipticCurvePublicKey) and sig_type.startswith("ecdsa-sha2-"):
            numbers = _Reader(sig)
            r, s = numbers.mpint(), numbers.mpint()
            algorithm = _CURVES[sig_type.removeprefix("ecdsa-sha2-")][1]
            public.verify(encode_dss_signature(r, s), signed, ec.ECDSA(algorithm))
        else:
            return None
        return key
    except (InvalidSignature, ValueError, KeyError, UnicodeDecodeError, binascii.Error):
        return None


def split_commit(raw: bytes) -> tuple[bytes, bytes | None, datetime | None]:
    """A commit object as (the payload its signature covers, the armored signature or None, the
    committer's time)."""
    header, sep, message = raw.partition(b"\n\n")
    kept: list[bytes] = []
    signature: list[bytes] = []
    moment: datetime | None = None
    in_signature = False
    for line in header.split(b"\n"):
        if in_signature and line.startswith(b" "):
            signature.append(line[1:])
            continue
        in_signature = False
        if line.startswith((b"gpgsig ", b"gpgsig-sha256 ")):
            in_signature = True
            signature.append(line.split(b" ", 1)[1])
            continue
        if line.startswith(b"committer "):
            parts = line.rsplit(b" ", 2)
            try:
                moment = datetime.fromtimestamp(int(parts[1]), UTC)
            except (ValueError, IndexError, OverflowError):
                moment = None
        kept.append(line)
    payload = b"\n".join(kept) + sep + message
    return payload, (b"\n".join(signature) if signature else None), moment


# --- what a commit's signature says ------------------------------------------------------------------


class SignatureState(StrEnum):
    GOOD = "good"  # verified with a key the allowed-signers file lists
    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown-key"  # a valid signature by a key the file does not list
    BAD = "bad"  # does not verify
    EXEMPT = "exempt"  # before --signed-since: not required


@dataclass(frozen=True)
class Signature:
    state: SignatureState
    signers: tuple[Signer, ...] = ()

    def by(self, principal: str) -> bool:
        """Whether a key the file lists for ``principal`` made it (or signing was not required)."""
        if self.state is SignatureState.EXEMPT:
            return True
        return self.state is SignatureState.GOOD and any(s.names(principal) for s in self.signers)

    def describe(self, principal: str) -> str:
        if self.state is SignatureState.GOOD and not self.by(principal):
            names = sorted({p for s in self.signers for p in s.principals})
            return f"signed by a key the allowed signers list for {', '.join(names)}, not for {principal}"
        return {
            SignatureState.UNSIGNED: "unsigned",
            SignatureState.UNKNOWN_KEY: "signed by a key not in the allowed signers",
            SignatureState.BAD: "its signature does not verify",
        }.get(self.state, "signed")


def judge_signature(signers: AllowedSigners, raw: bytes) -> Signature:
    payload, armored, moment = split_commit(raw)
    if armored is None:
        return Signature(SignatureState.UNSIGNED)
    key = verify_sshsig(armored, payload)
    if key is None:
        return Signature(SignatureState.BAD)
    listed = tuple(s for s in signers.keys_for(key) if s.valid_at(moment))
    return Signature(SignatureState.GOOD, listed) if listed else Signature(SignatureState.UNKNOWN_KEY)


@dataclass
class Trust:
    """The allowed signers a history is checked against, and the commits exempt from it (``signed_since``
    and its ancestors: the history from before the registry adopted signing; ``git log REV..`` is what
    must be signed). Without signers nothing is checked (:attr:`checked` is False)."""

    signers: AllowedSigners | None = None
    signed_since: str | None = None  # the last commit before signing: commits after it must be signed
    _exempt: frozenset[str] | None = None
    _seen: dict[str, Signature] = field(default_factory=dict)

    @property
    def checked(self) -> bool:
        return self.signers is not None

    def exempt(self, git: GitLike) -> frozenset[str]:
        if self._exempt is None:
            if self.signed_since is None:
                self._exempt = frozenset()
            else:
                text = git.out("rev-list", self.signed_since)  # REV and what came before it
                self._exempt = frozenset(text.split())
        return self._exempt

    def signatures(self, git: GitLike, shas: Iterable[str]) -> dict[str, Signature]:
        """Each commit's signature, read in one batch for those not seen before."""
        wanted = list(dict.fromkeys(shas))
        if self.signers is None:
            return {sha: Signature(SignatureState.EXEMPT) for sha in wanted}
        exempt = self.exempt(git)
        missing = [sha for sha in wanted if sha not in self._seen and sha not in exempt]
        if missing:
            for sha, raw in git.commit_objects(missing).items():
                self._seen[sha] = judge_signature(self.signers, raw)
        return {
            sha: Signature(SignatureState.EXEMPT)
            if sha in exempt
            else self._seen.get(sha, Signature(SignatureState.BAD))
            for sha in wanted
        }

    def signature(self, git: GitLike, sha: str) -> Signature:
        return self.signatures(git, [sha])[sha]


class GitLike(Protocol):
    """The two calls :class:`Trust` makes (``controller.engine.registry.git.Git`` has them)."""

    def out(self, *args: str) -> str: ...

    def commit_objects(self, shas: list[str]) -> dict[str, bytes]: ...


def private_key_file(text: str, folder: Path) -> Path:
    """The key ``text`` (from a Secret) written to a file only its owner reads, for git to sign with."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / "signing-key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")
    os.chmod(path, 0o600)
    return path
