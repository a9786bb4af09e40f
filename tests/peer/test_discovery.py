"""mDNS discovery on loopback only: two machines find each other's address and port."""

from __future__ import annotations

import time

from dmedia_tui import protocol
from dmedia_tui.peer.discovery import Discovery


def test_two_machines_find_each_other_on_loopback() -> None:
    a_id, b_id = protocol.random_id(), protocol.random_id()
    a = Discovery(a_id, "a" * 64, 41001, interfaces=["127.0.0.1"])
    b = Discovery(b_id, "b" * 64, 41002, interfaces=["127.0.0.1"])
    a.start()
    b.start()
    try:
        assert a.wait_registered(15) and b.wait_registered(15)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            fa, fb = a.found(), b.found()
            if b_id in fa and a_id in fb:
                break
            time.sleep(0.2)
        assert fa[b_id].fingerprint == "b" * 64
        assert fa[b_id].addresses == ("127.0.0.1:41002",)
        assert fb[a_id].addresses == ("127.0.0.1:41001",)
        assert a_id not in fa  # never itself
    finally:
        a.stop()
        b.stop()
    assert a.found() == {}
