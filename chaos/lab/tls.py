"""A stack's TLS material: a CA of its own and one server certificate it signs, made at start.

`make_certs(folder)` writes `ca.pem` (the CA's certificate, what clients verify against),
`server.pem` (the server certificate, then the CA's: the chain a server presents) and
`server-key.pem`; the private keys are 0600 and the CA's key is not kept, so nothing can sign
another certificate with it. The server certificate names `localhost`, 127.0.0.1 and ::1 (and
any `names` asked for, e.g. the compose stack's `db` and `cache`): a client verifies the host
of its target against them, so a local stack's 127.0.0.1 targets verify as they are.

The server's key is an ECDSA P-256 key by default (`ec-p256`: the cheapest handshake) or an RSA
key of 2048, 3072 or 4096 bits (`KEYS`): what a handshake costs the server is mostly its signature,
and an RSA-3072 signature costs about 7 times an RSA-2048 one and 60 times a P-256 one (`openssl
speed` here), so the key decides how many handshakes a second a server completes, as it does for
services that serve RSA certificates. The CA's key is P-256 either way (the client verifies it).

Made with `cryptography` (the `tls` extra). `python -m chaos.lab.tls FOLDER [NAME ...]` makes
them for the compose stack (`make certs`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from chaos.lab import extras

CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server-key.pem"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
VALID_FOR = datetime.timedelta(days=30)
# The server key's kinds: name -> RSA bits (0: ECDSA P-256).
KEYS = {"ec-p256": 0, "rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}
DEFAULT_KEY = "ec-p256"


@dataclass(frozen=True)
class StackCerts:
    """Where one stack's TLS files are."""

    ca: Path
    cert: Path
    key: Path

    def server_args(self) -> list[str]:
        """A service's flags to serve with this certificate."""
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]


def make_certs(
    folder: Path, names: tuple[str, ...] = (), key_kind: str = DEFAULT_KEY
) -> StackCerts:
    """A new CA and a server certificate for `LOOPBACK_NAMES` and `names` (DNS names or IP
    addresses) with a key of `key_kind` (`KEYS`), written into `folder` (made 0700 if absent).
    MissingExtra without the `tls` extra; ValueError for an unknown key kind."""
    if key_kind not in KEYS:
        raise ValueError(f"TLS key must be one of {', '.join(KEYS)}, got {key_kind!r}")
    extras.require(extras.TLS, "TLS")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herdlab stack CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    bits = KEYS[key_kind]
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=bits)
        if bits
        else ec.generate_private_key(ec.SECP256R1())
    )
    sans: list[x509.GeneralName] = []
    for name in dict.fromkeys((*LOOPBACK_NAMES, *names)):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herdlab services")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    certs = StackCerts(folder / CA_FILE, folder / CERT_FILE, folder / KEY_FILE)
    _write(certs.ca, ca_cert.public_bytes(pem), 0o644)
    _write(certs.cert, cert.public_bytes(pem) + ca_cert.public_bytes(pem), 0o644)
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(certs.key, key_pem, 0o600)
    return certs


def _write(path: Path, data: bytes, mode: int) -> None:
    """Writes `path` afresh with `mode` from its creation: a key is never readable by others."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    path.chmod(mode)  # whatever the umask took away from a public file


def main(argv: list[str]) -> int:
    """`python -m chaos.lab.tls FOLDER [NAME ...]`: the files for the compose stack (the
    server key's kind from `HERDLAB_TLS_KEY`, default `ec-p256`)."""
    if not argv:
        print("usage: python -m chaos.lab.tls FOLDER [NAME ...]", file=sys.stderr)
        return 2
    try:
        certs = make_certs(
            Path(argv[0]), tuple(argv[1:]), os.environ.get("HERDLAB_TLS_KEY", DEFAULT_KEY)
        )
    except (extras.MissingExtra, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {certs.ca}, {certs.cert} and {certs.key}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
