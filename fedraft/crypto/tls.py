"""The federation CA and P-256 certificates for mutual TLS (grpcio refuses Ed25519 certificates).

Node certificates carry the node id as common name and as DNS subject alternative name, so a peer's
claimed id can be bound to its certificate. Genesis pins each node's SPKI sha256, so a stolen CA key
alone cannot impersonate a node.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedraft.errors import ConfigError

CERT_VALIDITY_DAYS = 825
CA_VALIDITY_DAYS = 3650


@dataclass(frozen=True)
class KeyAndCert:
    key_pem: bytes
    cert_pem: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(federation: str, now: datetime.datetime | None = None, label: str = "") -> KeyAndCert:
    """A new federation CA. `label` tells a rotation's new CA from the old one by name (a trust bundle
    holding both must not hold two CAs of one subject)."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = _new_key()
    common_name = f"fedraft CA {federation}" + (f" {label}" if label else "")
    if len(common_name) > 64:
        raise ConfigError(f"CA name {common_name!r} is longer than 64 characters")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return KeyAndCert(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def _sans(node_id: str, hosts: list[str]) -> list[x509.GeneralName]:
    import ipaddress

    sans: list[x509.GeneralName] = [x509.DNSName(node_id)]
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return sans


def _load_ca(ca: KeyAndCert) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
        ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    except ValueError as exc:
        raise ConfigError(f"unreadable CA key or certificate: {exc}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the federation CA key must be an EC P-256 key")
    if ca_cert.public_key() != ca_key.public_key():
        raise ConfigError("the CA key does not belong to the CA certificate")
    return ca_key, ca_cert


def _sign_node_cert(ca: KeyAndCert, public_key: ec.EllipticCurvePublicKey, node_id: str,
                    sans: list[x509.GeneralName], now: datetime.datetime | None) -> bytes:
    now = now or datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _load_ca(ca)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def issue_node_cert(ca: KeyAndCert, node_id: str, hosts: list[str],
                    now: datetime.datetime | None = None) -> KeyAndCert:
    """A server+client certificate for `node_id`; `hosts` are extra DNS names or IP addresses."""
    key = _new_key()
    return KeyAndCert(_key_pem(key), _sign_node_cert(ca, key.public_key(), node_id, _sans(node_id, hosts), now))


def make_node_csr(node_id: str, hosts: list[str]) -> KeyAndCert:
    """A new P-256 TLS key and a certificate signing request for it (in `cert_pem`), for `fedraft keygen --node`:
    the CA signs the request without ever seeing the key."""
    key = _new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .add_extension(x509.SubjectAlternativeName(_sans(node_id, hosts)), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyAndCert(_key_pem(key), csr.public_bytes(serialization.Encoding.PEM))


def _node_public_key(obj: x509.Certificate | x509.CertificateSigningRequest, what: str,
                     node_id: str) -> tuple[ec.EllipticCurvePublicKey, list[x509.GeneralName]]:
    key = obj.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"{what} for {node_id!r} must carry a P-256 key (grpc refuses Ed25519 certificates)")
    names = obj.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != node_id:
        raise ConfigError(f"{what} names {_text(names[0].value) if names else 'nobody'!r}, not node {node_id!r}")
    try:
        sans = list(obj.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    if x509.DNSName(node_id) not in sans:
        sans.insert(0, x509.DNSName(node_id))
    return key, sans


def sign_node_csr(ca: KeyAndCert, csr_pem: bytes, node_id: str, now: datetime.datetime | None = None) -> bytes:
    """The CA's certificate for a node's CSR: checked (self-signature, P-256, names the node), then signed."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise ConfigError(f"TLS request of {node_id!r} is not a PEM certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise ConfigError(f"TLS request of {node_id!r} has a bad signature (altered, or not made with its key)")
    key, sans = _node_public_key(csr, "TLS request", node_id)
    return _sign_node_cert(ca, key, node_id, sans, now)


def reissue_node_cert(ca: KeyAndCert, cert_pem: bytes, now: datetime.datetime | None = None) -> bytes:
    """A fresh certificate for the same key, names and node, signed by `ca` (renewal or a new CA).

    The key stays, so the SPKI sha256 pinned in genesis still matches and no node private key is needed.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ConfigError(f"not a PEM certificate: {exc}") from None
    node_id = cert_common_name(cert_pem)
    key, sans = _node_public_key(cert, "certificate", node_id)
    return _sign_node_cert(ca, key, node_id, sans, now)


def csr_spki_sha256(csr_pem: bytes) -> bytes:
    """sha256 of a CSR's SubjectPublicKeyInfo: the pin genesis will hold for the node."""
    csr = x509.load_pem_x509_csr(csr_pem)
    spki = csr.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def spki_sha256(cert_pem: bytes) -> bytes:
    """sha256 of the certificate's SubjectPublicKeyInfo (DER): what genesis pins per node."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ConfigError(f"not a PEM certificate: {exc}") from None
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def cert_common_name(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def split_pem_certs(bundle: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (a trust bundle may hold the old and the new CA during a rotation)."""
    try:
        certs = x509.load_pem_x509_certificates(bundle)
    except ValueError as exc:
        raise ConfigError(f"not a PEM certificate bundle: {exc}") from None
    return certs


def check_node_tls(node_id: str, cert_pem: bytes, key_pem: bytes, ca_bundle_pem: bytes,
                   pinned_spki: bytes | None, now: datetime.datetime | None = None) -> None:
    """Raise ConfigError unless the pair is usable for `node_id`: the key matches the certificate, the
    certificate names the node, is valid now, its key is the pinned one, and a CA of the bundle signed it."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise ConfigError(f"unreadable TLS certificate or key: {exc}") from None
    if cert.public_key() != key.public_key():
        raise ConfigError("the TLS key does not belong to the TLS certificate")
    _node_public_key(cert, "the TLS certificate", node_id)
    if pinned_spki is not None and spki_sha256(cert_pem) != pinned_spki:
        raise ConfigError(f"the TLS certificate's key is not the one genesis pins for {node_id!r}",
                          hint="a renewed certificate must keep the node's TLS key (fedraft tls reissue)")
    now = now or datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ConfigError(f"the TLS certificate is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
                          f"{cert.not_valid_after_utc:%Y-%m-%d})")
    for ca in split_pem_certs(ca_bundle_pem):
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return
    raise ConfigError("no CA of the trust bundle signed the TLS certificate",
                      hint="put the CA that issued it into ca_cert (a bundle may hold the old and the new CA)")


def cert_summary(cert_pem: bytes) -> str:
    """`serial .. issuer .. until ..` for logs: which certificate a node serves after a reload."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return (f"serial {cert.serial_number:x}, issuer {_text(issuer[0].value) if issuer else '?'}, "
            f"until {cert.not_valid_after_utc:%Y-%m-%d}")


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
