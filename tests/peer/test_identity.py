"""The peer identity: made once, atomically, private key 0600; never silently replaced."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dmedia_tui.peer import identity as ident


def test_first_use_makes_a_key_pair_and_a_self_signed_certificate(tmp_path: Path) -> None:
    d = tmp_path / "dmedia-tui" / "peer"
    me = ident.load_or_create(d)
    assert sorted(p.name for p in d.iterdir()) == ["cert.pem", "key.pem"]
    assert stat.S_IMODE(os.stat(d / "key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    cert = x509.load_pem_x509_certificate((d / "cert.pem").read_bytes())
    assert cert.issuer == cert.subject
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert me.fingerprint == hashlib.sha256(der).hexdigest()
    assert ident.is_fingerprint(me.fingerprint)
    assert ident.fingerprint_pem(me.cert_pem) == me.fingerprint
    # Valid whatever the clock says: pinning by fingerprint is the trust, not dates.
    assert cert.not_valid_after_utc.year == 9999 and cert.not_valid_before_utc.year == 2000


def test_the_same_identity_on_every_later_use(tmp_path: Path) -> None:
    first = ident.load_or_create(tmp_path / "peer")
    key_before = (tmp_path / "peer" / "key.pem").read_bytes()
    assert ident.load_or_create(tmp_path / "peer") == first
    assert (tmp_path / "peer" / "key.pem").read_bytes() == key_before


def test_racing_first_uses_agree_on_one_identity(tmp_path: Path) -> None:
    results: list[str] = []
    barrier = threading.Barrier(6)

    def go() -> None:
        barrier.wait()
        results.append(ident.load_or_create(tmp_path / "peer").fingerprint)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and len(set(results)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["peer"]  # no temp folder left


@pytest.mark.parametrize("name", ["cert.pem", "key.pem"])
def test_a_garbled_file_is_an_error_not_a_new_identity(tmp_path: Path, name: str) -> None:
    ident.load_or_create(tmp_path / "peer")
    path = tmp_path / "peer" / name
    path.write_bytes(b"-----BEGIN GARBAGE-----\nnope\n")
    with pytest.raises(ident.PeerIdentityError, match="garbled"):
        ident.load_or_create(tmp_path / "peer")
    assert path.read_bytes() == b"-----BEGIN GARBAGE-----\nnope\n"


@pytest.mark.parametrize("name", ["cert.pem", "key.pem"])
def test_a_missing_half_is_an_error_not_a_new_identity(tmp_path: Path, name: str) -> None:
    ident.load_or_create(tmp_path / "peer")
    (tmp_path / "peer" / name).unlink()
    with pytest.raises(ident.PeerIdentityError, match=f"{name} is missing"):
        ident.load_or_create(tmp_path / "peer")
    assert not (tmp_path / "peer" / name).exists()


def test_a_key_and_certificate_that_do_not_belong_together(tmp_path: Path) -> None:
    ident.load_or_create(tmp_path / "a")
    ident.load_or_create(tmp_path / "b")
    (tmp_path / "a" / "cert.pem").write_bytes((tmp_path / "b" / "cert.pem").read_bytes())
    with pytest.raises(ident.PeerIdentityError, match="do not match"):
        ident.load_or_create(tmp_path / "a")


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    ident.load_or_create(tmp_path / "peer")
    os.chmod(tmp_path / "peer" / "key.pem", 0o644)
    with pytest.raises(ident.PeerIdentityError, match="chmod 600"):
        ident.load_or_create(tmp_path / "peer")


def test_an_empty_folder_gets_an_identity(tmp_path: Path) -> None:
    (tmp_path / "peer").mkdir()
    assert ident.is_fingerprint(ident.load_or_create(tmp_path / "peer").fingerprint)


def test_fingerprint_pem_refuses_what_is_not_a_certificate() -> None:
    with pytest.raises(ident.PeerIdentityError):
        ident.fingerprint_pem("hello")
