"""health.assess and online_store_ids: every rule, its boundaries, and junk tolerance.

Pure functions, so every case is built by hand: placement summary rows, store and machine
docs, `now` and the set of online stores.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import humanize
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmedia_tui.config import DAY, Thresholds
from dmedia_tui.db.base import PlacementRow, VerificationStats
from dmedia_tui.durability import TARGET
from dmedia_tui.health import (
    DATABASE_OFFLINE,
    DISCONNECTED_ONLY_COPY,
    DRIVE_FAILURE,
    INSUFFICIENT_STORAGE,
    LOW_DURABILITY,
    METADATA_INVALID,
    NO_KNOWN_COPY,
    SHARED_FILESYSTEM,
    Alert,
    Health,
    Severity,
    StoreState,
    assess,
    database_offline,
    online_store_ids,
)
from dmedia_tui.protocol import b32encode

NOW = 1_795_608_000
TH = Thresholds()
GB = 10**9
TB = 10**12


def sid(n: int) -> str:
    """A valid, deterministic 24-character store (or machine) ID."""
    return b32encode(bytes([n]) * 15)


A, B, C, D, E = (sid(i) for i in range(1, 6))
M_STUDIO, M_KESTREL, M_NAS = sid(101), sid(102), sid(103)


def store(store_id: str, label: str, **kw: Any) -> dict[str, Any]:
    """A healthy store doc with a roomy 1 TB drive, seen now."""
    doc = {
        "_id": store_id,
        "type": "dmedia/store",
        "time": NOW - 100 * DAY,
        "copies": 1,
        "atime": NOW,
        "bytes_total": TB,
        "bytes_avail": TB // 2,
        "machine_id": M_STUDIO,
        "label": label,
        "drive_serial": f"SER-{label}",
        "drive_model": "WD",
        "partition_uuid": "uuid",
        "removable": False,
        "internal": True,
        "no_new_copies": False,
    }
    doc.update(kw)
    return doc


def machine(machine_id: str, hostname: str, stores: list[str], atime: float = NOW) -> dict:
    return {
        "_id": machine_id,
        "type": "dmedia/machine",
        "hostname": hostname,
        "atime": atime,
        "stores": stores,
    }


def row(placement: str, count: int, size: int, origin: str = "user") -> PlacementRow:
    return PlacementRow(origin, placement, count, size)


def pl(*entries: tuple[str, int]) -> str:
    return ",".join(f"{s}:{c}" for s, c in sorted(entries))


def codes(h: Health) -> list[str]:
    return [a.code for a in h.alerts]


def only(h: Health, code: str) -> Alert:
    found = [a for a in h.alerts if a.code == code]
    assert len(found) == 1, codes(h)
    return found[0]


def three_stores() -> list[dict]:
    return [store(A, "alpha"), store(B, "beta"), store(C, "gamma")]


def healthy_summary() -> list[PlacementRow]:
    return [row(pl((A, 1), (B, 1), (C, 1)), 100, 10 * GB)]


# --- online_store_ids ------------------------------------------------------------------


class TestOnlineStoreIds:
    def test_local_stores_are_online_without_any_machine_doc(self):
        assert online_store_ids([], NOW, TH, {A}) == {A}

    def test_fresh_machine_lists_its_stores(self):
        machines = [machine(M_STUDIO, "studio", [A, B]), machine(M_KESTREL, "kestrel", [C])]
        assert online_store_ids(machines, NOW, TH) == {A, B, C}

    def test_heartbeat_exactly_at_the_threshold_is_fresh(self):
        m = machine(M_STUDIO, "studio", [A], atime=NOW - TH.heartbeat_fresh)
        assert online_store_ids([m], NOW, TH) == {A}

    def test_heartbeat_one_second_too_old_is_not_fresh(self):
        m = machine(M_STUDIO, "studio", [A], atime=NOW - TH.heartbeat_fresh - 1)
        assert online_store_ids([m], NOW, TH, {B}) == {B}

    def test_heartbeat_from_the_future_counts_as_fresh(self):
        m = machine(M_STUDIO, "studio", [A], atime=NOW + 3600)
        assert online_store_ids([m], NOW, TH) == {A}

    def test_threshold_is_configurable(self):
        m = machine(M_STUDIO, "studio", [A], atime=NOW - 500)
        assert online_store_ids([m], NOW, TH) == set()
        assert online_store_ids([m], NOW, Thresholds(heartbeat_fresh=500)) == {A}

    def test_junk_machine_docs_are_ignored(self):
        machines: list[Any] = [
            None,
            "studio",
            {},
            {"_id": 7, "atime": NOW, "stores": [A]},
            {"_id": M_STUDIO, "atime": "now", "stores": [A]},
            {"_id": M_STUDIO, "atime": True, "stores": [A]},
            {"_id": M_STUDIO, "atime": float("nan"), "stores": [A]},
            {"_id": M_KESTREL, "atime": NOW, "stores": "not a list"},
            {"_id": M_NAS, "atime": NOW, "stores": [B, 5, None, "../../etc", "short", {"x": 1}]},
        ]
        assert online_store_ids(machines, NOW, TH) == {B}

    def test_machines_not_a_list_is_tolerated(self):
        assert online_store_ids(None, NOW, TH, {A}) == {A}  # type: ignore[arg-type]

    def test_does_not_modify_local(self):
        local = {A}
        online_store_ids([machine(M_STUDIO, "studio", [B])], NOW, TH, local)
        assert local == {A}

    def test_this_machines_own_heartbeat_does_not_make_its_stores_online(self):
        # studio's doc (10 s old) lists A and B, but only A is on its disk now: B vanished.
        machines = [machine(M_STUDIO, "studio", [A, B], atime=NOW - 10)]
        assert online_store_ids(machines, NOW, TH, {A}, M_STUDIO) == {A}
        # Another machine's fresh heartbeat still counts for its stores.
        machines.append(machine(M_KESTREL, "kestrel", [C], atime=NOW - 10))
        assert online_store_ids(machines, NOW, TH, {A}, M_STUDIO) == {A, C}


# --- histogram and totals --------------------------------------------------------------


class TestHistogram:
    def test_buckets_by_sum_of_copies_with_3_meaning_3_or_more(self):
        summary = [
            row(pl((A, 0)), 1, 10),
            row(pl((A, 1)), 2, 20),
            row(pl((A, 1), (B, 1)), 3, 30),
            row(pl((A, 2)), 4, 40),  # one copy worth 2
            row(pl((A, 1), (B, 1), (C, 1)), 5, 50),
            row(pl((A, 2), (B, 2), (C, 1)), 6, 60),  # durability 5 -> bucket 3
            row("", 7, 70),
        ]
        h = assess(summary, three_stores(), [], NOW, {A, B, C})
        assert h.to_json()["histogram"] == {"0": 8, "1": 2, "2": 7, "3": 11}
        assert h.to_json()["histogram_bytes"] == {"0": 80, "1": 20, "2": 70, "3": 110}
        assert (h.files, h.bytes) == (28, 280)

    def test_only_user_files_count(self):
        summary = [
            row(pl((A, 1)), 5, 50),
            row(pl((A, 1)), 100, 1000, origin="render"),
            row("", 100, 1000, origin="cache"),
            row(pl((B, 0)), 100, 1000, origin="proxy"),
        ]
        h = assess(summary, three_stores(), [], NOW, {A, B, C})
        assert h.to_json()["histogram"] == {"0": 0, "1": 5, "2": 0, "3": 0}
        assert (h.files, h.bytes) == (5, 50)

    def test_downgraded_copies_count_as_recorded_not_twice(self):
        # The metastore set the copies on the downgraded store to 0 already; the store's
        # `copies` weight of 1 must not resurrect them, nor must health subtract again.
        stores = [store(A, "a"), store(B, "b", downgraded={"time": NOW, "reason": "stale"})]
        h = assess([row(pl((A, 1), (B, 0)), 4, 40)], stores, [], NOW, {A, B})
        assert h.histogram[1].files == 4

    def test_copies_on_failing_store_count_as_recorded(self):
        stores = [store(A, "a"), store(B, "b", failure={"time": NOW, "corrupt_count": 1})]
        h = assess([row(pl((A, 1), (B, 1)), 4, 40)], stores, [], NOW, {A, B})
        assert h.histogram[2].files == 4

    def test_copies_on_offline_stores_still_count_for_durability(self):
        h = assess(healthy_summary(), three_stores(), [], NOW, {A})
        assert h.histogram[3].files == 100
        assert LOW_DURABILITY not in codes(h)

    def test_empty_library(self):
        h = assess([], [], [], NOW, set())
        assert h.alerts == ()
        assert [b.files for b in h.histogram] == [0, 0, 0, 0]
        assert h.exit_code == 0
        assert h.store_rows == ()


# --- INSUFFICIENT_STORAGE --------------------------------------------------------------

U = 1000  # user bytes in the storage tests
TOTAL = 100_000  # store size: reserve is 1 % = 1000 bytes
RESERVE = TH.reserve_for(TOTAL)


def small(store_id: str, label: str, avail: int, **kw: Any) -> dict:
    return store(store_id, label, bytes_total=TOTAL, bytes_avail=avail, **kw)


class TestInsufficientStorage:
    """U bytes of user files, all on A only; B and C must each take a full copy."""

    summary = [row(pl((A, 1)), 10, U)]

    def assess3(self, b_avail: int, c_avail: int, **kw: Any) -> Health:
        stores = [small(A, "a", 0), small(B, "b", b_avail), small(C, "c", c_avail)]
        return assess(self.summary, stores, [], NOW, {A, B, C}, **kw)

    def test_reserve_is_one_percent(self):
        assert RESERVE == 1000

    def test_exactly_fits(self):
        h = self.assess3(RESERVE + U, RESERVE + U)
        assert INSUFFICIENT_STORAGE not in codes(h)
        assert h.extra["storage"] == {"need": 3 * U, "offered": 3 * U, "trusted_recent": [A, B, C]}

    def test_one_byte_short(self):
        h = self.assess3(RESERVE + U, RESERVE + U - 1)
        a = only(h, INSUFFICIENT_STORAGE)
        assert a.severity == Severity.PANIC
        assert a.bytes == 1
        assert a.message == (
            "Not enough storage for 3 copies: need 1 Byte more of free space on drives "
            "without these files, or another drive"
        )
        assert a.action.startswith("Free space on a drive, or add one: dmedia-tui store init")
        assert h.exit_code == 2

    def test_space_already_used_by_our_copies_counts(self):
        # A has no free space at all, but it holds every file already.
        h = self.assess3(RESERVE + U, RESERVE + U)
        assert h.extra["storage"]["offered"] == 3 * U

    def test_free_space_beyond_one_copy_does_not_count_twice(self):
        # B could hold U three times over, but only one copy of a file per store counts.
        h = self.assess3(RESERVE + 3 * U, 0)
        a = only(h, INSUFFICIENT_STORAGE)
        assert a.bytes == U
        assert "need 1.0 kB more" in a.message

    def test_two_stores_are_too_few_whatever_their_size(self):
        stores = [store(A, "a"), store(B, "b")]
        summary = [row(pl((A, 1), (B, 1)), 10, 2 * TB // 10)]
        a = only(assess(summary, stores, [], NOW, {A, B}), INSUFFICIENT_STORAGE)
        assert a.message == (
            "Not enough storage for 3 copies: only 2 trusted drives seen recently; "
            f"need {humanize.naturalsize(2 * TB // 10)} more on a third drive"
        )
        assert a.action == "Add a drive: dmedia-tui store init /media/<drive>"
        assert a.store_ids == (A, B)
        assert a.files == 10

    def test_three_stores_are_enough(self):
        stores = three_stores()
        h = assess([row(pl((A, 1), (B, 1)), 10, 2 * TB // 10)], stores, [], NOW, {A, B, C})
        assert INSUFFICIENT_STORAGE not in codes(h)

    def test_one_store_needs_two_more_drives(self):
        a = only(assess(self.summary, [small(A, "a", 0)], [], NOW, {A}), INSUFFICIENT_STORAGE)
        assert a.bytes == 2 * U
        assert "only 1 trusted drive seen recently" in a.message
        assert a.message.endswith("need 2.0 kB more on at least 2 more drives")

    def test_no_trusted_store_at_all(self):
        stores = [small(A, "a", 0, no_new_copies=True, copies=0)]
        a = only(assess([row(pl((A, 0)), 1, U)], stores, [], NOW, {A}), INSUFFICIENT_STORAGE)
        assert "only 0 trusted drives" in a.message
        assert a.bytes == 3 * U

    def test_no_user_files_no_alert_even_without_stores(self):
        summary = [row(pl((A, 1)), 10, U, origin="render")]
        assert INSUFFICIENT_STORAGE not in codes(assess(summary, [], [], NOW, set()))

    def test_non_user_files_do_not_raise_the_need(self):
        summary = [*self.summary, row(pl((A, 1)), 10, 50 * U, origin="cache")]
        stores = [small(A, "a", 0), small(B, "b", RESERVE + U), small(C, "c", RESERVE + U)]
        assert INSUFFICIENT_STORAGE not in codes(assess(summary, stores, [], NOW, {A, B, C}))

    def test_failing_store_offers_nothing(self):
        stores = [
            small(A, "a", 0),
            small(B, "b", RESERVE + U),
            small(C, "c", RESERVE + U, failure={"time": NOW, "corrupt_count": 1}),
        ]
        h = assess(self.summary, stores, [], NOW, {A, B, C})
        assert only(h, INSUFFICIENT_STORAGE).bytes == U

    def test_no_new_copies_store_offers_only_its_counted_copies(self):
        # C holds every file (counted 1) but takes no new copies: 3 copies exist, no alarm.
        summary = [row(pl((A, 1), (B, 1), (C, 1)), 10, U)]
        stores = [small(A, "a", 0), small(B, "b", 0), small(C, "c", 0, no_new_copies=True)]
        assert INSUFFICIENT_STORAGE not in codes(assess(summary, stores, [], NOW, {A, B, C}))
        # ...but with C's copies downgraded to 0 and no room elsewhere, it is short.
        summary = [row(pl((A, 1), (B, 1), (C, 0)), 10, U)]
        h = assess(summary, stores, [], NOW, {A, B, C})
        assert only(h, INSUFFICIENT_STORAGE).bytes == U

    def test_downgraded_copies_on_a_trusted_store_still_occupy_usable_space(self):
        # B came back after a downgrade: its copies count 0 until re-verified, but it can
        # hold them, so storage is sufficient (LOW_DURABILITY says work is in progress).
        summary = [row(pl((A, 1), (B, 0), (C, 1)), 10, U)]
        stores = [small(A, "a", 0), small(B, "b", 0), small(C, "c", 0)]
        h = assess(summary, stores, [], NOW, {A, B, C})
        assert INSUFFICIENT_STORAGE not in codes(h)

    def test_store_seen_one_second_before_the_downgrade_boundary_counts(self):
        stores = [
            small(A, "a", 0),
            small(B, "b", RESERVE + U),
            small(C, "c", RESERVE + U, atime=NOW - TH.store_downgrade_after + 1),
        ]
        assert INSUFFICIENT_STORAGE not in codes(assess(self.summary, stores, [], NOW, {A, B}))

    @pytest.mark.parametrize("extra", [0, 1])
    def test_store_at_the_downgrade_boundary_does_not_count(self, extra):
        # One boundary: the policy downgrades at age >= store_downgrade_after, so at that
        # very second the store is no longer counted as storage either.
        stores = [
            small(A, "a", 0),
            small(B, "b", RESERVE + U),
            small(C, "c", RESERVE + U, atime=NOW - TH.store_downgrade_after - extra),
        ]
        h = assess(self.summary, stores, [], NOW, {A, B})
        assert only(h, INSUFFICIENT_STORAGE).store_ids == (A, B)

    def test_downgraded_store_takes_no_new_copies_so_offers_only_counted_copies(self):
        # Three stores, one downgraded by the user: files stuck at 2 good copies can never
        # reach 3 (the copier refuses a downgraded store), so storage is insufficient.
        summary = [row(pl((A, 1), (B, 1), (C, 0)), 10, U)]
        stores = [
            small(A, "a", TOTAL),
            small(B, "b", TOTAL),
            small(C, "c", TOTAL, downgraded={"time": NOW, "reason": "user"}),
        ]
        h = assess(summary, stores, [], NOW, {A, B, C})
        a = only(h, INSUFFICIENT_STORAGE)
        assert a.store_ids == (A, B) and a.bytes == U
        assert h.exit_code == 2

    def test_shared_filesystem_counts_once(self):
        # B and C share a filesystem with room for every file: one place, not two.
        stores = [small(A, "a", 0), small(B, "b", TOTAL), small(C, "c", TOTAL)]
        assert INSUFFICIENT_STORAGE not in codes(assess(self.summary, stores, [], NOW, {A, B, C}))
        h = assess(self.summary, stores, [], NOW, {A, B, C}, shared_filesystems=[(B, C)])
        a = only(h, INSUFFICIENT_STORAGE)
        assert a.bytes == U and "only 2 trusted drives" in a.message

    def test_three_stores_on_one_full_filesystem_are_one_place(self):
        summary = [row(pl((A, 1), (B, 1), (C, 1)), 10, U)]
        stores = [small(A, "a", 0), small(B, "b", 0), small(C, "c", 0)]
        assert INSUFFICIENT_STORAGE not in codes(assess(summary, stores, [], NOW, {A, B, C}))
        h = assess(summary, stores, [], NOW, {A, B, C}, shared_filesystems=[(A, B), (B, C)])
        assert only(h, INSUFFICIENT_STORAGE).bytes == 2 * U

    def test_online_store_counts_even_with_an_old_atime(self):
        stores = [
            small(A, "a", 0),
            small(B, "b", RESERVE + U),
            small(C, "c", RESERVE + U, atime=NOW - 30 * DAY),
        ]
        assert INSUFFICIENT_STORAGE not in codes(assess(self.summary, stores, [], NOW, {A, B, C}))

    def test_store_weight_counts(self):
        # One store whose copies are worth 3 (say a mirrored NAS) is enough on its own.
        stores = [small(A, "nas", 0, copies=3)]
        h = assess([row(pl((A, 3)), 10, U)], stores, [], NOW, {A})
        assert INSUFFICIENT_STORAGE not in codes(h)
        # Weight 2 + weight 1 is enough too, although only two drives.
        stores = [small(A, "nas", 0, copies=2), small(B, "b", RESERVE + U)]
        h = assess([row(pl((A, 2)), 10, U)], stores, [], NOW, {A, B})
        assert INSUFFICIENT_STORAGE not in codes(h)

    def test_store_with_zero_weight_offers_nothing(self):
        stores = [small(A, "a", 0), small(B, "b", RESERVE + U), small(C, "c", TOTAL, copies=0)]
        h = assess(self.summary, stores, [], NOW, {A, B, C})
        assert only(h, INSUFFICIENT_STORAGE).store_ids == (A, B)

    def test_reserve_is_capped(self):
        th = Thresholds(reserve_max_bytes=10)
        h = self.assess3(10 + U, 10 + U, thresholds=th)
        assert INSUFFICIENT_STORAGE not in codes(h)

    def test_target_is_the_fixed_durability_target(self):
        assert TH.target_copies == TARGET == 3
        stores = [small(A, "a", 0), small(B, "b", RESERVE + U)]
        a = only(assess(self.summary, stores, [], NOW, {A, B}), INSUFFICIENT_STORAGE)
        assert "for 3 copies" in a.message


# --- DISCONNECTED_ONLY_COPY ------------------------------------------------------------


def laptop_setup() -> tuple[list[dict], list[dict]]:
    stores = [
        store(A, "studio-int", machine_id=M_STUDIO),
        store(B, "laptop-ssd", machine_id=M_KESTREL, atime=NOW - 3600),
        store(
            C,
            "usb-backup",
            removable=True,
            internal=False,
            drive_serial="WD-WX11A",
            machine_id=M_STUDIO,
            atime=NOW - 7200,
        ),
        store(D, "nas-archive", machine_id=M_NAS),
    ]
    machines = [
        machine(M_STUDIO, "studio", [A]),
        machine(M_KESTREL, "kestrel", [B], atime=NOW - 3600),
        machine(M_NAS, "nas", [D]),
    ]
    return stores, machines


class TestDisconnected:
    def run(self, summary: list[PlacementRow], **kw: Any) -> Health:
        stores, machines = laptop_setup()
        stores = kw.pop("stores", stores)
        machines = kw.pop("machines", machines)
        online = online_store_ids(machines, NOW, TH)
        return assess(summary, stores, machines, NOW, online, **kw)

    def test_own_store_is_connected_here_never_boot_this_machine(self):
        # studio runs the command; its heartbeat is 3 minutes old, or it has none at all.
        stores, machines = laptop_setup()
        for ms in (
            [machine(M_STUDIO, "studio", [A], atime=NOW - 181), *machines[1:]],
            machines[1:],
        ):
            online = online_store_ids(ms, NOW, TH, {D}, M_STUDIO)
            h = assess([row(pl((A, 1)), 5, GB)], stores, ms, NOW, online, machine_id=M_STUDIO)
            a = only(h, DISCONNECTED_ONLY_COPY)
            assert a.action.startswith("Connect studio-int here"), a.action
            assert "oot" not in a.action

    def test_own_removable_drive_is_plugged_in_here(self):
        stores, machines = laptop_setup()
        online = online_store_ids(machines, NOW, TH, {A}, M_STUDIO)
        h = assess([row(pl((C, 1)), 5, GB)], stores, machines, NOW, online, machine_id=M_STUDIO)
        a = only(h, DISCONNECTED_ONLY_COPY)
        assert a.action == "Plug usb-backup (serial WD-WX11A) in here (studio) or into one of: nas"

    def test_internal_drive_of_a_machine_that_is_off(self):
        h = self.run([row(pl((B, 1)), 128, 41 * GB)])
        a = only(h, DISCONNECTED_ONLY_COPY)
        assert a.severity == Severity.PANIC
        assert a.message == "128 files (41.0 GB) are only on laptop-ssd, which is offline"
        assert a.action == "Boot kestrel"
        assert (a.store_ids, a.files, a.bytes) == ((B,), 128, 41 * GB)
        assert h.exit_code == 2

    def test_machine_on_but_unreachable_is_told_apart_from_one_that_is_off(self):
        # nas is on (fresh heartbeat, nas-archive listed) but its peer server does not
        # answer studio: nas-archive is not online here, and the advice is the firewall.
        stores, machines = laptop_setup()
        cut = {M_NAS: "192.168.1.20:8042"}
        online = online_store_ids(machines, NOW, TH, {A}, M_STUDIO, cut)
        assert D not in online and A in online
        h = assess(
            [row(pl((D, 1)), 7, GB)],
            stores,
            machines,
            NOW,
            online,
            machine_id=M_STUDIO,
            unreachable=cut,
        )
        a = only(h, DISCONNECTED_ONLY_COPY)
        assert (
            a.action == "Nas is on but cannot be reached at 192.168.1.20:8042: check its firewall"
        )
        nas = next(r for r in h.store_rows if r.store_id == D)
        assert (nas.online, nas.unreachable_at) == (False, "192.168.1.20:8042")
        assert nas.to_json()["unreachable_at"] == "192.168.1.20:8042"
        # A machine that is off is "boot" advice whatever the old outage record says.
        stale = [machine(M_STUDIO, "studio", [A]), machine(M_NAS, "nas", [D], atime=NOW - DAY)]
        online = online_store_ids(stale, NOW, TH, {A}, M_STUDIO, cut)
        h = assess(
            [row(pl((D, 1)), 7, GB)],
            stores,
            stale,
            NOW,
            online,
            machine_id=M_STUDIO,
            unreachable=cut,
        )
        assert only(h, DISCONNECTED_ONLY_COPY).action == "Boot nas"
        assert next(r for r in h.store_rows if r.store_id == D).unreachable_at is None

    def test_removable_drive_lists_running_machines(self):
        a = only(self.run([row(pl((C, 1)), 1, 5)]), DISCONNECTED_ONLY_COPY)
        assert a.message == "1 file (5 Bytes) is only on usb-backup, which is offline"
        assert a.action == "Plug usb-backup (serial WD-WX11A) into one of: nas, studio"

    def test_removable_drive_without_running_machines(self):
        stores, machines = laptop_setup()
        machines = [{**m, "atime": NOW - 10 * DAY} for m in machines]
        h = assess([row(pl((C, 1)), 1, 5)], stores, machines, NOW, {A})
        assert only(h, DISCONNECTED_ONLY_COPY).action == (
            "Plug usb-backup (serial WD-WX11A) into this machine"
        )

    def test_removable_drive_without_serial(self):
        stores, machines = laptop_setup()
        stores[2].pop("drive_serial")
        a = only(self.run([row(pl((C, 1)), 1, 5)], stores=stores), DISCONNECTED_ONLY_COPY)
        assert a.action == "Plug usb-backup into one of: nas, studio"

    def test_neither_internal_nor_removable_is_treated_as_fixed(self):
        stores, _ = laptop_setup()
        stores[1].update(internal=False, removable=False)
        a = only(self.run([row(pl((B, 1)), 1, 5)], stores=stores), DISCONNECTED_ONLY_COPY)
        assert a.action == "Boot kestrel"

    def test_internal_wins_over_removable(self):
        stores, _ = laptop_setup()
        stores[1].update(internal=True, removable=True)
        a = only(self.run([row(pl((B, 1)), 1, 5)], stores=stores), DISCONNECTED_ONLY_COPY)
        assert a.action == "Boot kestrel"

    def test_machine_running_but_not_seeing_its_internal_store(self):
        stores, machines = laptop_setup()
        machines[1] = machine(M_KESTREL, "kestrel", [])
        a = only(self.run([row(pl((B, 1)), 1, 5)], machines=machines), DISCONNECTED_ONLY_COPY)
        assert a.action == "Connect laptop-ssd on kestrel (it is running but does not see it)"

    def test_machine_doc_missing(self):
        stores, machines = laptop_setup()
        a = only(self.run([row(pl((B, 1)), 1, 5)], machines=machines[:1]), DISCONNECTED_ONLY_COPY)
        assert a.action == f"Boot the machine laptop-ssd was last connected to ({M_KESTREL[:8]})"

    def test_store_doc_missing_counts_as_offline_unknown(self):
        a = only(self.run([row(pl((E, 1)), 3, 30)]), DISCONNECTED_ONLY_COPY)
        assert a.message == f"3 files (30 Bytes) are only on {E[:8]} (unknown), which is offline"
        assert a.action == f"Reconnect the drive that held store {E[:8]} (its record is gone)"

    def test_store_doc_without_machine(self):
        stores, _ = laptop_setup()
        del stores[1]["machine_id"]
        a = only(self.run([row(pl((B, 1)), 1, 5)], stores=stores), DISCONNECTED_ONLY_COPY)
        assert a.action == "Reconnect laptop-ssd"

    def test_a_copy_on_an_online_store_is_enough(self):
        h = self.run([row(pl((A, 1), (B, 1)), 10, 100), row(pl((A, 0), (C, 1)), 5, 50)])
        assert DISCONNECTED_ONLY_COPY not in codes(h)

    def test_downgraded_entry_still_counts_as_a_place_to_look(self):
        a = only(self.run([row(pl((B, 0)), 2, 20)]), DISCONNECTED_ONLY_COPY)
        assert a.store_ids == (B,)
        assert a.action == "Boot kestrel"

    def test_files_on_two_offline_places_give_either_advice(self):
        a = only(self.run([row(pl((B, 1), (C, 1)), 7, 70)]), DISCONNECTED_ONLY_COPY)
        assert a.message == (
            "7 files (70 Bytes) are only on laptop-ssd, usb-backup, which are all offline"
        )
        assert a.action == (
            "Plug usb-backup (serial WD-WX11A) into one of: nas, studio or boot kestrel"
        )
        assert a.store_ids == tuple(sorted((B, C)))

    def test_one_alert_per_set_of_places(self):
        h = self.run(
            [
                row(pl((B, 1)), 1, 10),
                row(pl((B, 0)), 2, 20),  # same place
                row(pl((C, 1)), 4, 40),
                row(pl((B, 1), (C, 1)), 8, 80),
            ]
        )
        alerts = [a for a in h.alerts if a.code == DISCONNECTED_ONLY_COPY]
        got = sorted((a.store_ids, a.files, a.bytes) for a in alerts)
        assert got == sorted([((B,), 3, 30), ((C,), 4, 40), (tuple(sorted((B, C))), 8, 80)])

    def test_biggest_group_first(self):
        h = self.run([row(pl((B, 1)), 1, 10), row(pl((C, 1)), 50, 40)])
        assert [a.store_ids for a in h.alerts if a.code == DISCONNECTED_ONLY_COPY] == [(C,), (B,)]

    def test_a_running_namesake_does_not_make_the_machine_running(self):
        stores, machines = laptop_setup()
        machines.append(machine(sid(104), "kestrel", []))  # another "kestrel" is on
        a = only(self.run([row(pl((B, 1)), 1, 5)], machines=machines), DISCONNECTED_ONLY_COPY)
        assert a.action == "Boot kestrel"

    def test_two_internal_stores_of_one_machine_are_one_place(self):
        stores, machines = laptop_setup()
        stores.append(store(E, "laptop-hdd", machine_id=M_KESTREL, atime=NOW - 3600))
        h = self.run([row(pl((B, 1)), 1, 10), row(pl((E, 1)), 2, 20)], stores=stores)
        a = only(h, DISCONNECTED_ONLY_COPY)
        assert (a.store_ids, a.files, a.bytes) == (tuple(sorted((B, E))), 3, 30)
        assert a.action == "Boot kestrel"

    def test_non_user_files_are_ignored(self):
        h = self.run([row(pl((B, 1)), 9, 90, origin="render"), row(pl((C, 1)), 9, 90, "proxy")])
        assert DISCONNECTED_ONLY_COPY not in codes(h)

    def test_failing_offline_store_is_still_a_place(self):
        stores, _ = laptop_setup()
        stores[1]["failure"] = {"time": NOW, "corrupt_count": 2}
        h = self.run([row(pl((B, 0)), 1, 10)], stores=stores)
        assert only(h, DISCONNECTED_ONLY_COPY).action == "Boot kestrel"


# --- NO_KNOWN_COPY ---------------------------------------------------------------------


class TestNoKnownCopy:
    def test_files_recorded_nowhere(self):
        h = assess([row("", 3, 3 * GB), *healthy_summary()], three_stores(), [], NOW, {A, B, C})
        a = only(h, NO_KNOWN_COPY)
        assert a.severity == Severity.CRITICAL
        assert a.message == "3 files (3.0 GB) have no known copy on any store"
        assert "Reconnect" in a.action and "quarantine" in a.action
        assert (a.files, a.bytes, a.store_ids) == (3, 3 * GB, ())
        assert h.alerts[0] is a  # the worst alert comes first
        assert h.exit_code == 2
        assert DISCONNECTED_ONLY_COPY not in codes(h)

    def test_placement_of_only_junk_is_nowhere(self):
        h = assess([row("garbage:1,x", 1, 1)], three_stores(), [], NOW, {A, B, C})
        assert only(h, NO_KNOWN_COPY).files == 1

    def test_non_user_files_recorded_nowhere_are_ignored(self):
        h = assess(
            [row("", 3, 3, origin="cache"), *healthy_summary()], three_stores(), [], NOW, {A, B, C}
        )
        assert h.alerts == ()


# --- DRIVE_FAILURE ---------------------------------------------------------------------


def failing_store(**failure: Any) -> dict:
    f = {"time": NOW - 60, "reason": "corrupt", "corrupt_count": 3, **failure}
    return store(
        B,
        "usb-backup-2",
        drive_serial="WD-WX11A",
        failure=f,
        no_new_copies=True,
        downgraded={"time": NOW - 60, "reason": "corrupt"},
    )


class TestDriveFailure:
    def test_failing_store_raises_a_panic_even_when_durability_is_fine(self):
        stores = [store(A, "a"), failing_store(), store(C, "c"), store(D, "d")]
        summary = [row(pl((A, 1), (B, 0), (C, 1), (D, 1)), 12, 120)]
        h = assess(summary, stores, [], NOW, {A, B, C, D})
        a = only(h, DRIVE_FAILURE)
        assert a.severity == Severity.PANIC
        assert a.acknowledgeable
        assert a.message == (
            "usb-backup-2 (serial WD-WX11A): 3 corrupt copies found; the drive may be failing"
        )
        assert a.action.endswith(f"dmedia-tui store ack {B}")
        assert (a.store_ids, a.files, a.bytes) == ((B,), 12, 120)
        assert codes(h) == [DRIVE_FAILURE]
        assert h.exit_code == 2

    def test_one_corrupt_copy_is_singular(self):
        h = assess([], [failing_store(corrupt_count=1)], [], NOW, {B})
        assert "1 corrupt copy found" in only(h, DRIVE_FAILURE).message

    def test_failure_without_count_names_the_reason(self):
        h = assess([], [failing_store(corrupt_count=None, reason="smart")], [], NOW, {B})
        msg = only(h, DRIVE_FAILURE).message
        assert "marked failing (smart: the drive reports it is failing)" in msg
        h = assess([], [failing_store(corrupt_count=None, reason="io_errors")], [], NOW, {B})
        msg = only(h, DRIVE_FAILURE).message
        assert "marked failing (io_errors: its reads keep failing)" in msg
        h = assess([], [failing_store(corrupt_count=None, reason="odd")], [], NOW, {B})
        assert "marked failing (odd)" in only(h, DRIVE_FAILURE).message

    def test_one_alert_per_failing_store(self):
        other = {**failing_store(), "_id": C, "label": "usb-3"}
        h = assess([], [failing_store(), other, store(A, "a")], [], NOW, {A})
        assert sorted(a.store_ids for a in h.alerts if a.code == DRIVE_FAILURE) == [(B,), (C,)]

    def test_acknowledged_failure_has_no_alert_but_stays_failing(self):
        h = assess([], [failing_store(acknowledged=True)], [], NOW, {B})
        assert DRIVE_FAILURE not in codes(h)
        (r,) = h.store_rows
        assert r.state == StoreState.FAILING
        assert r.failure_acknowledged
        assert r.copies == 0
        assert r.corrupt_count == 3
        assert r.to_json()["failure_acknowledged"] is True

    def test_offline_failing_store_still_alerts(self):
        h = assess([], [failing_store()], [], NOW, set())
        assert only(h, DRIVE_FAILURE).store_ids == (B,)

    def test_non_dict_failure_still_counts_as_failure(self):
        h = assess([], [store(B, "b", failure=True)], [], NOW, {B})
        assert "marked failing (no reason recorded)" in only(h, DRIVE_FAILURE).message
        assert h.store_rows[0].state == StoreState.FAILING


# --- LOW_DURABILITY --------------------------------------------------------------------


class TestLowDurability:
    def test_files_below_two_copies(self):
        summary = [
            row(pl((A, 1)), 300, 30 * GB),
            row(pl((B, 0)), 12, 11 * GB),
            row(pl((A, 1), (B, 1)), 1000, 1),
        ]
        h = assess(summary, three_stores(), [], NOW, {A, B, C})
        a = only(h, LOW_DURABILITY)
        assert a.severity == Severity.INFO
        assert a.message == "312 files (41.0 GB) have fewer than 2 good copies"
        assert a.action == "dmedia-tui is making copies; keep drives connected"
        assert (a.files, a.bytes) == (312, 41 * GB)
        assert h.exit_code == 1

    def test_files_only_on_offline_drives_name_the_place_not_copying(self):
        stores, machines = laptop_setup()
        online = online_store_ids(machines, NOW, TH, {A}, M_STUDIO)
        h = assess([row(pl((B, 1)), 7, GB)], stores, machines, NOW, online, machine_id=M_STUDIO)
        a = only(h, LOW_DURABILITY)
        assert a.action == "Boot kestrel: their only copies are offline"
        # Mixed: some are copyable now, some wait for the laptop.
        summary = [row(pl((B, 1)), 7, GB), row(pl((A, 1)), 3, GB)]
        h = assess(summary, stores, machines, NOW, online, machine_id=M_STUDIO)
        assert only(h, LOW_DURABILITY).action == (
            "Boot kestrel for the 7 files whose only copies are offline; "
            "dmedia-tui is copying the others"
        )

    def test_files_with_no_known_copy_are_not_being_copied(self):
        h = assess([row("", 4, GB)], three_stores(), [], NOW, {A, B, C})
        assert "making copies" not in only(h, LOW_DURABILITY).action

    def test_exactly_two_copies_is_not_low(self):
        h = assess([row(pl((A, 1), (B, 1)), 5, 5)], three_stores(), [], NOW, {A, B, C})
        assert h.alerts == ()
        assert h.exit_code == 0

    def test_one_file(self):
        h = assess([row(pl((A, 1)), 1, 1)], three_stores(), [], NOW, {A, B, C})
        assert only(h, LOW_DURABILITY).message == "1 file (1 Byte) has fewer than 2 good copies"

    def test_threshold_is_configurable(self):
        th = Thresholds(low_durability=3)
        h = assess([row(pl((A, 1), (B, 1)), 5, 5)], three_stores(), [], NOW, {A, B, C}, th)
        assert "fewer than 3 good copies" in only(h, LOW_DURABILITY).message

    def test_non_user_files_are_ignored(self):
        h = assess([row(pl((A, 1)), 5, 5, "render")], three_stores(), [], NOW, {A, B, C})
        assert h.alerts == ()


# --- SHARED_FILESYSTEM, METADATA_INVALID -----------------------------------------------


class TestWarnings:
    def test_shared_filesystem_pair(self):
        h = assess([], three_stores(), [], NOW, {A, B, C}, shared_filesystems=[(B, A)])
        a = only(h, SHARED_FILESYSTEM)
        assert a.severity == Severity.WARNING
        assert a.store_ids == (A, B)
        assert "alpha and beta are on the same filesystem" in a.message
        assert h.exit_code == 1

    def test_one_alert_per_filesystem_and_junk_pairs_skipped(self):
        pairs: Any = [(A, B), (B, A), (A, C), (A, A), (A,), None, (1, 2), [B, C]]
        h = assess([], three_stores(), [], NOW, {A}, shared_filesystems=pairs)
        got = [a.store_ids for a in h.alerts if a.code == SHARED_FILESYSTEM]
        assert got == [tuple(sorted((A, B, C)))]
        assert " and " in only(h, SHARED_FILESYSTEM).message

    def test_separate_filesystems_get_separate_alerts(self):
        stores = [store(x, x[:4]) for x in (A, B, C, E)]
        h = assess([], stores, [], NOW, {A}, shared_filesystems=[(A, B), (C, E)])
        got = [a.store_ids for a in h.alerts if a.code == SHARED_FILESYSTEM]
        assert sorted(got) == sorted([tuple(sorted((A, B))), tuple(sorted((C, E)))])

    def test_shared_with_an_unknown_store(self):
        h = assess([], [store(A, "alpha")], [], NOW, {A}, shared_filesystems=[(A, E)])
        assert f"alpha and {E[:8]} are on" in only(h, SHARED_FILESYSTEM).message

    def test_metadata_invalid(self):
        h = assess(healthy_summary(), three_stores(), [], NOW, {A, B, C}, metadata_problems=4)
        a = only(h, METADATA_INVALID)
        assert a.severity == Severity.WARNING
        assert a.message == "4 documents failed the schema check"
        assert "dmedia/doc/invalid" in a.action
        assert h.exit_code == 1

    @pytest.mark.parametrize("value", [0, -3, None, "7", True])
    def test_no_metadata_alert_without_a_positive_count(self, value: Any):
        h = assess([], [], [], NOW, set(), metadata_problems=value)
        assert METADATA_INVALID not in codes(h)


# --- ordering and exit codes -----------------------------------------------------------


class TestOrderingAndExit:
    def test_alerts_sorted_by_severity_then_code(self):
        stores, machines = laptop_setup()
        stores[0]["failure"] = {"time": NOW, "corrupt_count": 1}
        summary = [row("", 1, TB), row(pl((B, 1)), 1, TB), row(pl((D, 1)), 1, TB)]
        h = assess(
            summary, stores, machines, NOW, {A, D}, metadata_problems=1, shared_filesystems=[(A, D)]
        )
        assert codes(h) == [
            NO_KNOWN_COPY,
            DISCONNECTED_ONLY_COPY,
            DRIVE_FAILURE,
            INSUFFICIENT_STORAGE,
            METADATA_INVALID,
            SHARED_FILESYSTEM,
            LOW_DURABILITY,
        ]
        sev = [a.severity for a in h.alerts]
        assert sev == sorted(sev, reverse=True)

    def test_exit_codes(self):
        def health(*severities: Severity) -> Health:
            return replace(
                assess([], [], [], NOW, set()),
                alerts=tuple(Alert("X", s, "m", "a") for s in severities),
            )

        assert health().exit_code == 0
        assert health(Severity.INFO).exit_code == 1
        assert health(Severity.WARNING, Severity.INFO).exit_code == 1
        assert health(Severity.PANIC, Severity.INFO).exit_code == 2
        assert health(Severity.CRITICAL).exit_code == 2

    def test_healthy_library(self):
        h = assess(healthy_summary(), three_stores(), [], NOW, {A, B, C})
        assert h.alerts == ()
        assert h.exit_code == 0
        assert h.worst is None

    def test_database_offline(self):
        h = database_offline("connection refused", NOW)
        assert codes(h) == [DATABASE_OFFLINE]
        assert h.alerts[0].severity == Severity.CRITICAL
        assert h.alerts[0].message == "Cannot read the library: connection refused"
        assert h.to_json()["histogram"] == {"0": 0, "1": 0, "2": 0, "3": 0}


# --- store rows ------------------------------------------------------------------------


class TestStoreRows:
    def rows(self, stores: list[dict], online: set[str], summary=(), **kw: Any) -> dict:
        h = assess(list(summary), stores, kw.pop("machines", []), NOW, online, **kw)
        return {r.store_id: r for r in h.store_rows}

    def test_states(self):
        stores = [
            store(A, "ok"),
            store(B, "failing", failure={"time": NOW}, downgraded={"time": NOW}),
            store(C, "downgraded", downgraded={"time": NOW, "reason": "stale"}),
            store(D, "nnc", no_new_copies=True),
            store(E, "offline", atime=NOW - DAY),
            store(sid(6), "stale", atime=NOW - DAY - 1),
            store(sid(7), "never-seen", atime=None),
        ]
        rows = self.rows(stores, {A, B, C, D})
        assert {r.label: r.state for r in rows.values()} == {
            "ok": StoreState.OK,
            "failing": StoreState.FAILING,
            "downgraded": StoreState.DOWNGRADED,
            "nnc": StoreState.DOWNGRADED,
            "offline": StoreState.OFFLINE,
            "stale": StoreState.STALE,
            "never-seen": StoreState.STALE,
        }
        assert rows[A].online and not rows[E].online
        assert [rows[x].copies for x in (A, B, C, D)] == [1, 0, 0, 1]

    def test_offline_failing_store_is_failing_not_offline(self):
        rows = self.rows([store(B, "b", failure={"time": NOW}, atime=NOW - 9 * DAY)], set())
        assert rows[B].state == StoreState.FAILING

    def test_totals_from_the_summary(self):
        summary = [
            row(pl((A, 1), (B, 1)), 10, 100),
            row(pl((A, 1)), 5, 50, origin="render"),
            row(pl((B, 0)), 2, 20),
        ]
        rows = self.rows(three_stores(), {A, B, C}, summary)
        assert (rows[A].files, rows[A].bytes, rows[A].user_files) == (15, 150, 10)
        assert (rows[B].files, rows[B].bytes, rows[B].user_files) == (12, 120, 12)
        assert (rows[C].files, rows[C].bytes, rows[C].user_files) == (0, 0, 0)

    def test_machine_name_and_drive_fields(self):
        stores = [
            store(
                A,
                "a",
                machine_id=M_KESTREL,
                removable=True,
                internal=False,
                drive_serial="S1",
                bytes_total=5,
                bytes_avail=2,
            )
        ]
        machines = [machine(M_KESTREL, "kestrel", [A], atime=NOW - 10 * DAY)]
        r = self.rows(stores, set(), machines=machines)[A]
        assert (r.machine_id, r.machine_name) == (M_KESTREL, "kestrel")
        assert (r.removable, r.internal, r.drive_serial) == (True, False, "S1")
        assert (r.bytes_total, r.bytes_avail, r.last_seen) == (5, 2, NOW)

    def test_verification_is_passed_through(self):
        v = VerificationStats(copies=10, never=2, oldest=NOW - 9, median=NOW - 5, newest=NOW)
        rows = self.rows(three_stores(), {A}, verification={A: v})
        assert rows[A].verification is v
        assert rows[B].verification is None

    def test_unknown_store_in_placements_gets_a_row(self):
        rows = self.rows([store(A, "a")], {A}, [row(pl((A, 1), (E, 1)), 3, 30)])
        r = rows[E]
        assert (r.label, r.state, r.copies, r.files, r.user_files) == (
            "(unknown store)",
            StoreState.STALE,
            0,
            3,
            3,
        )

    def test_rows_sorted_by_label_unknown_last(self):
        stores = [store(A, "zeta"), store(B, "Alpha"), store(C, "mid")]
        h = assess([row(pl((E, 1)), 1, 1)], stores, [], NOW, set())
        assert [r.label for r in h.store_rows] == ["Alpha", "mid", "zeta", "(unknown store)"]

    def test_label_falls_back_to_id_prefix(self):
        rows = self.rows([{**store(A, "x"), "label": None}], {A})
        assert rows[A].label == A[:8]


# --- malformed input -------------------------------------------------------------------


class TestMalformed:
    def test_junk_docs_and_rows_never_raise(self):
        stores: list[Any] = [
            None,
            42,
            {},
            {"_id": None},
            {"_id": A},  # nothing but an ID
            {
                "_id": B,
                "copies": "two",
                "atime": "yesterday",
                "bytes_total": None,
                "bytes_avail": [],
                "machine_id": 5,
                "label": 7,
                "removable": "yes",
                "internal": 1,
                "failure": "bad",
                "downgraded": 0,
                "no_new_copies": "no",
                "drive_serial": {},
            },
            {"_id": C, "copies": -4, "atime": float("inf"), "failure": {"corrupt_count": "x"}},
            {"_id": D, "bytes_total": True, "copies": None, "failure": {"acknowledged": "yes"}},
        ]
        machines: list[Any] = [
            None,
            [],
            {"_id": M_STUDIO},
            {"_id": M_KESTREL, "hostname": 3, "atime": NOW, "stores": [A, 9]},
        ]
        summary: list[Any] = [
            None,
            "row",
            row(pl((A, 1)), 2, 20),
            PlacementRow("user", "junk", 1, 1),
            PlacementRow("user", f"{B}:x,{C}:-3,{A}", 1, 1),
            PlacementRow("user", pl((A, 1)), -5, 10),
            PlacementRow("user", pl((A, 1)), 1, -10),
            PlacementRow(None, pl((A, 1)), 1, 1),  # type: ignore[arg-type]
            PlacementRow("user", None, 1, 1),  # type: ignore[arg-type]
            PlacementRow("user", pl((A, 1)), "3", 1.5),  # type: ignore[arg-type]
        ]
        online = online_store_ids(machines, NOW, TH)
        h = assess(
            summary,
            stores,
            machines,
            NOW,
            online,
            shared_filesystems=[("a", "b")],
            verification="nope",
            metadata_problems="many",
        )  # type: ignore[arg-type]
        json.dumps(h.to_json())
        rows = {r.store_id: r for r in h.store_rows}
        assert rows[B].state == StoreState.FAILING  # any truthy failure is a failure
        assert rows[B].copies == 0
        assert rows[B].removable is False and rows[B].internal is False
        assert rows[B].label == B[:8] and rows[B].machine_id is None
        assert rows[A].state == StoreState.OK and rows[A].copies == 1
        assert rows[C].state == StoreState.FAILING and rows[C].last_seen is None
        assert rows[D].failure_acknowledged is False  # "yes" is not True
        assert rows[D].copies == 0
        # The junk placements became "nowhere" / partial: counted, never raised.
        assert h.files == sum(b.files for b in h.histogram)

    def test_duplicate_store_docs_first_wins(self):
        stores = [store(A, "first"), store(A, "second")]
        h = assess([row(pl((A, 1)), 1, 1)], stores, [], NOW, {A})
        assert [r.label for r in h.store_rows] == ["first"]

    def test_online_may_be_any_iterable_or_junk(self):
        h = assess(healthy_summary(), three_stores(), [], NOW, None)  # type: ignore[arg-type]
        assert {r.state for r in h.store_rows} == {StoreState.OFFLINE}


# --- JSON shape ------------------------------------------------------------------------


def test_to_json_shape():
    stores, machines = laptop_setup()
    summary = [row(pl((A, 1), (D, 1)), 4, 400), row(pl((B, 1)), 2, 20)]
    h = assess(summary, stores, machines, NOW, online_store_ids(machines, NOW, TH))
    data = json.loads(json.dumps(h.to_json()))
    assert set(data) >= {"alerts", "histogram", "stores", "files", "bytes"}
    assert data["histogram"] == {"0": 0, "1": 2, "2": 4, "3": 0}
    assert (data["files"], data["bytes"]) == (6, 420)
    alert = next(a for a in data["alerts"] if a["code"] == DISCONNECTED_ONLY_COPY)
    assert alert == {
        "code": DISCONNECTED_ONLY_COPY,
        "severity": "panic",
        "message": "2 files (20 Bytes) are only on laptop-ssd, which is offline",
        "action": "Boot kestrel",
        "store_ids": [B],
        "files": 2,
        "bytes": 20,
    }
    for a in data["alerts"]:
        assert set(a) == {"code", "severity", "message", "action", "store_ids", "files", "bytes"}
        assert a["severity"] in {"info", "warning", "panic", "critical"}
    assert [s["_id"] for s in data["stores"]] == [B, D, A, C]  # by label
    for s in data["stores"]:
        assert {"_id", "label", "state", "online", "machine", "files", "bytes"} <= set(s)
    assert next(s for s in data["stores"] if s["_id"] == B)["state"] == "offline"


# --- invariants (hypothesis) -----------------------------------------------------------

IDS = [A, B, C, D, E]
placements = st.lists(
    st.tuples(st.sampled_from(IDS), st.integers(0, 3)), max_size=4, unique_by=lambda t: t[0]
).map(lambda entries: pl(*entries))
rows_st = st.lists(
    st.builds(
        PlacementRow,
        st.sampled_from(["user", "user", "render", "cache"]),
        placements,
        st.integers(1, 1000),
        st.integers(1, 10**12),
    ),
    max_size=12,
)
stores_st = st.lists(
    st.builds(
        lambda i, avail, flag, age, removable: store(
            IDS[i],
            f"s{i}",
            bytes_avail=avail,
            atime=NOW - age,
            removable=removable,
            internal=not removable,
            machine_id=M_KESTREL,
            **({"failure": {"time": NOW}} if flag == 1 else {}),
            **({"no_new_copies": True} if flag == 2 else {}),
        ),
        st.integers(0, 4),
        st.integers(0, 2 * TB),
        st.integers(0, 3),
        st.integers(0, 10 * DAY),
        st.booleans(),
    ),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(rows_st, stores_st, st.sets(st.sampled_from(IDS)), st.booleans())
def test_invariants(summary, stores, online, kestrel_on):
    machines = [machine(M_KESTREL, "kestrel", [], atime=NOW if kestrel_on else NOW - DAY)]
    h = assess(summary, stores, machines, NOW, online)
    user = [r for r in summary if r.origin == "user"]
    # The histogram accounts for every user file exactly once.
    assert h.files == sum(b.files for b in h.histogram) == sum(r.count for r in user)
    assert h.bytes == sum(b.bytes for b in h.histogram) == sum(r.bytes for r in user)
    # Exit code agrees with the alerts; alerts come worst first.
    sev = [a.severity for a in h.alerts]
    assert sev == sorted(sev, reverse=True)
    want = 0 if not sev else (2 if max(sev) >= Severity.PANIC else 1)
    assert h.exit_code == want
    # File-level alerts never claim more files than exist.
    for code in (DISCONNECTED_ONLY_COPY, NO_KNOWN_COPY, LOW_DURABILITY):
        assert sum(a.files for a in h.alerts if a.code == code) <= h.files
    # Every disconnected alert names only stores that are not online.
    for a in h.alerts:
        if a.code == DISCONNECTED_ONLY_COPY:
            assert a.store_ids and not set(a.store_ids) & online
    # Deterministic, JSON-serialisable.
    assert assess(summary, stores, machines, NOW, online) == h
    json.dumps(h.to_json())


@settings(max_examples=200, deadline=None)
@given(rows_st, stores_st, st.integers(1, 10**12))
def test_more_free_space_never_creates_a_storage_alert(summary, stores, more):
    online = set(IDS)
    before = INSUFFICIENT_STORAGE in codes(assess(summary, stores, [], NOW, online))
    bigger = [{**s, "bytes_avail": s["bytes_avail"] + more} for s in stores]
    after = INSUFFICIENT_STORAGE in codes(assess(summary, bigger, [], NOW, online))
    assert after <= before


def test_alerts_name_the_placement_groups_of_their_files():
    offline_only = pl((B, 1))
    low = pl((A, 1))
    nowhere = ""
    healthy = pl((A, 1), (C, 1))
    summary = [row(offline_only, 2, 20), row(low, 3, 30), row(nowhere, 1, 5), row(healthy, 4, 40)]
    h = assess(summary, three_stores(), [], NOW, {A, C})
    by_code = {a.code: a for a in h.alerts}
    assert by_code[DISCONNECTED_ONLY_COPY].placements == (offline_only,)
    assert by_code[NO_KNOWN_COPY].placements == ("",)
    assert set(by_code[LOW_DURABILITY].placements) == {offline_only, low, nowhere}


@pytest.mark.parametrize(
    ("count", "last_ago", "failure", "expected"),
    [
        (TH.read_error_alert - 1, 0, None, False),  # one short of the threshold
        (TH.read_error_alert, 0, None, True),  # at it: a count nobody flagged
        (TH.read_error_alert, TH.read_error_window, None, True),  # the window's last second
        (TH.read_error_alert, TH.read_error_window + 1, None, False),  # a quiet window since
        # flagged failing (io_errors): DRIVE_FAILURE speaks for it, acknowledged or not
        (TH.read_error_alert, 0, {"time": NOW, "reason": "io_errors", "corrupt_count": 0}, False),
        (
            TH.read_error_alert,
            0,
            {"time": NOW, "reason": "io_errors", "corrupt_count": 0, "acknowledged": True},
            False,
        ),
        # a junk failure mark is failing all the same (StoreView.failing): one banner
        (TH.read_error_alert, 0, "junk", False),
    ],
)
def test_drive_read_errors_banner_only_for_an_unflagged_count(
    count: int, last_ago: int, failure: dict | str | None, expected: bool
) -> None:
    from dmedia_tui.health import DRIVE_READ_ERRORS, store_safety_alerts

    errs = {"count": count, "first": NOW - last_ago - 60, "last": NOW - last_ago}
    doc = store(A, "usb", read_errors=errs, **({"failure": failure} if failure else {}))
    h = store_safety_alerts(assess([], [doc], [], NOW, {A}, TH), {}, [doc], NOW, TH)
    codes = [a.code for a in h.alerts]
    assert (DRIVE_READ_ERRORS in codes) is expected
    assert codes.count(DRIVE_READ_ERRORS) <= 1
