"""The engine's peer side: identity, what the machine doc publishes, the server, pulls.

One `Peers` per engine. The engine calls:
- `publish()` on every heartbeat: `{fingerprint, addresses, cert}` for this machine's doc
  (the certificate itself is published because Python's ssl can only accept a client
  certificate that is one of its trust anchors; the fingerprint is what is trusted);
- `sync()` after it: starts the server when `[peer] enabled` says so (by default once
  the library knows another machine: a single-machine user opens no port), stops it
  when it no longer should run;
- `pull_round(connected)` in the copy worker: user files below the target with no good
  copy here, a local store that may take them, and an online peer that has them
  connected, are pulled from the peer with the fewest recent failures, PULLS_AT_ONCE
  at a time (one transfer's handshake and first leaf overlap the other's bytes; one
  that fails does not touch the other). A pull thread hands each received file (every
  leaf verified and written) to a committer thread and starts its next transfer at
  once: the committer fsyncs, renames and records, in one group, every file handed
  over while it committed the previous group (group commit). So no transfer waits for
  the disk to catch up, and a group costs one flush, one transaction and one event
  write instead of two fsyncs and two transactions per file;
- `stop()` when the engine stops.

Every transfer is logged to log-1: `dmedia/transfer/done|failed|corrupt` with the peer,
file, destination store, bytes and seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dmedia_tui import schema
from dmedia_tui.durability import durability, rank
from dmedia_tui.filestore import FileStore, error_text
from dmedia_tui.metastore import MetaStore
from dmedia_tui.peer import client
from dmedia_tui.peer.identity import Identity, PeerIdentityError, load_or_create
from dmedia_tui.views import MachineView

if TYPE_CHECKING:
    # Imported when a server starts: aiohttp costs 0.25-0.35 s of start-up here, and a
    # single-machine library (the default) never starts one, even in `daemon --once`.
    from dmedia_tui.peer.server import PeerServer

log = logging.getLogger("dmedia_tui.peer")

Doc = dict[str, Any]
FAILURE_MEMORY = 3600.0  # a peer's failures count against it for an hour
TRUST_REFRESH = 5.0  # the server re-reads the machine docs this often (a new machine waits)
# Transfers run side by side: on 2 cores one pull alone left a third of the CPU idle
# (waiting on its handshake, first leaf, fsync and rename); bench/peer.py measures it.
PULLS_AT_ONCE = 2
# Received files waiting for the committer, at most: a pull hands over its file and
# waits when this many are waiting (each holds an open, locked partial file).
COMMIT_QUEUE = 32


@dataclass(frozen=True)
class PeerMachine:
    """A machine of the library as `peer list` shows it."""

    machine_id: str
    hostname: str
    fingerprint: str | None
    addresses: tuple[str, ...]
    stores: tuple[str, ...]
    online: bool
    this: bool
    cert: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "_id": self.machine_id,
            "hostname": self.hostname,
            "fingerprint": self.fingerprint,
            "addresses": list(self.addresses),
            "online": self.online,
            "this": self.this,
        }


def machine_peer(doc: Any) -> tuple[str | None, tuple[str, ...], str | None]:
    """(fingerprint, addresses, cert) from a machine doc's `peer`, junk ignored."""
    peer = doc.get("peer") if isinstance(doc, dict) else None
    if not isinstance(peer, dict):
        return None, (), None
    fp = peer.get("fingerprint")
    addrs = peer.get("addresses")
    cert = peer.get("cert")
    return (
        fp if isinstance(fp, str) else None,
        tuple(a for a in addrs if isinstance(a, str)) if isinstance(addrs, list) else (),
        cert if isinstance(cert, str) else None,
    )


def list_machines(ms: MetaStore) -> list[PeerMachine]:
    """Every machine doc of the library, this one marked; online = fresh heartbeat."""
    now = ms.now()
    fresh = ms.thresholds.heartbeat_fresh
    out = []
    for doc in ms.lib.machines():
        m = MachineView.of(doc)
        if m is None:
            continue
        fp, addrs, cert = machine_peer(doc)
        online = m.atime is not None and m.atime >= now - fresh
        out.append(
            PeerMachine(
                m.id,
                m.hostname,
                fp,
                addrs,
                m.stores,
                online or m.id == ms.machine_id,
                m.id == ms.machine_id,
                cert,
            )
        )
    return out


