"""This machine's peer identity: an ECDSA P-256 key pair and a self-signed certificate.

The library is the trust root (DESIGN.md §6): a machine's doc publishes its certificate
and the certificate's fingerprint, and a peer is trusted iff the certificate it shows in
the TLS handshake has the fingerprint of some machine of the library. No CA, no expiry
games: the certificate is valid from 2000 to 9999 (RFC 5280's "no well-defined
expiration"), so a wrong clock never locks two machines out of each other.

ECDSA P-256 rather than Ed25519: both work for TLS 1.3 client and server certificates
with Python's ssl on OpenSSL >= 1.1.1 (checked), but P-256 is the one every TLS stack a
user could put in front of this (LibreSSL, BoringSSL, older OpenSSL) accepts.

The files live in `<config dir>/dmedia-tui/peer/` (`cert.pem`, `key.pem` mode 0600, the
folder 0700). They are created together in a temporary folder that is renamed into place,
so a crash leaves either both or neither. An existing identity that cannot be read is an
error for the user to look at, never silently replaced: a new key would change this
machine's fingerprint and every other machine would stop trusting it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import os
import shutil
import ssl
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dmedia_tui.errors import DmediaError

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
_CN_PREFIX = "dmedia-tui peer"


class PeerIdentityError(DmediaError):
    """The peer identity cannot be read or made (one line, for the user)."""


def fingerprint_der(der: bytes) -> str:
    """SHA-256 of a certificate's DER encoding, lowercase hex (64 characters)."""
    return hashlib.sha256(der).hexdigest()


def fingerprint_pem(pem: str | bytes) -> str:
    """The fingerprint of a PEM certificate; PeerIdentityError if it is not one."""
    try:
        der = ssl.PEM_cert_to_DER_cert(pem.decode() if isinstance(pem, bytes) else pem)
    except (ValueError, UnicodeDecodeError) as e:
        raise PeerIdentityError(f"not a PEM certificate: {e}") from None
    return fingerprint_der(der)


def is_fingerprint(value: object) -> bool:
    """True for 64 lowercase hex characters."""
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


@dataclass(frozen=True)
class Identity:
    """A loaded identity: where its files are, the certificate, its fingerprint."""

    directory: Path
    cert_pem: str
    fingerprint: str

    @property
    def cert_path(self) -> Path:
        return self.directory / CERT_NAME

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_NAME

    def server_context(self, trusted_pems: list[str] | None = None) -> ssl.SSLContext:
        """TLS 1.3 only, client certificate required, trusting exactly `trusted_pems`.

        Python's ssl cannot accept an unknown self-signed client certificate and judge
        it afterwards (no verify callback), so the trusted machines' certificates are
        the context's only trust anchors; more can be added later with add_trusted().
        No session tickets: every connection proves its key afresh.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(self.cert_path, self.key_path)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.num_tickets = 0
        ctx.options |= ssl.OP_NO_TICKET
        if trusted_pems:
            add_trusted(ctx, trusted_pems)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """TLS 1.3 only, presenting this identity.

        The server's certificate is not checked against a CA (it has none): the caller
        pins it by fingerprint right after the handshake, before sending a request
        (client.PeerConnection does). The handshake itself proves the server holds the
        key of the certificate it showed.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx


def add_trusted(ctx: ssl.SSLContext, pems: list[str]) -> None:
    """Add certificates as trust anchors of a (possibly live) context."""
    if pems:
        ctx.load_verify_locations(cadata="\n".join(pems))


def _certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A self-signed certificate whose subject is unique to its key.

    The server trusts every machine's certificate as an anchor; OpenSSL finds the anchor
    of a client certificate by subject name, so certificates that shared one name
    ("dmedia-tui peer") made it pick another machine's and refuse 2 peers in 3 as soon as
    a library had three machines. Each name now carries a digest of its public key, and
    the key identifiers say which key signed it.
    """
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cn = f"{_CN_PREFIX} {hashlib.sha256(spki).hexdigest()[:32]}"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def _new_pair() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(key)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(directory: Path) -> None:
    """Make the key pair in a sibling temp folder and rename it to `directory`.

    If another process won the race, its identity stays and ours is thrown away.
    """
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=parent))
    try:
        os.chmod(tmp, 0o700)
        cert_pem, key_pem = _new_pair()
        _write_new(tmp / KEY_NAME, key_pem, 0o600)
        _write_new(tmp / CERT_NAME, cert_pem, 0o644)
        _fsync_dir(tmp)
        try:
            os.rename(tmp, directory)  # replaces only an empty folder
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        else:
            _fsync_dir(parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load(directory: Path) -> Identity:
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    try:
        cert_bytes = cert_path.read_bytes()
        key_st = os.stat(key_path)
        key_bytes = key_path.read_bytes()
    except FileNotFoundError as e:
        raise PeerIdentityError(
            f"incomplete peer identity in {directory}: {Path(e.filename).name} is missing "
            "(move the folder away to make a new identity; other machines must then "
            "learn the new fingerprint)"
        ) from None
    except OSError as e:
        raise PeerIdentityError(f"cannot read the peer identity in {directory}: {e}") from None
    if stat.S_IMODE(key_st.st_mode) & 0o077:
        raise PeerIdentityError(
            f"{key_path} is readable by others (mode {stat.S_IMODE(key_st.st_mode):o}): "
            f"chmod 600 {key_path}"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_bytes)
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise PeerIdentityError(f"garbled peer identity in {directory}: {e}") from None
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        raise PeerIdentityError(f"garbled peer identity in {directory}: key and cert do not match")
    if _shared_name(cert) and isinstance(key, ec.EllipticCurvePrivateKey):
        cert = _reissue(cert_path, key)
    der = cert.public_bytes(serialization.Encoding.DER)
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return Identity(directory, pem, fingerprint_der(der))


def _shared_name(cert: x509.Certificate) -> bool:
    """A certificate from before names were unique (see _certificate)."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return [a.value for a in cns] == [_CN_PREFIX]


def _reissue(cert_path: Path, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """Replace an old shared-name certificate by one for the same key (atomically): the
    fingerprint changes and this machine's next heartbeat publishes the new one."""
    cert = _certificate(key)
    tmp = cert_path.with_name(f".{cert_path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    _write_new(tmp, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    os.replace(tmp, cert_path)
    _fsync_dir(cert_path.parent)
    return cert


def load_or_create(directory: str | os.PathLike[str]) -> Identity:
    """The identity in `directory` (`<config dir>/peer`), made on first use.

    Raises PeerIdentityError when an identity is there but cannot be used (missing half,
    garbled, key readable by others, unreadable); never replaces it.
    """
    directory = Path(directory)
    if not directory.exists() or _is_empty_dir(directory):
        try:
            _create(directory)
        except OSError as e:
            raise PeerIdentityError(f"cannot create a peer identity in {directory}: {e}") from None
    return _load(directory)


def _is_empty_dir(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return path.is_dir() and not any(path.iterdir())
    return False
