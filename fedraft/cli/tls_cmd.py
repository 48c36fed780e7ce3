"""`fedraft tls`: certificate and CA rotation for the CA holder and the node hosts (decision 0015).

  new-ca   a new federation CA (the next one of a rotation; its name carries a label)
  reissue  a fresh certificate for the same node key (renewal, or signed by the new CA): no node secret needed
  bundle   a trust bundle of several CAs (old + new during a rotation)
  check    pre-flight on a node's host: would SIGHUP accept the node's current tls_cert, tls_key, ca_cert?
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fedraft.cli.common import EXIT_OK, add_command, add_output_arg, emit
from fedraft.errors import CallerError, ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tls = subparsers.add_parser("tls", help="rotate TLS certificates and the federation CA (docs/multi-host.md)",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example:\n  fedraft tls reissue --cert hq/tls.pem --ca-cert ca/ca.pem "
                                       "--ca-key ca/ca.key --out new.pem\n"
                                       "  fedraft tls check --config hq/node.toml && kill -HUP <node pid>")
    verbs = tls.add_subparsers(title="actions", metavar="ACTION", required=True)
    p = add_command(verbs, "new-ca", func=new_ca, help="make a new federation CA (ca.pem, ca.key 0600)",
                    example="fedraft tls new-ca --out ca-2026 --federation fed --label 2026")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write ca.pem and ca.key to")
    p.add_argument("--federation", required=True, help="federation name (genesis 'federation')")
    p.add_argument("--label", required=True, help="tells this CA from the one it replaces, e.g. the year")
    add_output_arg(p)
    p = add_command(verbs, "reissue", func=reissue,
                    help="a new certificate for a node's existing TLS key, signed by --ca-cert/--ca-key",
                    example="fedraft tls reissue --cert hq/tls.pem --ca-cert ca-2026/ca.pem --ca-key ca-2026/ca.key "
                            "--out hq-tls.pem")
    p.add_argument("--cert", type=Path, required=True, metavar="PEM", help="the node's current certificate")
    p.add_argument("--ca-cert", type=Path, required=True, metavar="PEM", help="CA certificate to sign with")
    p.add_argument("--ca-key", type=Path, required=True, metavar="KEY", help="its private key")
    p.add_argument("--out", type=Path, required=True, metavar="PEM", help="new certificate file (not overwritten)")
    add_output_arg(p)
    p = add_command(verbs, "bundle", func=bundle, help="concatenate CA certificates into one trust bundle",
                    example="fedraft tls bundle old/ca.pem new/ca.pem --out ca-bundle.pem")
    p.add_argument("certs", type=Path, nargs="+", metavar="PEM", help="CA certificates (or bundles)")
    p.add_argument("--out", type=Path, required=True, metavar="PEM", help="bundle file to write (not overwritten)")
    add_output_arg(p)
    p = add_command(verbs, "check", func=check,
                    help="check a node's TLS files as SIGHUP would, before sending it",
                    example="fedraft tls check --config /etc/fedraft/hq/node.toml && kill -HUP $(pidof ...)")
    p.add_argument("--config", type=Path, required=True, metavar="NODE.toml", help="the node's config")
    add_output_arg(p)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror}") from None


def _write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CallerError(f"{path} already exists", hint="write to a new file, then move it into place") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def new_ca(args: argparse.Namespace) -> int:
    from fedraft.crypto.tls import cert_summary, make_ca

    ca = make_ca(args.federation, label=args.label)
    args.out.mkdir(parents=True, exist_ok=True)
    _write_new(args.out / "ca.key", ca.key_pem, 0o600)
    _write_new(args.out / "ca.pem", ca.cert_pem)
    emit(args, {"ca_cert": str(args.out / "ca.pem"), "ca_key": str(args.out / "ca.key")},
         f"new CA {cert_summary(ca.cert_pem)}: {args.out / 'ca.pem'}; keep {args.out / 'ca.key'} offline")
    return EXIT_OK


def reissue(args: argparse.Namespace) -> int:
    from fedraft.crypto.tls import KeyAndCert, cert_summary, reissue_node_cert

    ca = KeyAndCert(_read(args.ca_key, "CA key"), _read(args.ca_cert, "CA certificate"))
    cert = reissue_node_cert(ca, _read(args.cert, "certificate"))
    _write_new(args.out, cert)
    emit(args, {"cert": str(args.out), "summary": cert_summary(cert)}, f"{args.out}: {cert_summary(cert)}")
    return EXIT_OK


def bundle(args: argparse.Namespace) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from fedraft.crypto.tls import split_pem_certs

    certs: list[x509.Certificate] = []
    for path in args.certs:
        for cert in split_pem_certs(_read(path, "CA certificate")):
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            if not constraints.ca:
                raise CallerError(f"{path} holds a certificate that is not a CA: {cert.subject.rfc4514_string()}")
            if cert not in certs:
                certs.append(cert)
    subjects = [c.subject for c in certs]
    if len(set(subjects)) != len(subjects):
        raise CallerError("two CAs of the bundle have the same name", hint="make the new CA with another --label")
    _write_new(args.out, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    emit(args, {"bundle": str(args.out), "cas": [c.subject.rfc4514_string() for c in certs]},
         f"{args.out}: {len(certs)} CAs: " + "; ".join(c.subject.rfc4514_string() for c in certs))
    return EXIT_OK


def check(args: argparse.Namespace) -> int:
    from fedraft.config import load_node_config
    from fedraft.crypto.tls import cert_summary, check_node_tls

    cfg = load_node_config(args.config)
    voter = cfg.genesis().voter(cfg.node_id)
    cert = _read(cfg.tls_cert, "TLS certificate")
    check_node_tls(cfg.node_id, cert, _read(cfg.tls_key, "TLS key"), _read(cfg.ca_cert, "CA certificate"),
                   voter.tls_spki_sha256 if voter is not None else None)
    emit(args, {"node_id": cfg.node_id, "ok": True, "cert": cert_summary(cert)},
         f"node {cfg.node_id}: TLS files usable ({cert_summary(cert)}); SIGHUP the node to load them")
    return EXIT_OK