Started = Callable[[Doc, "PeerMachine", FileStore], client.Progress]  # -> per-leaf progress


@dataclass
class PullSummary:
    copies: int = 0
    failed: int = 0
    corrupt: int = 0
    refused: set[str] = field(default_factory=set)  # peers whose handshake refused us

    def add(self, other: PullSummary) -> None:
        self.copies += other.copies
        self.failed += other.failed
        self.corrupt += other.corrupt
        self.refused |= other.refused


class Peers:
    """Identity, server and pulls of one engine (see the module docstring)."""

    def __init__(
        self,
        ms: MetaStore,
        connected: Callable[[], dict[str, FileStore]],
        on_corrupt: Callable[[str, str], None],
        *,
        discovery: bool | None = None,
    ) -> None:
        self.ms = ms
        self.settings = ms.config.peer
        self._connected = connected
        self._on_corrupt = on_corrupt
        self._discovery_wanted = self.settings.discovery if discovery is None else discovery
        self._identity: Identity | None = None
        self.server: PeerServer | None = None
        self.discovery: Any = None
        self._failures: dict[str, list[float]] = {}
        # Peers unreachable since their last logged `dmedia/peer/unreachable`; loaded from
        # log-1 on the first round, so a restart neither repeats nor forgets an outage.
        self._outage: set[str] | None = None
        self._lock = threading.Lock()  # _failures and _outage: pulls run in threads
        self.trust_refresh = TRUST_REFRESH
        self.pulls_at_once = PULLS_AT_ONCE

    # --- identity and publication ------------------------------------------------

    @property
    def identity(self) -> Identity:
        if self._identity is None:
            self._identity = load_or_create(self.ms.config.config_dir / "peer")
        return self._identity

    def publish(self) -> dict[str, Any] | None:
        """This machine's `peer` for its machine doc; None if it has no usable identity."""
        try:
            me = self.identity
        except PeerIdentityError as e:
            log.error("%s", e)
            return None
        return {"fingerprint": me.fingerprint, "addresses": self.addresses(), "cert": me.cert_pem}

    def addresses(self) -> list[str]:
        """Where the server can be reached: the bound address, or every LAN address of
        this machine when it listens on all of them. Empty when it does not listen."""
        if self.server is None or self.server.address is None:
            return []
        from dmedia_tui.peer.server import format_address  # loaded: a server runs

        host, port = self.server.address
        if host in ("0.0.0.0", "::"):
            from dmedia_tui.peer.discovery import local_ipv4

            hosts = local_ipv4() or ["127.0.0.1"]
            return [format_address(h, port) for h in hosts]
        return [format_address(host, port)]

    # --- the server ----------------------------------------------------------------

    def should_listen(self) -> bool:
        mode = self.settings.enabled
        if mode == "off":
            return False
        if mode == "on":
            return True
        return any(d["_id"] != self.ms.machine_id for d in self.ms.lib.machines())

    def sync(self) -> bool:
        """Start or stop the server (and discovery) per the settings; True when the
        published addresses changed (the caller then heartbeats again)."""
        want = self.should_listen()
        if want and self.server is None:
            try:
                me = self.identity
            except PeerIdentityError as e:
                log.error("peer server not started: %s", e)
                return False
            from dmedia_tui.peer.server import PeerServer

            srv = PeerServer(
                me,
                machine_id=self.ms.machine_id,
                trusted=self.trusted,
                stores=self._connected,
                file_doc=self.ms.lib.docs.get_or_none,
                on_corrupt=self._on_corrupt,
                listen=self.settings.listen,
                trust_refresh=self.trust_refresh,
            )
            try:
                srv.start()
            except OSError as e:
                log.error("peer server cannot listen on %s: %s", self.settings.listen, e)
                return False
            self.server = srv
            self._start_discovery()
            return True
        if not want and self.server is not None:
            self.stop()
            return True
        return False

    def _start_discovery(self) -> None:
        if not self._discovery_wanted or self.server is None or self.server.address is None:
            return
        try:
            from dmedia_tui.peer.discovery import Discovery

            d = Discovery(self.ms.machine_id, self.identity.fingerprint, self.server.address[1])
            d.start()
            self.discovery = d
        except Exception as e:  # no multicast here: machine docs still carry addresses
            log.info("mDNS discovery unavailable: %s", e)

    def trusted(self) -> dict[str, str]:
        """{fingerprint: certificate} of every machine of the library."""
        out = {}
        for doc in self.ms.lib.machines():
            fp, _, cert = machine_peer(doc)
            if fp and cert:
                out[fp] = cert
        return out

    def stop(self) -> None:
        if self.discovery is not None:
            self.discovery.stop()
            self.discovery = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    # --- pulls ---------------------------------------------------------------------

    def _failure_count(self, machine_id: str, now: float) -> int:
        with self._lock:
            recent = [t for t in self._failures.get(machine_id, []) if t > now - FAILURE_MEMORY]
            self._failures[machine_id] = recent
            return len(recent)

    def _failed(self, machine_id: str) -> None:
        with self._lock:
            self._failures.setdefault(machine_id, []).append(time.monotonic())

    def online_peers(self) -> list[PeerMachine]:
        """Other machines with a fresh heartbeat and a usable peer identity."""
        return [
            m
            for m in list_machines(self.ms)
            if m.online and not m.this and m.fingerprint and (m.addresses or self.discovery)
        ]

    def _addresses(self, m: PeerMachine) -> list[str]:
        addrs = list(m.addresses)
        if self.discovery is not None:
            found = self.discovery.found().get(m.machine_id)
            if found is not None and found.fingerprint == m.fingerprint:
                addrs += [a for a in found.addresses if a not in addrs]
        return addrs

    def pull_round(
        self,
        connected: dict[str, FileStore],
        limit: int = 200,
        stop: Callable[[], bool] = lambda: False,
        started: Started | None = None,
    ) -> PullSummary:
        """Pull up to `limit` fragile user files that only peers can provide,
        `pulls_at_once` at a time.

        An exception out of one pull (the `started` progress aborting it, a database
        error while recording) stops new pulls; the others running finish and are
        recorded, then the first such exception is raised.
        """
        s = PullSummary()
        if not connected:
            return s
        peers = self.online_peers()
        if not peers:
            return s
        with self._lock:
            if self._outage is None:
                self._outage = set(self.ms.peer_outages())
        unreachable: set[str] = set()
        at_once = max(1, self.pulls_at_once)
        running: set[Future[PullSummary]] = set()
        error: BaseException | None = None

        def collect(done: set[Future[PullSummary]]) -> None:
            nonlocal error
            for f in done:
                try:
                    s.add(f.result())
                except BaseException as e:
                    error = error or e

        committer = GroupCommit(self._commit_group)
        with ThreadPoolExecutor(at_once, thread_name_prefix="dmedia-pull") as ex:
            try:
                for doc, dst, holders in self._wanted(connected, peers, unreachable, limit, stop):
                    while len(running) >= at_once:
                        done, running = wait(running, return_when=FIRST_COMPLETED)
                        collect(done)
                    if error is not None:
                        break
                    running.add(
                        ex.submit(
                            self._pull_one, doc, dst, holders, unreachable, started, committer
                        )
                    )
            finally:
                done, running = wait(running)
                collect(done)
                committed, failed = committer.close()  # what was received is committed
                s.add(committed)
                error = error or failed
        if error is not None:
            raise error
        return s

    def _wanted(
        self,
        connected: dict[str, FileStore],
        peers: list[PeerMachine],
        unreachable: set[str],
        limit: int,
        stop: Callable[[], bool],
    ) -> Iterator[tuple[Doc, FileStore, list[PeerMachine]]]:
        """(doc, destination, holders) of the files to pull, most fragile first; a peer
        found unreachable meanwhile is no longer offered."""
        tried = 0
        after = None
        while tried < limit and not stop():
            page = self.ms.lib.fragile_files(limit=100, after=after, origin="user")
            if not page:
                break
            for doc in page:
                if tried >= limit or stop():
                    return
                holders = self._holders(doc, connected, peers, unreachable)
                if not holders:
                    continue
                dsts = self.ms.destinations(doc, connected)
                if not dsts:
                    continue
                tried += 1
                yield doc, dsts[0], holders
            after = (rank(page[-1]), page[-1]["_id"])
            if len(page) < 100:
                break

    def _holders(
        self,
        doc: Doc,
        connected: dict[str, FileStore],
        peers: list[PeerMachine],
        unreachable: set[str],
    ) -> list[PeerMachine]:
        """Peers that have a good copy connected, when this file needs one pulled."""
        if durability(doc) >= self.ms.thresholds.target_copies:
            return []
        stored = stored_ if isinstance(stored_ := doc.get("stored"), dict) else {}
        corrupt = corrupt_ if isinstance(corrupt_ := doc.get("corrupt"), dict) else {}
        good = {s for s in stored if s not in corrupt}
        if good & connected.keys():
            return []  # a local copy exists: the local copy worker makes the others
        now = time.monotonic()
        holders = [m for m in peers if m.machine_id not in unreachable and good & set(m.stores)]
        holders.sort(key=lambda m: (self._failure_count(m.machine_id, now), m.machine_id))
        return holders

    def _pull_one(
        self,
        doc: Doc,
        dst: FileStore,
        holders: list[PeerMachine],
        unreachable: set[str],
        started: Started | None,
        committer: GroupCommit,
    ) -> PullSummary:
        """One file from the first holder that has it (runs in a pull thread); what it
        received goes to the committer."""
        s = PullSummary()
        self._pull_from(doc, dst, holders, unreachable, s, started, committer)
        return s

    def _pull_from(
        self,
        doc: Doc,
        dst: FileStore,
        holders: list[PeerMachine],
        unreachable: set[str],
        s: PullSummary,
        started: Started | None,
        committer: GroupCommit,
    ) -> None:
        file_id = doc["_id"]
        for m in holders:
            assert m.fingerprint is not None
            progress = started(doc, m, dst) if started is not None else None
            addresses = self._addresses(m)
            for i, address in enumerate(addresses):
                t0 = time.monotonic()
                try:
                    r = client.receive(self.identity, address, m.fingerprint, doc, dst, progress)
                except client.NotOnPeer:
                    self._reached(m, address)
                    break  # that machine has no good copy connected after all: next peer
                except client.TransferCorrupt as e:
                    self._reached(m, address)
                    s.corrupt += 1
                    self._failed(m.machine_id)
                    self._log(
                        schema.LOG_TRANSFER_CORRUPT, m, file_id, dst, 0, t0, str(e), leaf=e.leaf
                    )
                    return
                except client.PartialBusy:
                    return
                except client.DestinationError as e:
                    s.failed += 1
                    log.warning("pull of %s into %s failed: %s", file_id, dst.id, e)
                    return
                except client.TransferFailed as e:
                    self._failed(m.machine_id)
                    cut_off = isinstance(e, client.PeerUnreachable | client.PeerRefusedUs)
                    if isinstance(e, client.PeerRefusedUs):
                        s.refused.add(m.machine_id)
                    if cut_off and i + 1 < len(addresses):
                        continue  # nothing was sent: try the machine's next address
                    s.failed += 1
                    if not cut_off:
                        self._reached(m, address)
                        self._log(schema.LOG_TRANSFER_FAILED, m, file_id, dst, 0, t0, str(e))
                        break
                    unreachable.add(m.machine_id)  # not again this round
                    if not self._outage_starts(m.machine_id):
                        log.info("%s still unreachable: %s", m.hostname, e)
                    else:  # log-1 gets one event per outage, not one per round
                        self._log(schema.LOG_TRANSFER_FAILED, m, file_id, dst, 0, t0, str(e))
                        self.ms.log_event(
                            schema.LOG_PEER_UNREACHABLE,
                            peer=m.machine_id,
                            hostname=m.hostname,
                            address=", ".join(addresses),
                            reason=str(e)[:200],
                        )
                    break
                else:
                    self._reached(m, address)
                    committer.put(Pulled(doc, dst, m, r))
                    return

    def _outage_starts(self, machine_id: str) -> bool:
        """Mark the peer unreachable: True only for the pull that found it first."""
        with self._lock:
            if self._outage is None:
                self._outage = set()
            if machine_id in self._outage:
                return False
            self._outage.add(machine_id)
            return True

    def _reached(self, m: PeerMachine, address: str) -> None:
        """The peer answered: an outage it was in ends (logged once)."""
        with self._lock:
            ended = self._outage is not None and m.machine_id in self._outage
            if ended:
                assert self._outage is not None
                self._outage.discard(m.machine_id)
        if ended:
            self.ms.log_event(
                schema.LOG_PEER_REACHABLE,
                logging.INFO,
                peer=m.machine_id,
                hostname=m.hostname,
                address=address,
            )

    def _commit_group(self, group: list[Pulled]) -> PullSummary:
        """Commit a group of received files together, then record the copies that came
        through in one transaction and their `transfer/done` events in one write (runs in
        the committer thread). A copy is recorded only once it is durable in files/."""
        s = PullSummary()
        results = client.commit_received([p.received for p in group])
        done: list[tuple[Pulled, client.PullResult]] = []
        for p, r in zip(group, results, strict=True):
            if isinstance(r, OSError):
                s.failed += 1
                log.warning(
                    "pull of %s into %s failed: cannot commit: %s",
                    p.doc["_id"],
                    p.dst.id,
                    error_text(r),
                )
            else:
                done.append((p, r))
        if not done:
            return s
        saved = self.ms.record_pulled([(r.file_id, p.dst.id, r.mtime) for p, r in done])
        events = []
        for p, r in done:
            if r.file_id not in saved:
                s.failed += 1  # in files/ unrecorded: the next pull finds it there
                continue
            s.copies += 1
            events.append(
                (
                    schema.LOG_TRANSFER_DONE,
                    logging.INFO,
                    {
                        "peer": p.machine.machine_id,
                        "file_id": r.file_id,
                        "store_id": p.dst.id,
                        "bytes": r.fetched,
                        "resumed": r.resumed,
                        "seconds": round(r.seconds, 3),
                    },
                )
            )
        self.ms.log_events(events)
        return s

    def _log(
        self,
        type: str,
        m: PeerMachine,
        file_id: str,
        dst: FileStore,
        nbytes: int,
        t0: float,
        reason: str,
        **extra: Any,
    ) -> None:
        self.ms.log_event(
            type,
            peer=m.machine_id,
            file_id=file_id,
            store_id=dst.id,
            bytes=nbytes,
            seconds=round(time.monotonic() - t0, 3),
            reason=reason,
            **extra,
        )


