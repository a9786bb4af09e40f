"""Benchmark: pulling copies from a peer vs `rsync -e ssh`, and a soak of the peer server.

Two machines on one host: "A" serves a camera-like corpus from its store in a process of
its own (the real PeerServer, TLS 1.3, client certificates), "B" pulls every file into
its store as the engine's pull round does: PULLS_AT_ONCE threads receive files (each leaf
verified before it is written), a committer thread commits them in groups (fsync,
rename, fsync the folders) (`--at-once 1,2` compares). The same files are also copied
locally with copy_file_range + fsync: the most this disk takes durably, whatever the
transport.
The same bytes then travel with rsync over ssh (git-annex's transport) from a loopback
sshd started here on a high port with a temporary config and keys. Both read from a warm
page cache. Goal: ratio (rsync time / pull time) >= 1.0.

The soak then sends the server thousands of requests (ranges, HEAD, 404, 400, transfers
aborted after their first bytes, handshakes without a certificate or with an unknown one,
garbage and bare TCP connections) and prints the growth of its RSS. Goal: < 10 MB.

Run: `uv run python bench/peer.py` (2 GB; `--mb 500` for a quicker run). rsync needs
`apt-get install openssh-server rsync`; without them only the pull and the soak run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util as U  # noqa: E402

from dmedia_tui import protocol  # noqa: E402
from dmedia_tui.filestore import FileStore  # noqa: E402
from dmedia_tui.peer import identity as ident  # noqa: E402
from dmedia_tui.peer.client import (  # noqa: E402
    PeerConnection,
    PeerError,
    PullResult,
    commit_received,
    receive,
)
from dmedia_tui.peer.service import (  # noqa: E402
    PULLS_AT_ONCE,
    GroupCommit,
    Pulled,
    PullSummary,
)

SSH_PORT = 22899


# --- the serving machine, in a process of its own ----------------------------------


def serve(spec_path: str) -> None:
    from dmedia_tui.peer.server import PeerServer

    spec = json.loads(Path(spec_path).read_text())
    stores = {sid: FileStore(path, sid) for sid, path in spec["stores"].items()}
    srv = PeerServer(
        ident.load_or_create(spec["identity"]),
        machine_id=spec["machine_id"],
        trusted=lambda: spec["trusted"],
        stores=lambda: stores,
        file_doc=spec["docs"].get,
        listen="127.0.0.1:0",
    )
    _, port = srv.start()
    print(f"PORT {port}", flush=True)
    sys.stdin.read()
    srv.stop()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- rsync over ssh ------------------------------------------------------------------


class Sshd:
    """A throwaway sshd on 127.0.0.1 with its own host key and one authorized user key."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "ssh"
        self.dir.mkdir()
        for name in ("host", "user"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / name)],
                check=True,
            )
        shutil.copy(self.dir / "user.pub", self.dir / "authorized_keys")
        (self.dir / "sshd_config").write_text(
            f"Port {SSH_PORT}\nListenAddress 127.0.0.1\nHostKey {self.dir / 'host'}\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\nPidFile {self.dir / 'pid'}\n"
            "PasswordAuthentication no\nPermitRootLogin prohibit-password\n"
            "StrictModes no\nUsePAM no\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-f", str(self.dir / "sshd_config"), "-E", "/dev/null"]
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", SSH_PORT), 1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("sshd did not start")

    @property
    def ssh(self) -> str:
        return (
            f"ssh -p {SSH_PORT} -i {self.dir / 'user'} -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def rsync_has_fsync() -> bool:
    out = subprocess.run(["rsync", "--help"], capture_output=True, text=True).stdout
    return "--fsync" in out


# --- the soak ------------------------------------------------------------------------


def soak(
    n: int,
    addr: tuple[str, int],
    a: ident.Identity,
    b: ident.Identity,
    mallory: ident.Identity,
    ids: list[str],
    big: str,
) -> dict[str, int]:
    """n rounds of mixed traffic; returns counts by kind."""
    address = f"{addr[0]}:{addr[1]}"
    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.check_hostname = False
    no_cert.verify_mode = ssl.CERT_NONE
    counts: dict[str, int] = {}

    def count(kind: str) -> None:
        counts[kind] = counts.get(kind, 0) + 1

    def raw_tls(ctx: ssl.SSLContext) -> None:
        try:
            with (
                socket.create_connection(addr, 5) as s,
                ctx.wrap_socket(s, server_hostname="x") as t,
            ):
                t.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n")
                t.recv(100)
        except (OSError, ssl.SSLError):
            pass

    for i in range(n):
        kind = i % 8
        fid = ids[i % len(ids)]
        try:
            if kind in (0, 1):
                with PeerConnection(b, address, a.fingerprint) as c:
                    start = (i * 7919) % (1 << 20)
                    r = c.request(
                        "GET", f"/files/{fid}", {"Range": f"bytes={start}-{start + 65535}"}
                    )
                    r.read()
                count("range")
            elif kind == 2:
                with PeerConnection(b, address, a.fingerprint) as c:
                    c.request("HEAD", f"/files/{fid}").read()
                    c.request("GET", f"/files/{protocol.hash_bytes(str(i).encode()).id}").read()
                    c.request("GET", "/files/..%2Fetc%2Fpasswd").read()
                count("head+404+400")
            elif kind == 3:
                conn = PeerConnection(b, address, a.fingerprint)
                r = conn.request("GET", f"/files/{big}")
                r.read(100_000)
                conn.close()  # aborted mid-transfer
                count("aborted")
            elif kind == 4:
                raw_tls(no_cert)
                count("handshake without cert")
            elif kind == 5:
                raw_tls(mallory.client_context())
                count("handshake unknown cert")
            elif kind == 6:
                with socket.create_connection(addr, 5) as s:
                    s.sendall(os.urandom(512))
                    try:
                        s.recv(100)
                    except OSError:
                        pass
                count("garbage")
            else:
                socket.create_connection(addr, 5).close()
                count("bare tcp")
        except (OSError, PeerError):
            count("client-side error")
    return counts


# --- main ----------------------------------------------------------------------------


def main() -> int:
    p = U.parser(__doc__.splitlines()[0])
    p.set_defaults(mb=2000, rounds=1)
    p.add_argument("--soak", type=int, default=4000, help="soak requests (default 4000)")
    p.add_argument("--no-rsync", action="store_true")
    p.add_argument(
        "--at-once",
        default=str(PULLS_AT_ONCE),
        help=f"pulls side by side, comma-separated to compare (default {PULLS_AT_ONCE}, "
        "the copy worker's); the ratio is the first's",
    )
    p.add_argument("--serve", help=argparse_hidden())
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    work = U.workdir(args.dir)
    sshd: Sshd | None = None
    server: subprocess.Popen[str] | None = None
    try:
        a = ident.load_or_create(work / "a" / "peer")
        b = ident.load_or_create(work / "b" / "peer")
        mallory = ident.load_or_create(work / "mallory" / "peer")
        (work / "store-a").mkdir()
        src = FileStore.create(work / "store-a")
        files = U.make_corpus(work / "card", args.mb)
        docs = {}
        for path in files:
            r = src.import_file(path)
            ch = r.content_hash
            docs[ch.id] = {
                "_id": ch.id,
                "bytes": ch.file_size,
                "leaf_hashes": protocol.encode_leaf_hashes(ch.leaf_hashes),
                "stored": {src.id: {"copies": 1, "mtime": r.mtime}},
            }
        U.rmtree(work / "card")
        total = sum(d["bytes"] for d in docs.values())
        print(f"store A: {len(docs)} files, {total / U.MB:.0f} MB in {src.path}")
        print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        spec = {
            "identity": str(a.directory),
            "machine_id": protocol.random_id(),
            "trusted": {b.fingerprint: b.cert_pem},
            "stores": {src.id: str(src.path)},
            "docs": docs,
        }
        (work / "spec.json").write_text(json.dumps(spec))
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(work / "spec.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        address = f"127.0.0.1:{port}"
        copies = [src.file_path(i) for i in docs]

        def fresh_dst() -> FileStore:
            U.rmtree(work / "store-b")
            (work / "store-b").mkdir()
            return FileStore.create(work / "store-b")

        dst_box: list[FileStore] = []

        def pull_all(at_once: int) -> None:
            """As the engine's pull round: `at_once` pull threads receive (every leaf
            verified), a committer thread commits what they hand over in groups."""

            def commit(group: list[Pulled]) -> PullSummary:
                for r in commit_received([p.received for p in group]):
                    assert isinstance(r, PullResult) and r.new, r
                return PullSummary(copies=len(group))

            committer = GroupCommit(commit)

            def one(doc: dict) -> None:
                got = receive(b, address, a.fingerprint, doc, dst_box[0])
                assert got.fetched == doc["bytes"]
                committer.put(Pulled(doc, dst_box[0], None, got))  # type: ignore[arg-type]

            with ThreadPoolExecutor(at_once) as ex:
                list(ex.map(one, docs.values()))
            summary, error = committer.close()
            assert error is None and summary.copies == len(docs), error

        t_pulls = {}
        for at_once in (int(n) for n in args.at_once.split(",")):
            t_pulls[at_once] = U.best_of(
                args.rounds,
                lambda n=at_once: pull_all(n),
                lambda: (dst_box.clear(), dst_box.append(fresh_dst()), U.warm(copies)),
            )
            rate = U.rate(total, t_pulls[at_once])
            print(f"peer pull, {at_once} at once (verify + fsync): {rate}")
        t_pull = next(iter(t_pulls.values()))
        first_at_once = next(iter(t_pulls))

        # What this disk can take durably: the same files copied locally (in-kernel
        # copy_file_range from the warm page cache, no network, no hashing), each
        # fsynced and renamed, as many at once as the first pull setting. No durable
        # copy, over any transport, can finish before this.
        ceiling = work / "ceiling"
        t_disk = U.best_of(
            args.rounds,
            lambda: durable_local_copy(copies, ceiling, first_at_once),
            lambda: (U.rmtree(ceiling), ceiling.mkdir(), U.warm(copies)),
        )
        U.rmtree(ceiling)
        print(f"local copy + fsync (the disk's ceiling): {U.rate(total, t_disk)}")
        print(f"pull / disk ceiling: {t_disk / t_pull:.2f} of the speed this disk takes durably")

        ratio = None
        if args.no_rsync or not (shutil.which("rsync") and Path("/usr/sbin/sshd").exists()):
            print("rsync -e ssh: skipped (--no-rsync, or: apt-get install openssh-server rsync)")
        else:
            sshd = Sshd(work)
            out = work / "rsync-dst"

            def rsync(*extra: str) -> None:
                subprocess.run(
                    [
                        "rsync",
                        "-r",
                        *extra,
                        "-e",
                        sshd.ssh,
                        f"127.0.0.1:{src.files_dir}/",
                        str(out),
                    ],
                    check=True,
                )

            def before() -> None:
                U.rmtree(out)
                out.mkdir()
                U.warm(copies)

            t_rsync = U.best_of(args.rounds, rsync, before)
            print(f"rsync -e ssh:               {U.rate(total, t_rsync)}")
            if rsync_has_fsync():
                t_fs = U.best_of(args.rounds, lambda: rsync("--fsync"), before)
                print(f"rsync -e ssh --fsync:       {U.rate(total, t_fs)}")
            for at_once, t in t_pulls.items():
                print(f"ratio (rsync time / pull time), {at_once} at once: {t_rsync / t:.2f}")
            ratio = t_rsync / t_pull
            print(f"ratio (rsync time / pull time): {ratio:.2f}  {U.verdict(ratio >= 1.0)}")
            print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            U.rmtree(out)
        U.rmtree(work / "store-b")

        if args.soak:
            big = max(docs, key=lambda i: docs[i]["bytes"])
            ids = list(docs)
            # Warm-up: the first transfers fill the spare-buffer pools (up to 4 leaves of
            # 8 MiB, and the chunk rings); 200 rounds left ~25 MB of that to the soak.
            soak(1000, ("127.0.0.1", port), a, b, mallory, ids, big)
            time.sleep(1)
            before_kb = rss_kb(server.pid)
            t0 = time.perf_counter()
            counts = soak(args.soak, ("127.0.0.1", port), a, b, mallory, ids, big)
            dt = time.perf_counter() - t0
            time.sleep(2)  # let the server finish what was cut off
            after_kb = rss_kb(server.pid)
            growth = (after_kb - before_kb) / 1024
            print(f"soak: {args.soak} rounds in {dt:.1f} s: {counts}")
            print(
                f"server RSS {before_kb / 1024:.1f} -> {after_kb / 1024:.1f} MB: "
                f"growth {growth:+.1f} MB  {U.verdict(growth < 10)}"
            )
        return 0
    finally:
        if server is not None:
            if server.stdin is not None:
                server.stdin.close()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.send_signal(signal.SIGKILL)
                server.wait()
        if sshd is not None:
            sshd.stop()
        if not args.keep:
            U.rmtree(work)


def durable_local_copy(files: list[Path], out: Path, at_once: int) -> None:
    """Copy files into `out` like a perfect local durable copy: copy_file_range, fsync,
    rename, then one fsync of the folder."""

    def one(src: Path) -> None:
        tmp = out / (src.name + ".tmp")
        with open(src, "rb") as f, open(tmp, "wb") as g:
            left = os.fstat(f.fileno()).st_size
            while left > 0:
                n = os.copy_file_range(f.fileno(), g.fileno(), min(left, 64 << 20))
                if n <= 0:
                    raise OSError(f"copy_file_range returned {n}")
                left -= n
            os.fsync(g.fileno())
        os.rename(tmp, out / src.name)

    with ThreadPoolExecutor(at_once) as ex:
        list(ex.map(one, files))
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
