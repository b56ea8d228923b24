"""A self-signed certificate for the webhook on a local run (``--webhook-self-signed``), made with
the ``cryptography`` package. In a cluster the certificate comes from cert-manager (deploy/); kopf's own
self-signing needs a package qmlops does not install."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

VALID_DAYS = 30


def self_signed(folder: Path, host: str | None = None) -> tuple[Path, Path]:
    """A fresh key and a certificate for ``host`` (and localhost, 127.0.0.1, ::1), written into
    ``folder`` (key mode 0600); the certificate's and the key's paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    if host:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            names.insert(0, x509.DNSName(host))
        else:
            addresses.insert(0, address)
    names += [x509.IPAddress(a) for a in dict.fromkeys(addresses)]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host or "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "tls.crt", folder / "tls.key"
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return certfile, keyfile
