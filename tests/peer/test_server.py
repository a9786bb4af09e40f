"""The peer server over real TLS on 127.0.0.1: what it serves, and to whom."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import pytest

from dmedia_tui import protocol
from dmedia_tui.peer import identity as ident
from dmedia_tui.peer.client import PeerConnection, TransferFailed
from dmedia_tui.peer.server import ListenError, parse_listen, parse_range
from tests.peer.conftest import LEAF, SIZE, Machine


@pytest.fixture
def served(alice: Machine, bob: Machine, data: bytes):
    """alice serves one multi-leaf file to bob."""
    doc = alice.add_file(data, alice.new_store())
    srv = alice.server(bob)
    host, port = srv.start()
    yield srv, f"{host}:{port}", doc
    srv.stop()


def get(bob: Machine, alice: Machine, addr: str, path: str, method: str = "GET", **headers: str):
    with PeerConnection(bob.identity, addr, alice.identity.fingerprint) as conn:
        resp = conn.request(method, path, headers)
        return resp.status, dict(resp.getheaders()), resp.read()


def test_get_serves_the_exact_bytes_of_a_multi_leaf_file(served, alice, bob, data) -> None:
    srv, addr, doc = served
    status, headers, body = get(bob, alice, addr, f"/files/{doc['_id']}")
    assert status == 200
    assert body == data
    assert int(headers["Content-Length"]) == SIZE
    assert headers["Accept-Ranges"] == "bytes"
    assert srv.stats["bytes"] == SIZE


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=LEAF-10-LEAF+9", LEAF - 10, LEAF + 10),  # across a leaf boundary
        ("bytes=2LEAF+1-", 2 * LEAF + 1, SIZE),  # the short last leaf only
        ("bytes=-5", SIZE - 5, SIZE),
        ("bytes=100-999999999999", 100, SIZE),  # end past EOF: clamped
    ],
)
def test_range_requests(served, alice, bob, data, spec: str, start: int, end: int) -> None:
    srv, addr, doc = served
    spec = (
        spec.replace("2LEAF+1", str(2 * LEAF + 1))
        .replace("LEAF-10", str(LEAF - 10))
        .replace("LEAF+9", str(LEAF + 9))
    )
    status, headers, body = get(bob, alice, addr, f"/files/{doc['_id']}", Range=spec)
    assert status == 206
    assert body == data[start:end]
    assert headers["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}"


def test_an_unsatisfiable_range_is_416(served, alice, bob) -> None:
    _, addr, doc = served
    status, headers, _ = get(bob, alice, addr, f"/files/{doc['_id']}", Range=f"bytes={SIZE}-")
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{SIZE}"


def test_head_gives_the_headers_without_the_bytes(served, alice, bob) -> None:
    srv, addr, doc = served
    status, headers, body = get(bob, alice, addr, f"/files/{doc['_id']}", method="HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) == SIZE
    assert srv.stats["bytes"] == 0


def test_404_when_no_good_copy_is_connected_here(alice, bob, data) -> None:
    store = alice.new_store()
    doc = alice.add_file(data, store)
    unknown = protocol.hash_bytes(b"never imported").id
    connected = {"now": True}
    srv = alice.server(bob, stores_fn=lambda: alice.stores if connected["now"] else {})
    host, port = srv.start()
    try:
        addr = f"{host}:{port}"
        assert get(bob, alice, addr, f"/files/{unknown}")[0] == 404
        connected["now"] = False  # the store was unplugged
        assert get(bob, alice, addr, f"/files/{doc['_id']}")[0] == 404
        connected["now"] = True
        doc["corrupt"] = {store.id: {"time": 1}}  # known corrupt there: not a good copy
        assert get(bob, alice, addr, f"/files/{doc['_id']}")[0] == 404
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "hostile",
    [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2E%2E",
        "3" * 47,
        "3" * 49,
        "a" * 48,  # lowercase: not the alphabet
        "3" * 46 + "%2F3",
        "3" * 47 + "%00",
        "3" * 47 + "Z",  # Z is not in the alphabet
    ],
)
def test_a_hostile_file_id_is_400_and_builds_no_path(alice, bob, data, hostile: str) -> None:
    alice.add_file(data, alice.new_store())
    asked: list[str] = []

    def stores():
        asked.append("stores")
        return alice.stores

    def file_doc(fid: str):
        asked.append(fid)
        return alice.docs.get(fid)

    srv = alice.server(bob, stores_fn=stores, file_doc_fn=file_doc)
    host, port = srv.start()
    try:
        status, _, _ = get(bob, alice, f"{host}:{port}", f"/files/{hostile}")
        assert status == 400
        assert asked == []  # neither a doc lookup nor a store path for it
    finally:
        srv.stop()


def test_info_names_the_machine_and_its_connected_stores(alice, bob) -> None:
    s1, s2 = alice.new_store(), alice.new_store()
    srv = alice.server(bob)
    host, port = srv.start()
    try:
        with PeerConnection(bob.identity, f"{host}:{port}", alice.identity.fingerprint) as c:
            info = c.info()
        assert info == {"machine_id": alice.machine_id, "stores": sorted([s1.id, s2.id])}
    finally:
        srv.stop()


def test_the_server_is_read_only(served, alice, bob) -> None:
    _, addr, doc = served
    for method in ("PUT", "POST", "DELETE"):
        assert get(bob, alice, addr, f"/files/{doc['_id']}", method=method)[0] == 405


def _raw_tls(addr: tuple[str, int], ctx: ssl.SSLContext) -> bytes:
    """What the server answers to a GET /info on this context: b"" when the handshake
    is refused (TLS 1.3 clients may only learn it at their first read)."""
    try:
        with (
            socket.create_connection(addr, timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="x") as s,
        ):
            s.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out
    except (ssl.SSLError, ConnectionError):
        return b""


def test_a_client_without_a_certificate_gets_nothing(served) -> None:
    srv, _, _ = served
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    assert _raw_tls(srv.address, ctx) == b""
    assert srv.stats["requests"] == 0


def test_a_client_with_an_unknown_certificate_gets_nothing(served, shm: Path) -> None:
    srv, _, _ = served
    mallory = ident.load_or_create(shm / "mallory")
    assert _raw_tls(srv.address, mallory.client_context()) == b""
    assert srv.stats["requests"] == 0


def test_tls_1_2_is_refused(served, bob) -> None:
    srv, _, _ = served
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(bob.identity.cert_path, bob.identity.key_path)
    assert _raw_tls(srv.address, ctx) == b""
    assert srv.stats["requests"] == 0


def test_a_machine_removed_from_the_library_gets_403(alice, bob, data) -> None:
    doc = alice.add_file(data, alice.new_store())
    trust = {bob.identity.fingerprint: bob.identity.cert_pem}
    srv = alice.server(trusted_fn=lambda: dict(trust))
    host, port = srv.start()
    try:
        addr = f"{host}:{port}"
        assert get(bob, alice, addr, "/info")[0] == 200
        trust.clear()
        srv.refresh_trust()
        status, _, body = get(bob, alice, addr, f"/files/{doc['_id']}")
        assert status == 403 and data[:100] not in body
    finally:
        srv.stop()


def test_a_machine_that_joins_later_is_trusted_without_a_restart(alice, bob) -> None:
    trust: dict[str, str] = {}
    srv = alice.server(trusted_fn=lambda: dict(trust))
    host, port = srv.start()
    try:
        with pytest.raises(TransferFailed):
            get(bob, alice, f"{host}:{port}", "/info")
        trust[bob.identity.fingerprint] = bob.identity.cert_pem
        srv.refresh_trust()
        assert get(bob, alice, f"{host}:{port}", "/info")[0] == 200
    finally:
        srv.stop()


def test_a_certificate_that_does_not_match_its_fingerprint_is_not_trusted(alice, bob) -> None:
    srv = alice.server(trusted_fn=lambda: {bob.identity.fingerprint: alice.identity.cert_pem})
    host, port = srv.start()
    try:
        with pytest.raises(TransferFailed):
            get(bob, alice, f"{host}:{port}", "/info")
    finally:
        srv.stop()


def test_the_client_refuses_a_server_with_another_fingerprint(served, bob) -> None:
    srv, addr, _ = served
    with (
        pytest.raises(TransferFailed, match="not the machine it claims"),
        PeerConnection(bob.identity, addr, "0" * 64) as conn,
    ):
        conn.request("GET", "/info")
    assert srv.stats["requests"] == 0  # nothing was sent


def test_port_0_binds_a_free_port_and_reports_it(alice, bob) -> None:
    srv = alice.server(bob, listen="127.0.0.1:0")
    host, port = srv.start()
    try:
        assert host == "127.0.0.1" and port > 0
        assert srv.address == (host, port)
        with pytest.raises(OSError):  # a second server cannot take the same port
            alice.server(bob, listen=f"127.0.0.1:{port}").start()
    finally:
        srv.stop()
    assert not srv.running


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:8476") == ("0.0.0.0", 8476)
    assert parse_listen("[::]:0") == ("::", 0)
    for bad in ("8476", "host:", ":1", "h:99999", "h:x"):
        with pytest.raises(ListenError):
            parse_listen(bad)


def test_parse_range_edge_cases() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-1,4-5", 10) is None  # several ranges: whole file
    assert parse_range("bytes=-20", 10) == (0, 10)
    for bad in ("bytes=5-4", "bytes=-0", "items=0-1", "bytes=x-1", "bytes=10-", "bytes"):
        with pytest.raises(ValueError):
            parse_range(bad, 10)


def test_http_1_1_keepalive_serves_several_requests_on_one_connection(served, alice, bob) -> None:
    srv, addr, doc = served
    with PeerConnection(bob.identity, addr, alice.identity.fingerprint) as conn:
        for _ in range(3):
            resp = conn.request("GET", f"/files/{doc['_id']}", {"Range": "bytes=0-99"})
            assert resp.status == 206 and len(resp.read()) == 100
        assert json.loads(conn.request("GET", "/info").read())["machine_id"] == alice.machine_id
    assert srv.stats["requests"] == 4


def test_a_library_of_many_machines_serves_every_one_of_them(alice, bob, shm: Path) -> None:
    # Every machine's certificate is a trust anchor of the server. With certificates that
    # shared one subject name, OpenSSL picked the wrong anchor and refused 2 peers in 3 as
    # soon as a library had three machines (which ones depended on the doc order).
    others = []
    for name in ("carol", "dave", "erin", "frank"):
        (shm / name).mkdir()
        others.append(Machine(name, shm / name))
    clients = [bob, *others]
    srv = alice.server(alice, *clients)
    host, port = srv.start()
    try:
        for client in clients:
            status, _, body = get(client, alice, f"{host}:{port}", "/info")
            assert status == 200, client.name
            assert json.loads(body)["machine_id"] == alice.machine_id
    finally:
        srv.stop()
    assert srv.stats["refused"] == 0


def test_an_old_certificate_with_the_shared_name_is_reissued_for_the_same_key(
    tmp_path: Path,
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    me = ident.load_or_create(tmp_path / "peer")
    key = serialization.load_pem_private_key(me.key_path.read_bytes(), password=None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dmedia-tui peer")])
    old = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(ident._NOT_BEFORE)
        .not_valid_after(ident._NOT_AFTER)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    me.cert_path.write_bytes(old.public_bytes(serialization.Encoding.PEM))
    again = ident.load_or_create(tmp_path / "peer")
    cert = x509.load_pem_x509_certificate(again.cert_path.read_bytes())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn.startswith("dmedia-tui peer ") and len(cn) > len("dmedia-tui peer ")
    assert cert.public_key() == key.public_key()  # the same key: only the name changed
    assert again.fingerprint != ident.fingerprint_der(old.public_bytes(serialization.Encoding.DER))
    assert ident.load_or_create(tmp_path / "peer").fingerprint == again.fingerprint  # once
