"""The small PKI between the API and its runners: mutual TLS under one private CA.

``cove runner certs init --dir D`` makes the CA (``ca.pem``, ``ca.key``); ``cove
runner certs issue --dir D --name N --server --host ADDR`` a runner's certificate
(for the TLS server, valid for its addresses), and without ``--server`` an API's
(a TLS client). A runner accepts only callers whose certificate the CA signed for
client use; the API accepts only a runner whose certificate the CA signed for server
use and whose names include the address it dialled.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cove.hostfiles import private_dir

CA_CERT, CA_KEY = "ca.pem", "ca.key"
CA_DAYS, LEAF_DAYS = 3650, 825


def init_ca(directory: Path, name: str = "Cove runners CA") -> Path:
    """Make a CA in ``directory`` (0700); its certificate's path.

    Raises:
        FileExistsError: ``directory`` already holds a CA (it is never replaced).
    """
    private_dir(directory)
    if (directory / CA_KEY).exists():
        raise FileExistsError(f"{directory / CA_KEY} exists: a CA is never overwritten")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(subject, subject, key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    _write_key(directory / CA_KEY, key)
    (directory / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return directory / CA_CERT


def issue(directory: Path, name: str, *, server: bool, hosts: tuple[str, ...] = ()
          ) -> tuple[Path, Path]:  # fmt: skip
    """Issue ``<name>.pem`` and ``<name>.key`` in ``directory`` under its CA.

    Args:
        directory: Holds the CA (see :func:`init_ca`).
        name: The certificate's common name (and file name).
        server: A runner's certificate (TLS server) when true, else an API's (client).
        hosts: The runner's DNS names and IP addresses (at least one for a server).

    Raises:
        ValueError: a bad name, or a server certificate without hosts.
        FileNotFoundError: no CA in ``directory``.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad certificate name {name!r}")
    if server and not hosts:
        raise ValueError("a runner's certificate needs --host (the address the API dials)")
    ca_key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(subject, ca_cert.subject, key.public_key(), LEAF_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
    )  # fmt: skip
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [_general_name(h) for h in hosts]), critical=False)  # fmt: skip
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    _write_key(directory / f"{name}.key", key)
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return directory / f"{name}.pem", directory / f"{name}.key"


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """The runner's TLS context: TLS 1.3, and a client certificate the CA signed (for
    client use) required of every caller."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """The API's TLS context: it shows its certificate and trusts only a runner the CA
    signed (for server use) whose names include the address dialled."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname, CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=ca)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int) -> x509.CertificateBuilder:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
        .public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )  # fmt: skip


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip
    path.touch(mode=0o600, exist_ok=False)
    path.write_bytes(data)