@dataclass
class Pulled:
    """A file received from a peer, on its way to the committer."""

    doc: Doc
    dst: FileStore
    machine: PeerMachine
    received: client.Received


class GroupCommit:
    """The committer thread of a pull round: `put` hands it a received file; it commits
    and records everything handed over while it was busy with the previous group, in one
    `commit` call. `close` waits until all is committed; then (summary, first error)."""

    def __init__(self, commit: Callable[[list[Pulled]], PullSummary]) -> None:
        self._commit = commit
        self._queue: list[Pulled] = []
        self._cv = threading.Condition()
        self._closed = False
        self._summary = PullSummary()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dmedia-pull-commit", daemon=True)
        self._thread.start()

    def put(self, item: Pulled) -> None:
        with self._cv:
            while len(self._queue) >= COMMIT_QUEUE:
                self._cv.wait()
            self._queue.append(item)
            self._cv.notify_all()

    def close(self) -> tuple[PullSummary, BaseException | None]:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()
        return self._summary, self._error

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                group, self._queue = self._queue, []
                self._cv.notify_all()
            try:
                self._summary.add(self._commit(group))
            except BaseException as e:  # the database went away: the round raises it
                self._error = self._error or e
                for p in group:
                    p.received.keep()  # whatever was not committed stays for next time
