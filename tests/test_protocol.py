"""The hashing protocol and IDs: frozen known answers, distinct errors, ID properties."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from blake3 import blake3
from hypothesis import given
from hypothesis import strategies as st

from dmedia_tui import protocol as P
from dmedia_tui.protocol import (
    DIGEST_BYTES,
    LEAF_SIZE,
    InvalidID,
    LeafCountError,
    LeafHashesLengthError,
    ProtocolError,
    RootHashError,
)

_PATTERN = bytes(range(256))


def pattern(n: int) -> bytes:
    """bytes(range(256)) repeated, cut to n bytes: deterministic, not all one value."""
    return (_PATTERN * (n // 256 + 1))[:n]


# Computed once with this implementation and frozen: if any of these change, every ID
# already recorded anywhere is orphaned. Never "update" them to make a test pass.
LEAF0_FULL = "f104bdb1b907b5a4e2d32d7e2beb581595e2049a8ef774d4dd9cc93c4ac5"
VECTORS = {
    "one_byte": (
        b"\x00",
        "3IFIJVR5NSIU9QEDQK66K5TIMX8I3JGEG7BTV7GJ9HOBJHGD",
        ["8d00c4c18675905404c54a50c449fc3b0fca148434c010bf5eb32231605f"],
    ),
    "one_leaf": (
        pattern(LEAF_SIZE),
        "V7X5FGEI7KWGWQ7CUQFTMAB9SFS5YMNXKGH9HCXMLWSNGGDX",
        [LEAF0_FULL],
    ),
    "leaf_plus_one": (
        pattern(LEAF_SIZE + 1),
        "97F9JBLT7IMCBGH6A6PEXHBMNBOILJ3P66FEV6C6CCQPMNC3",
        [LEAF0_FULL, "71388816de3ebe2709d9b206e4cfc47f9012053bc532d7d5f1d1ab508502"],
    ),
    "three_leaves": (
        pattern(3 * LEAF_SIZE),
        "CAKXL6G3R3GQRN5UL6S4M5BIYY8O4VIDE6J8U9TQPX9RN95Q",
        [
            LEAF0_FULL,
            "3fe7b10a1d3c528b9d26a2cdc64b94ba1fda6b075830a1f7bedc35089f00",
            "45187edd187e44e7778a4a0c00a08fbc14234c643913cb11dc8a6f656f35",
        ],
    ),
}


@pytest.mark.parametrize("name", list(VECTORS))
def test_known_answers_hash_bytes(name: str) -> None:
    data, file_id, leaves = VECTORS[name]
    ch = P.hash_bytes(data)
    assert ch.id == file_id
    assert ch.file_size == len(data)
    assert [leaf.hex() for leaf in P.split_leaf_hashes(ch.leaf_hashes)] == leaves
    for i, leaf in enumerate(leaves):
        chunk = data[i * LEAF_SIZE : (i + 1) * LEAF_SIZE]
        assert P.hash_leaf(i, chunk).hex() == leaf
    assert P.hash_root(len(data), ch.leaf_hashes) == file_id
    assert P.check_root_hash(file_id, len(data), ch.leaf_hashes) == [
        bytes.fromhex(x) for x in leaves
    ]


@pytest.mark.parametrize("name", list(VECTORS))
@pytest.mark.parametrize("use_mmap", [True, False], ids=["mmap", "readinto"])
def test_known_answers_hash_path(name: str, use_mmap: bool, tmp_path: Path) -> None:
    """Both file readers (zero-copy mmap and the readinto fallback) give the same IDs."""
    data, file_id, _ = VECTORS[name]
    path = tmp_path / name
    path.write_bytes(data)
    seen: list[int] = []
    ch = P.hash_path(path, seen.append, use_mmap=use_mmap)
    assert ch == P.hash_bytes(data)
    assert ch.id == file_id
    assert sum(seen) == len(data)
    assert len(seen) == P.leaf_count(len(data))


@pytest.mark.parametrize("name", list(VECTORS))
@pytest.mark.parametrize(
    "piece",
    [1 << 19, LEAF_SIZE, LEAF_SIZE - 1, LEAF_SIZE + 1, 3 * LEAF_SIZE, 1_000_003],
    ids=lambda n: f"pieces-of-{n}",
)
def test_update_in_pieces_gives_the_known_answers(name: str, piece: int) -> None:
    """Hasher.update (the copy path's chunks) cuts the leaves where hash_leaf does,
    whatever the pieces: one straddling a leaf boundary, several a leaf, one the file."""
    data, file_id, leaves = VECTORS[name]
    h = P.Hasher()
    for i in range(0, len(data), piece):
        h.update(memoryview(data)[i : i + piece])
    ch = h.content_hash()
    assert ch.id == file_id
    assert ch.file_size == len(data)
    assert [leaf.hex() for leaf in P.split_leaf_hashes(ch.leaf_hashes)] == leaves
    assert h.content_hash() == ch  # asking twice changes nothing


@given(st.lists(st.integers(1, 3 * LEAF_SIZE), min_size=1, max_size=6))
def test_update_matches_hash_bytes_for_any_cut(cuts: list[int]) -> None:
    data = pattern(min(sum(cuts), 3 * LEAF_SIZE + 7))
    h = P.Hasher()
    at = 0
    for n in cuts:
        h.update(data[at : at + n])
        at += n
    assert h.content_hash() == P.hash_bytes(data)


def test_update_refuses_what_cannot_be_one_file() -> None:
    h = P.Hasher()
    h.update(b"abc")
    with pytest.raises(ProtocolError):  # a whole leaf in the middle of one
        h.hash_leaf(b"x" * LEAF_SIZE)
    h.content_hash()  # the short leaf ends the file
    with pytest.raises(ProtocolError):
        h.update(b"more")


def test_protocol_is_the_documented_blake3_construction() -> None:
    """Recompute one vector from DESIGN.md's definition with raw blake3."""
    data, file_id, _ = VECTORS["leaf_plus_one"]
    leaves = b""
    for i in range(2):
        h = blake3(derive_key_context="dmedia-tui 2026 leaf")
        h.update(struct.pack("<Q", i) + data[i * LEAF_SIZE : (i + 1) * LEAF_SIZE])
        leaves += h.digest(length=30)
    root = blake3(derive_key_context="dmedia-tui 2026 root")
    root.update(struct.pack("<Q", len(data)) + leaves)
    assert P.b32encode(root.digest(length=30)) == file_id


def test_leaf_index_and_size_are_bound() -> None:
    """The same bytes at another index, or the same leaves with another size, differ."""
    assert P.hash_leaf(0, b"x") != P.hash_leaf(1, b"x")
    lh = P.hash_leaf(0, b"x")
    assert P.hash_root(1, lh) != P.hash_root(2, lh)


def test_leaf_count() -> None:
    assert [P.leaf_count(n) for n in (1, LEAF_SIZE, LEAF_SIZE + 1, 3 * LEAF_SIZE)] == [1, 1, 2, 3]


def test_empty_has_no_id() -> None:
    with pytest.raises(ProtocolError):
        P.hash_bytes(b"")
    with pytest.raises(ProtocolError):
        P.hash_leaf(0, b"")
    with pytest.raises(ProtocolError):
        P.hash_root(0, b"")


# --- check_root_hash: one distinct error per failure --------------------------------


def test_check_root_hash_errors_are_distinct() -> None:
    data, file_id, _ = VECTORS["leaf_plus_one"]
    lh = P.hash_bytes(data).leaf_hashes
    size = len(data)
    with pytest.raises(LeafHashesLengthError):
        P.check_root_hash(file_id, size, lh[:-1])
    with pytest.raises(LeafCountError):
        P.check_root_hash(file_id, size, lh[:DIGEST_BYTES])  # 1 leaf for 2 leaves' size
    with pytest.raises(LeafCountError):
        P.check_root_hash(file_id, 0, lh)
    with pytest.raises(RootHashError):
        P.check_root_hash(file_id, size + 1, lh)  # same leaf count, other size
    flipped = bytes([lh[0] ^ 1]) + lh[1:]
    with pytest.raises(RootHashError):
        P.check_root_hash(file_id, size, flipped)
    with pytest.raises(InvalidID):
        P.check_root_hash(file_id.lower(), size, lh)
    # They are all ProtocolErrors, but none is another's subclass.
    kinds = [InvalidID, LeafHashesLengthError, LeafCountError, RootHashError]
    for a in kinds:
        assert issubclass(a, ProtocolError)
        assert not any(issubclass(a, b) for b in kinds if b is not a)


# Characters int(x, 32) would read, or skip, if they were let through: the number
# compare must see each as a mismatch, never as a digit or as nothing.
_NOT_IN_ALPHABET = list("01Zzav_+-.\t\n\x00é٣３\ud800\U0001f600")


def test_root_hash_matches_only_the_id_itself() -> None:
    data, file_id, _ = VECTORS["leaf_plus_one"]
    lh = P.hash_bytes(data).leaf_hashes
    size = len(data)
    assert P.root_hash_matches(file_id, size, lh)
    assert not P.root_hash_matches(file_id, size + 1, lh)
    assert not P.root_hash_matches(file_id, size, bytes([lh[0] ^ 1]) + lh[1:])
    for bad in (file_id.lower(), file_id[:-1], file_id + "3", None, 7, file_id.encode(), ""):
        assert not P.root_hash_matches(bad, size, lh)
    # Every one-character change, in or out of the alphabet, at the ends and inside.
    for i in (0, 1, 23, 46, 47):
        for ch in (*P.ALPHABET, *_NOT_IN_ALPHABET):
            other = file_id[:i] + ch + file_id[i + 1 :]
            assert P.root_hash_matches(other, size, lh) == (other == file_id), (i, ch)
    # Padding int() would strip: spaces or a sign in place of the first/last character.
    for other in (" " + file_id[1:], file_id[:-1] + " ", "+" + file_id[1:], "_" + file_id[1:]):
        assert not P.root_hash_matches(other, size, lh)


@given(st.text(alphabet=P.ALPHABET + "0Z_ +az\u00e9", min_size=48, max_size=48))
def test_root_hash_matches_agrees_with_hash_root(file_id: str) -> None:
    lh = P.hash_leaf(0, b"x")
    assert P.root_hash_matches(file_id, 1, lh) == (P.hash_root(1, lh) == file_id)
    real = P.hash_root(1, lh)
    assert P.root_hash_matches(real, 1, lh)


@given(st.text(alphabet=P.ALPHABET + "0Z_ +az\u00e9", min_size=0, max_size=50))
def test_content_hash_of_is_the_root_hash_whatever_is_expected(expect: str) -> None:
    lh = P.hash_leaf(0, b"x")
    real = P.hash_root(1, lh)
    for e in (expect, real, None):
        ch = P.content_hash_of(1, lh, e)
        assert (ch.id, ch.file_size, ch.leaf_hashes) == (real, 1, lh)


def test_leaf_hashes_base64_round_trip() -> None:
    lh = P.hash_bytes(VECTORS["three_leaves"][0]).leaf_hashes
    assert P.decode_leaf_hashes(P.encode_leaf_hashes(lh)) == lh
    with pytest.raises(ProtocolError):
        P.decode_leaf_hashes("not base64!")


# --- sortable base32 ----------------------------------------------------------------

five_multiple = st.integers(min_value=0, max_value=12).flatmap(
    lambda k: st.binary(min_size=5 * k, max_size=5 * k)
)


@given(five_multiple)
def test_b32_round_trip(data: bytes) -> None:
    text = P.b32encode(data)
    assert len(text) == len(data) * 8 // 5
    assert set(text) <= set(P.ALPHABET)
    assert P.b32decode(text) == data


@given(st.lists(st.binary(min_size=15, max_size=15), min_size=2, max_size=20))
def test_b32_preserves_byte_order(values: list[bytes]) -> None:
    assert sorted(P.b32encode(v) for v in values) == [P.b32encode(v) for v in sorted(values)]


def test_alphabet_is_sorted_and_unambiguous() -> None:
    assert list(P.ALPHABET) == sorted(P.ALPHABET)
    assert len(set(P.ALPHABET)) == 32
    assert not set("012Z") & set(P.ALPHABET)


def test_b32_encode_needs_multiple_of_five() -> None:
    with pytest.raises(ProtocolError):
        P.b32encode(b"1234")


@pytest.mark.parametrize("bad", ["3456789", "3456789a", "0" * 8, "z" * 8, None, b"34567893"])
def test_b32_decode_rejects(bad: object) -> None:
    with pytest.raises(InvalidID):
        P.b32decode(bad)  # type: ignore[arg-type]


# --- ID validation ------------------------------------------------------------------

GOOD_FILE_ID = VECTORS["one_byte"][1]


@pytest.mark.parametrize(
    "bad",
    [
        GOOD_FILE_ID[:-1],  # too short
        GOOD_FILE_ID + "3",  # too long
        GOOD_FILE_ID.lower(),  # lower case
        "0" + GOOD_FILE_ID[1:],  # '0' not in the alphabet
        "1" + GOOD_FILE_ID[1:],  # '1'
        "Z" + GOOD_FILE_ID[1:],  # 'Z'
        "../../etc/passwd".ljust(48, "A"),  # path traversal
        "",
        None,
        48,
        GOOD_FILE_ID.encode(),  # bytes, not str
    ],
)
def test_malformed_file_ids_rejected(bad: object) -> None:
    assert not P.is_file_id(bad)
    with pytest.raises(InvalidID):
        P.check_file_id(bad)


def test_valid_ids_accepted() -> None:
    assert P.check_file_id(GOOD_FILE_ID) == GOOD_FILE_ID
    sid = P.random_id()
    assert P.check_store_id(sid) == sid
    with pytest.raises(InvalidID):
        P.check_store_id(GOOD_FILE_ID)
    with pytest.raises(InvalidID):
        P.check_file_id(sid)


def test_random_id() -> None:
    ids = {P.random_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 24 and P.is_store_id(i) for i in ids)


@given(st.integers(min_value=0, max_value=2**40 - 1), st.integers(min_value=0, max_value=2**40 - 1))
def test_log_ids_sort_by_time(t1: int, t2: int) -> None:
    a, b = P.log_id(t1), P.log_id(t2)
    assert len(a) == len(b) == 24
    assert P.log_id_time(a) == t1
    assert P.log_id_time(b) == t2
    if t1 < t2:
        assert a < b


def test_log_id_time_truncates_fractions_and_rejects_junk() -> None:
    assert P.log_id_time(P.log_id(1_795_608_000.9)) == 1_795_608_000
    with pytest.raises(InvalidID):
        P.log_id_time("not a log id")


@pytest.mark.skipif(not P._mmap_ok, reason="needs mmap with MADV_POPULATE_READ (Linux >= 5.14)")
def test_truncated_under_the_mapping_is_an_oserror_not_sigbus(tmp_path: Path) -> None:
    """A file that shrinks while mapped would SIGBUS a plain mmap reader and kill the
    process; the populate-then-hash reader raises OSError instead (-> "unreadable")."""
    path = tmp_path / "shrinks"
    path.write_bytes(pattern(3 * LEAF_SIZE))
    with open(path, "rb", buffering=0) as f:
        mm = P._map_file(f.fileno(), 3 * LEAF_SIZE)
        assert mm is not None
        try:
            with open(path, "r+b") as g:
                g.truncate(LEAF_SIZE // 2)
            with pytest.raises(OSError):
                P._hash_mapped(mm, 3 * LEAF_SIZE, None)
        finally:
            mm.close()


def test_read_full_fills_a_leaf_despite_short_reads() -> None:
    """FUSE and network filesystems may return short reads before EOF."""

    class Dribble:
        def __init__(self, data: bytes) -> None:
            self.data, self.pos = data, 0

        def readinto(self, view: memoryview) -> int:
            n = min(len(view), 1000, len(self.data) - self.pos)
            view[:n] = self.data[self.pos : self.pos + n]
            self.pos += n
            return n

    src = Dribble(pattern(5000))
    buf = memoryview(bytearray(4096))
    assert P.read_full(src, buf) == 4096 and bytes(buf) == pattern(4096)
    assert P.read_full(src, buf) == 904 and bytes(buf[:904]) == pattern(5000)[4096:]
    assert P.read_full(src, buf) == 0
