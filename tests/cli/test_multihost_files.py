"""`fedraft keygen --node` and `fedraft init --from-public` (decision 0015): public parts only, checked."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fedraft.config import load_genesis, load_node_config, load_profile
from fedraft.crypto.keyfile import load_private_key, write_public_key
from fedraft.crypto.signing import Identity
from fedraft.crypto.tls import KeyAndCert, check_node_tls, make_ca, make_node_csr, spki_sha256
from fedraft.errors import ConfigError
from fedraft.federation_public import assemble_from_public, make_node_keys


def _keys(root: Path, names: tuple[str, ...] = ("a", "b", "c")) -> Path:
    public = root / "public"
    public.mkdir()
    for i, n in enumerate(names):
        keys = make_node_keys(n, root / n, base_port=7000 + 10 * i)
        (public / keys.public_file.name).write_bytes(keys.public_file.read_bytes())
    return public


def test_keygen_node_keeps_secrets_private_and_shares_only_public_parts(tmp_path: Path) -> None:
    keys = make_node_keys("hq", tmp_path / "hq", host="10.1.2.3", base_port=7400, region="eu", tier="gpu")
    for path in keys.private_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = keys.public_file.read_text()
    doc = json.loads(text)
    assert "PRIVATE" not in text and "seed" not in text
    assert doc["node_id"] == "hq" and doc["api_address"] == "10.1.2.3:7400" and doc["peer_address"] == "10.1.2.3:7401"
    assert doc["node_public_key"] == load_private_key(tmp_path / "hq" / "node.key").public_key.hex()
    with pytest.raises(ConfigError, match="already exists"):
        make_node_keys("hq", tmp_path / "hq")


def test_assembled_bundles_pin_each_nodes_own_keys(tmp_path: Path) -> None:
    public = _keys(tmp_path)
    fed = assemble_from_public(public, tmp_path / "out")
    genesis = load_genesis(fed.genesis)
    assert genesis.node_ids == ("a", "b", "c")
    ca = fed.ca_cert.read_bytes()
    for n in genesis.node_ids:
        bundle = fed.bundles[n]
        assert not any("PRIVATE" in p.read_text(errors="replace") for p in bundle.rglob("*") if p.is_file())
        cert = (bundle / "tls.pem").read_bytes()
        voter = genesis.voter(n)
        assert voter is not None and spki_sha256(cert) == voter.tls_spki_sha256
        assert voter.public_key == load_private_key(tmp_path / n / "node.key").public_key
        check_node_tls(n, cert, (tmp_path / n / "tls.key").read_bytes(), ca, voter.tls_spki_sha256)
        cfg = load_node_config(bundle / "node.toml")
        assert cfg.key_path == bundle / "node.key" and {p.node_id for p in cfg.peers} == set(genesis.node_ids) - {n}
        assert load_profile(bundle / f"{n}-admin.profile.toml").cluster_id == genesis.cluster_id
        assert (bundle / "data" / "BOOTSTRAP").exists()


def test_existing_ca_and_offline_break_glass_key(tmp_path: Path) -> None:
    public = _keys(tmp_path)
    ca = make_ca("ops")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "ca.key").write_bytes(ca.key_pem)
    bg = Identity.generate()
    write_public_key(tmp_path / "bg.pub", bg.public_key)
    fed = assemble_from_public(public, tmp_path / "out", ca_cert=tmp_path / "ca.pem", ca_key=tmp_path / "ca.key",
                               break_glass_public=tmp_path / "bg.pub")
    assert fed.ca_key is None and fed.break_glass_key is None
    assert load_genesis(fed.genesis).break_glass_public_key == bg.public_key
    assert fed.ca_cert.read_bytes() == ca.cert_pem
    assert not any("PRIVATE" in p.read_text(errors="replace") for p in fed.dir.rglob("*") if p.is_file())


def _edit(path: Path, **changes: object) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(("change", "message"), [
    ("tampered_csr", "bad signature"),
    ("csr_of_other_node", "names 'b', not node 'a'"),
    ("duplicate_key", "share a node key"),
    ("two_nodes", "1, 3 or 5 voter nodes"),
    ("seed", "holds private key material"),
    ("bad_address", "not a host:port address"),
])
def test_bad_public_files_are_refused_and_nothing_is_written(tmp_path: Path, change: str, message: str) -> None:
    public = _keys(tmp_path)
    a, b = public / "a.public.json", public / "b.public.json"
    doc_b = json.loads(b.read_text())
    if change == "tampered_csr":
        csr = json.loads(a.read_text())["tls_csr"]
        lines = csr.splitlines()
        i = len(lines) - 2  # the last base64 line: the request's signature
        lines[i] = lines[i][:10] + ("A" if lines[i][10] != "A" else "B") + lines[i][11:]
        _edit(a, tls_csr="\n".join(lines) + "\n")
    elif change == "csr_of_other_node":
        _edit(a, tls_csr=make_node_csr("b", []).cert_pem.decode())
    elif change == "duplicate_key":
        _edit(a, node_public_key=doc_b["node_public_key"])
    elif change == "two_nodes":
        (public / "c.public.json").unlink()
    elif change == "seed":
        _edit(a, seed="00" * 32)
    elif change == "bad_address":
        _edit(a, api_address="nowhere")
    with pytest.raises(ConfigError, match=message):
        assemble_from_public(public, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_reissued_certificate_keeps_the_pin_and_a_bundle_trusts_old_and_new(tmp_path: Path) -> None:
    from fedraft.crypto.tls import issue_node_cert, reissue_node_cert

    old_ca, new_ca = make_ca("f"), make_ca("f", label="2")
    node = issue_node_cert(old_ca, "a", ["127.0.0.1"])
    renewed = reissue_node_cert(new_ca, node.cert_pem)
    pin = spki_sha256(node.cert_pem)
    assert spki_sha256(renewed) == pin
    bundle = old_ca.cert_pem + new_ca.cert_pem
    check_node_tls("a", node.cert_pem, node.key_pem, bundle, pin)
    check_node_tls("a", renewed, node.key_pem, bundle, pin)
    with pytest.raises(ConfigError, match="no CA of the trust bundle"):
        check_node_tls("a", node.cert_pem, node.key_pem, new_ca.cert_pem, pin)
    other = issue_node_cert(new_ca, "a", [])
    with pytest.raises(ConfigError, match="not the one genesis pins"):
        check_node_tls("a", other.cert_pem, other.key_pem, bundle, pin)
    with pytest.raises(ConfigError, match="does not belong"):
        check_node_tls("a", renewed, other.key_pem, bundle, pin)
    with pytest.raises(ConfigError, match="does not belong to the CA"):
        reissue_node_cert(KeyAndCert(old_ca.key_pem, new_ca.cert_pem), node.cert_pem)
