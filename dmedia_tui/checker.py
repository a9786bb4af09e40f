"""The schema and consistency pass: every doc of both databases checked, each new problem
logged to log-1 once, the result logged when it changes.

Separate from the operations (`metastore.py`) because it changes no doc: it only reads
docs and writes log-1 events. `Checker.check()` is the full pass (streaming, bounded
memory); `check_if_due()` is what an engine round runs (the full pass when due, else only
the docs changed since the cursor kept in the data dir's `check-state.json`);
`report_invalid()` lets a worker log a doc it could not use with the same key, so the
pass does not log it again. `metadata_problems()` reads the newest result any machine
logged, for the METADATA_INVALID alert.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import json
import logging
import os
import sys
import tempfile
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
from blake3 import blake3

if TYPE_CHECKING:
    import subprocess

from dmedia_tui import schema
from dmedia_tui.config import Config
from dmedia_tui.db.base import (
    DOCS_DB,
    LOG_DB,
    Database,
    DatabaseError,
    Doc,
    InvalidDoc,
    Library,
    NotFound,
)

log = logging.getLogger("dmedia_tui")


@dataclass(frozen=True)
class CheckReport:
    docs: int
    invalid: int
    inconsistent: int
    logged: int  # new log-1 events written by this pass


class LoggedProblems:
    """The problems log-1 already holds, at 8 bytes each (a million logged problems must
    not cost a million tuples): a sorted array of 64-bit key hashes read from the log,
    plus a set of the keys added since. A hash collision (odds ~1e-8 at a million
    problems) could only hide a duplicate of a problem already logged under that hash."""

    def __init__(self, hashes: Iterable[int] = ()) -> None:
        self._old = array("Q", sorted(hashes))
        self._new: set[int] = set()
        self._lock = threading.Lock()

    @staticmethod
    def key(type: str, doc_id: Any, errors: Iterable[str]) -> int:
        text = f"{type}\0{doc_id}\0{'|'.join(errors)}".encode("utf-8", "surrogatepass")
        return int.from_bytes(blake3(text).digest(length=8), "big")

    def __contains__(self, key: int) -> bool:
        if key in self._new:
            return True
        i = bisect.bisect_left(self._old, key)
        return i < len(self._old) and self._old[i] == key

    def add_new(self, key: int) -> bool:
        """Add the key; False when it was already there (the problem is logged). One
        step under a lock: the check thread and the workers may report the same problem
        at the same moment, and only one of them may log it."""
        with self._lock:
            if key in self:
                return False
            self._new.add(key)
            return True

    def __len__(self) -> int:
        return len(self._old) + len(self._new)


class Checker:
    """The check pass of one library, for one machine: keeps what log-1 already holds
    (read once) so that neither the pass nor a worker logs a problem twice."""

    def __init__(self, lib: Library, config: Config, now: Callable[[], float]) -> None:
        self.lib = lib
        self.config = config
        self._now = now
        self._problems_logged: LoggedProblems | None = None
        self._problems_lock = threading.Lock()  # one load, whichever thread asks first

    def _log_event(self, type: str, level: int, **fields: Any) -> Doc:
        """Record the event in log-1 and in Python logging (as MetaStore.log_event)."""
        doc = schema.create_log(self._now(), type, self.config.machine_id, **fields)
        self.lib.log.save(doc)
        detail = " ".join(f"{k}={v}" for k, v in fields.items() if k != "errors")
        log.log(level, "%s %s", type, detail)
        return doc

    def report_invalid(self, doc_id: Any, error: BaseException | str, db: str = DOCS_DB) -> None:
        """A doc a worker could not use: log `dmedia/doc/invalid` once (the same key as
        check() uses, so the check does not log it again) and let the worker go on."""
        problems = self._problems_of(doc_id, db)
        if not problems:
            problems = [f"unusable: {str(error).splitlines()[0][:200] if str(error) else error!r}"]
        key = LoggedProblems.key(schema.LOG_DOC_INVALID, str(doc_id), problems)
        if not self._load_logged_problems().add_new(key):
            return
        try:
            self._log_event(
                schema.LOG_DOC_INVALID,
                level=logging.ERROR,
                doc_id=str(doc_id)[:200],
                db=db,
                errors=problems,
            )
        except Exception as e:  # reporting must never be what stops a worker
            log.error("invalid doc %r (%s); cannot log it: %s", doc_id, problems, e)

    def _problems_of(self, doc_id: Any, db: str) -> list[str]:
        if not isinstance(doc_id, str) or not doc_id:
            return [f"_id: must be a non-empty str, got {doc_id!r:.60}"]
        database = self.lib.docs if db == DOCS_DB else self.lib.log
        try:
            doc = database.get(doc_id)
        except InvalidDoc as e:
            return [f"doc: damaged: {e.problem}"]
        except Exception:
            return []
        return schema.check_doc(doc)

    def _load_logged_problems(self) -> LoggedProblems:
        """Read once per Checker (one per MetaStore): each problem type is a range of the
        events index, walked by keyset (no OFFSET, no sort), so loading is linear in the log.
        Under a lock: two workers loading at once each kept their own set, and a problem
        one of them logged was not in the set the next check consulted (logged twice)."""
        with self._problems_lock:
            if self._problems_logged is None:
                hashes: list[int] = []
                for typ in (schema.LOG_DOC_INVALID, schema.LOG_FILE_INCONSISTENT):
                    for ev in self.lib.iter_events(types=[typ]):
                        errors = ev.get("errors")
                        errors = [str(e) for e in errors] if isinstance(errors, list) else []
                        doc_id = ev.get("doc_id") or ev.get("file_id")
                        hashes.append(LoggedProblems.key(typ, str(doc_id), errors))
                self._problems_logged = LoggedProblems(hashes)
            return self._problems_logged

    CHECK_LOG_BATCH = 1000  # problem events saved per log-1 bulk write

    def check(self, page_size: int = 5000, storage: bool = False) -> CheckReport:
        """Walk every doc of both databases; log each new problem once. Rewrites nothing.

        `storage`: also the storage's own check (`Library.check_storage`, every page of
        an SQLite file), in a thread while the docs are walked (SQLite checks without
        the GIL): nothing is logged before it passed, and a damaged file raises its
        DatabaseOffline, as when it ran first, whatever the walk met meanwhile.

        Streaming: docs are read a page at a time (keyset on `_id`), new problem events
        are saved to log-1 a batch at a time, and what is already logged costs 8 bytes a
        problem, so time is linear and memory bounded at any library size. A big SQLite
        library is walked in parts by worker processes (`_Walk`), with the same result.
        """
        if not storage:
            return self._check(page_size, lambda: None)
        failed: list[BaseException] = []

        def run() -> None:
            try:
                self.lib.check_storage()
            except BaseException as e:  # noqa: BLE001 - raised again in the caller
                failed.append(e)

        thread = threading.Thread(target=run, name="dmedia-check-storage", daemon=True)
        thread.start()

        def passed() -> None:  # before anything is written, and at the end
            thread.join()
            if failed:
                raise failed[0]

        try:
            report = self._check(page_size, passed)
        except Exception:
            passed()  # a damaged file: its own error names the damage
            raise
        passed()
        return report

    def _check(self, page_size: int, storage_passed: Callable[[], None]) -> CheckReport:
        walk = self._walk(DOCS_DB, self.lib.docs, page_size)
        try:
            return self._check_walk(walk, page_size, storage_passed)
        finally:
            walk.close()

    def _check_walk(
        self, docs_walk: _Walk, page_size: int, storage_passed: Callable[[], None]
    ) -> CheckReport:
        seen = self._load_logged_problems()
        docs = invalid = inconsistent = logged = 0
        pending: list[Doc] = []
        now = self._now()
        machine: list[str] = []  # config.machine_id reads machine.json: once, when needed

        def problem(type: str, about: Any, errors: list[str], **fields: Any) -> None:
            nonlocal logged
            if not seen.add_new(LoggedProblems.key(type, str(about), errors)):
                return
            if not machine:  # read only when there is a problem to log
                machine.append(self.config.machine_id)
            machine_id = machine[0]
            pending.append(schema.create_log(now, type, machine_id, **fields, errors=errors))
            detail = " ".join(f"{k}={v}" for k, v in fields.items())
            log.error("%s %s", type, detail)
            logged += 1
            if len(pending) >= self.CHECK_LOG_BATCH:
                flush()

        def flush() -> None:
            if pending:
                storage_passed()
                for r in self.lib.log.save_many(pending):
                    if isinstance(r, Exception):
                        raise r
                pending.clear()

        count = [0]
        for dbname in (DOCS_DB, LOG_DB):
            # log-1 is walked once the docs' problems are in it: its walk starts then.
            walk = docs_walk if dbname == DOCS_DB else self._walk(LOG_DB, self.lib.log, page_size)
            for kind, doc_id, doc_type, errors in walk.problems(count):
                if kind == schema.LOG_DOC_INVALID:
                    invalid += 1
                    problem(kind, doc_id, errors, doc_id=doc_id, db=dbname, doc_type=doc_type)
                else:
                    inconsistent += 1
                    problem(kind, doc_id, errors, file_id=doc_id)
            walk.close()
            flush()  # before log-1 is walked, so the walk sees what this pass logged
        docs = count[0]
        last = self.metadata_problems()
        if (invalid, inconsistent) != (last["invalid"], last["inconsistent"]):
            storage_passed()
            level = logging.ERROR if invalid or inconsistent else logging.INFO
            self._log_event(
                schema.LOG_CHECK_RESULT,
                level=level,
                docs=docs,
                invalid=invalid,
                inconsistent=inconsistent,
            )
            logged += 1
        return CheckReport(docs, invalid, inconsistent, logged)

    # A database of at least this many docs is checked in CHECK_WORKERS parts at once: one
    # in this process, the others each in a process of its own (Python checks a doc on one
    # core; a worker costs ~0.2 s CPU to start and its part waits for it: measured at
    # 100k docs on a busy machine, a loss as often as a gain; at 1M each part takes half
    # the CPU time of one walk, so with a core free, half the wall time).
    CHECK_WORKERS = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    PARALLEL_MIN_DOCS = 200_000
    # What the parts cost, to size this process's part of the docs (measured at 1M files
    # with 100k logged problems: an equal cut left the worker idle for ~3 s): a doc of the
    # walk, what this process alone does for each event in log-1 (load the logged
    # problems, walk log-1), and a worker's start.
    DOC_US, EVENT_US, WORKER_START_US = 10, 25, 300_000

    def _walk(self, dbname: str, db: Database, page_size: int) -> _Walk:
        """The walk of every doc of `db`, its worker processes started now (they need
        nothing this process loads: start them first)."""
        parts: list[str] = []
        path = self.lib.worker_path
        n, workers = db.count(), self.CHECK_WORKERS
        if path is not None and workers > 1 and n >= self.PARALLEL_MIN_DOCS:
            # This process's share: what leaves it as busy as each worker.
            total = self.DOC_US * n
            extra = -self.WORKER_START_US
            if dbname == DOCS_DB:
                extra += self.EVENT_US * self.lib.log.count()
            share = min(0.6, max(0.1, (total - extra * (workers - 1)) / (total * workers)))
            grain = 64
            fine = db.split_ids(grain)
            if len(fine) == grain - 1:
                first = max(1, round(share * grain))
                rest = [first + (grain - first) * k // (workers - 1) for k in range(workers - 1)]
                parts = [fine[i - 1] for i in sorted(set(rest))]
            else:
                parts = db.split_ids(workers)
        return _Walk(dbname, db, path, parts, page_size)

    def check_if_due(self, full: bool = False) -> CheckReport:
        """The schema pass an engine round runs: proportional to what changed.

        A full pass (storage check + every doc) when asked, when none was recorded here,
        when the last is `schema_check_interval` old, or when the newest result has
        problems (their totals need one). Otherwise only the docs changed since the last
        pass (the changes feeds from a cursor kept in the data dir) are checked: if all
        are sound the totals of a clean library stay 0, so nothing is logged; one with a
        problem turns it into a full pass. An idle round over a million clean files costs
        a few index lookups instead of a million decoded docs.
        """
        now = self._now()
        state = self._read_check_state()
        docs_seq, log_seq = self.lib.docs.update_seq(), self.lib.log.update_seq()
        last = self.metadata_problems()
        due = (
            full
            or state is None
            or now - state["time"] >= self.config.thresholds.schema_check_interval
            or last["invalid"]
            or last["inconsistent"]
        )
        report = None
        full_pass_at = now  # the time of the newest full pass, which this state keeps
        if not due and state is not None:
            report = self._check_changes(state["docs_seq"], state["log_seq"])
            full_pass_at = state["time"]
        if report is None:
            report = self.check(storage=True)  # a damaged library file stops it, named
            full_pass_at = now
        self._write_check_state({"time": full_pass_at, "docs_seq": docs_seq, "log_seq": log_seq})
        return report

    def _check_changes(self, docs_since: str, log_since: str) -> CheckReport | None:
        """Check the docs changed since the cursors; None when one has a problem."""
        n = 0
        for db, since in ((self.lib.docs, docs_since), (self.lib.log, log_since)):
            while True:
                try:
                    ch = db.changes(since, limit=1000)
                except DatabaseError:
                    return None  # a cursor of another library or a reset one: full pass
                ids = [c.id for c in ch.results if not c.deleted]
                for doc_id, doc in zip(ids, db.get_many(ids), strict=True):
                    if doc is None:
                        try:
                            db.get(doc_id)
                        except NotFound:
                            continue  # deleted meanwhile
                        except DatabaseError:
                            return None  # a damaged row: the full pass names it
                        return None  # came back meanwhile: let the full pass see it
                    n += 1
                    if schema.check_doc(doc):
                        return None
                    is_file = db is self.lib.docs and doc.get("type") == schema.TYPE_FILE
                    if is_file and schema.check_file_consistency(doc):
                        return None
                if len(ch.results) < 1000 or ch.last_seq == since:
                    break
                since = ch.last_seq
        return CheckReport(n, 0, 0, 0)

    def _check_state_path(self) -> Path:
        return Path(self.config.data_dir) / "check-state.json"

    def _read_check_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self._check_state_path().read_text())
            state = data[self.lib.display_url]
            if isinstance(state["time"], int | float) and all(
                isinstance(state[k], str) for k in ("docs_seq", "log_seq")
            ):
                return state
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def _write_check_state(self, state: dict[str, Any]) -> None:
        path = self._check_state_path()
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        data[self.lib.display_url] = state
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, path)
        except OSError as e:  # no cursor: the next round just does a full pass
            log.warning("cannot record the check cursor in %s: %s", path, e)

    def metadata_problems(self) -> dict[str, int]:
        """Invalid and inconsistent docs as the newest check pass of any machine found
        them (log-1, so every machine shows the same): one lookup in the events index.

        A pass logs its result only when it differs from the newest one, so the newest
        result is the truth until a pass finds otherwise (a fixed doc resolves itself).
        """
        found = self.lib.events(1, types=[schema.LOG_CHECK_RESULT])
        ev = found[0] if found else {}
        out = {}
        for key in ("invalid", "inconsistent"):
            v = ev.get(key)
            out[key] = v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0
        return out


# (kind, doc_id, doc_type, errors): kind is LOG_DOC_INVALID or LOG_FILE_INCONSISTENT.
Problem = tuple[str, Any, Any, list[str]]


def _scan(
    dbname: str, db: Database, rows: Iterable[tuple[Any, Any]], count: list[int]
) -> Iterator[Problem]:
    """The verdict on each stored row, in order: a Problem for each doc with one (the
    same in this process and in a worker's); count[0] += docs checked."""
    sound = schema.file_doc_sound
    files = dbname == DOCS_DB
    docs = 0
    try:
        for doc_id, stored in rows:
            if files:
                # The common case first: a clean file doc, decoded by orjson. It reads
                # an integer beyond 64 bits as a float, which no field that
                # file_doc_sound passes may hold, and refuses what the stdlib accepts
                # beyond JSON (NaN, lone surrogates): those, and every doc it does
                # not pass, are decoded again as every read decodes them, and the
                # full validators say what is wrong.
                if type(stored) is str:
                    try:
                        quick = orjson.loads(stored)
                    except orjson.JSONDecodeError:
                        quick = None
                else:
                    quick = stored
                if sound(quick):
                    docs += 1
                    continue
            doc = db.decode_stored(doc_id, stored)
            doc_id = doc.get("_id", "")
            if isinstance(doc_id, str) and doc_id.startswith("_design/"):
                continue
            docs += 1
            problems = schema.check_doc(doc)
            if problems:
                count[0] += docs
                docs = 0
                yield (schema.LOG_DOC_INVALID, doc_id, doc.get("type"), problems)
                continue
            if files and doc.get("type") == schema.TYPE_FILE:
                errs = schema.check_file_consistency(doc)
                if errs:
                    count[0] += docs
                    docs = 0
                    yield (schema.LOG_FILE_INCONSISTENT, doc_id, None, errs)
    finally:
        count[0] += docs


class _Walk:
    """The problems of every doc of one database, in `_id` order.

    A big database is cut into parts (`split_ids`): the first is checked in this process
    while worker processes check the others, each writing its problems to a spool file
    that is read, in order, once this process is done with its own part; so the
    problems, the events logged and their order are those of one walk. A worker that
    cannot start or fails has its part checked here instead.
    """

    def __init__(
        self, dbname: str, db: Database, path: str | None, parts: list[str], page_size: int
    ) -> None:
        self.dbname, self.db, self.page_size = dbname, db, page_size
        self.ranges = list(itertools.pairwise([None, *parts, None]))
        self.workers = [
            _Worker.start(path, dbname, r, page_size) if path else None for r in self.ranges[1:]
        ]

    def problems(self, count: list[int]) -> Iterator[Problem]:
        """count[0] += the docs checked."""
        name, db, size = self.dbname, self.db, self.page_size
        yield from _scan(name, db, db.iter_stored(size, *self.ranges[0]), count)
        for (start, stop), worker in zip(self.ranges[1:], self.workers, strict=True):
            found = worker.result() if worker is not None else None
            if found is None:  # no worker: this part here
                yield from _scan(name, db, db.iter_stored(size, start, stop), count)
            else:
                yield from found.problems(count)

    def close(self) -> None:
        for worker in self.workers:
            if worker is not None:
                worker.close()
        self.workers = [None] * len(self.workers)


class _Found:
    """A worker's finished part: its problems, read back from its spool file."""

    def __init__(self, spool: IO[bytes]) -> None:
        self._spool = spool

    def problems(self, count: list[int]) -> Iterator[Problem]:
        import pickle  # only where a check is split: not at every CLI start

        self._spool.seek(0)
        while True:
            try:
                item = pickle.load(self._spool)  # noqa: S301 - our own worker's output
            except EOFError:
                raise DatabaseError("a check worker's output ended early") from None
            if isinstance(item, int):  # the last item: how many docs it checked
                count[0] += item
                return
            yield from item


class _Worker:
    """A process checking one part of a database (`python -m dmedia_tui.checker`)."""

    BATCH = 1000  # problems a worker writes at a time

    def __init__(self, proc: subprocess.Popen[bytes], spool: IO[bytes], err: IO[bytes]) -> None:
        self.proc, self.spool, self.err = proc, spool, err

    @classmethod
    def start(
        cls, path: str, dbname: str, part: tuple[str | None, str | None], page_size: int
    ) -> _Worker | None:
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - unlinked: nothing left behind
        err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        # This checkout's package, whatever the working directory (a worker must run the
        # code this process runs).
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        args = [path, dbname, json.dumps(list(part)), str(page_size), str(spool.fileno())]
        import subprocess  # only where a check is split: not at every CLI start (1.4 ms)

        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dmedia_tui.checker", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                pass_fds=(spool.fileno(),),
                env=env,
            )
        except OSError as e:
            log.warning("cannot start a check worker (%s): checking its part here", e)
            spool.close()
            err.close()
            return None
        return cls(proc, spool, err)

    def result(self) -> _Found | None:
        """The part's problems once the worker is done; None if it failed."""
        if self.proc.wait() == 0:
            return _Found(self.spool)
        self.err.seek(0)
        lines = self.err.read().decode("utf-8", "replace").strip().splitlines()
        log.warning(
            "a check worker failed (exit %s: %s): checking its part here",
            self.proc.returncode,
            lines[-1] if lines else "no message",
        )
        return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.spool.close()
        self.err.close()


def _worker_main(argv: list[str]) -> int:
    """A worker: check the docs of one part and write its problems to the spool fd."""
    import pickle

    from dmedia_tui.db.sqlite import SQLiteLibrary

    gc.freeze()  # the modules: no collection walks them again (docs are acyclic)
    path, dbname, part, page_size, fd = argv
    start, stop = json.loads(part)
    lib = SQLiteLibrary(path, create=False, quick_check=False)
    db = lib.docs if dbname == DOCS_DB else lib.log
    count = [0]
    with os.fdopen(int(fd), "wb") as out:
        batch: list[Problem] = []
        for p in _scan(dbname, db, db.iter_stored(int(page_size), start, stop), count):
            batch.append(p)
            if len(batch) >= _Worker.BATCH:
                pickle.dump(batch, out, pickle.HIGHEST_PROTOCOL)
                batch = []
        if batch:
            pickle.dump(batch, out, pickle.HIGHEST_PROTOCOL)
        pickle.dump(count[0], out)
    lib.close()
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
