"""LAN discovery of peers over mDNS/DNS-SD (`_dmedia-tui._tcp`), with python-zeroconf.

Machine docs (the heartbeat) already carry every machine's addresses; this only makes a
laptop that changed its IP on the LAN findable before its next heartbeat reaches the
library. Nothing found here is trusted: an address is only a place to try, and the
client pins the certificate to the fingerprint in the machine doc, so a spoofed record
costs one failed handshake and nothing more.

Each machine registers `<machine_id>._dmedia-tui._tcp.local.` with its port and a TXT
record `{machine_id, fp}`, and browses for the others. Registration probes the network
for ~1.5 s, so it runs in a background thread and start() returns at once. It can be
turned off (`[peer] discovery = false`); tests use it on loopback only.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ifaddr
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from dmedia_tui import protocol

log = logging.getLogger("dmedia_tui.peer.discovery")

SERVICE_TYPE = "_dmedia-tui._tcp.local."


@dataclass(frozen=True)
class Found:
    """A machine seen on the LAN: what it says about itself (not trusted by itself)."""

    machine_id: str
    fingerprint: str
    addresses: tuple[str, ...]  # "host:port"


def local_ipv4() -> list[str]:
    """This machine's IPv4 addresses, loopback excluded (what a LAN peer can reach)."""
    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                out.append(ip.ip)
    return sorted(set(out))


def _fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Discovery:
    """Advertise this machine and browse for the others; found() is thread-safe."""

    def __init__(
        self,
        machine_id: str,
        fingerprint: str,
        port: int,
        *,
        interfaces: Sequence[str] | None = None,
        addresses: Sequence[str] | None = None,
    ) -> None:
        self.machine_id = protocol.check_id(machine_id, protocol.RANDOM_B32LEN, "machine ID")
        self.fingerprint = fingerprint
        self.port = port
        self.interfaces = list(interfaces) if interfaces is not None else None
        self.addresses = list(addresses) if addresses is not None else None
        self._zc: Zeroconf | None = None
        self._browser: ServiceBrowser | None = None
        self._info: ServiceInfo | None = None
        self._names: set[str] = set()
        self._lock = threading.Lock()
        self._registered = threading.Event()

    def start(self) -> None:
        """Open the mDNS sockets and start browsing; registration goes on in the
        background. Raises OSError when the sockets cannot be opened."""
        kwargs: dict[str, Any] = {"ip_version": IPVersion.V4Only}
        if self.interfaces is not None:
            kwargs["interfaces"] = self.interfaces
        self._zc = Zeroconf(**kwargs)
        ips = self.addresses or self.interfaces or local_ipv4()
        own = [socket.inet_aton(a) for a in ips]
        self._info = ServiceInfo(
            SERVICE_TYPE,
            f"{self.machine_id}.{SERVICE_TYPE}",
            port=self.port,
            properties={"machine_id": self.machine_id, "fp": self.fingerprint},
            addresses=own,
            server=f"{self.machine_id.lower()}.local.",
        )
        self._browser = ServiceBrowser(self._zc, SERVICE_TYPE, handlers=[self._on_change])
        threading.Thread(target=self._register, name="dmedia-mdns", daemon=True).start()

    def _register(self) -> None:
        zc, info = self._zc, self._info
        if zc is None or info is None:
            return
        try:
            zc.register_service(info, allow_name_change=False)
        except Exception as e:  # no usable interface, name clash, closed meanwhile
            log.warning("mDNS registration failed: %s", e)
            return
        self._registered.set()

    def wait_registered(self, timeout: float) -> bool:
        return self._registered.wait(timeout)

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        with self._lock:
            if state_change is ServiceStateChange.Removed:
                self._names.discard(name)
            else:
                self._names.add(name)

    def found(self, resolve_timeout: float = 0.5) -> dict[str, Found]:
        """{machine_id: Found} of the other machines seen (never this one)."""
        zc = self._zc
        if zc is None:
            return {}
        with self._lock:
            names = sorted(self._names)
        out: dict[str, Found] = {}
        for name in names:
            info = ServiceInfo(SERVICE_TYPE, name)
            if not info.load_from_cache(zc):
                with contextlib.suppress(Exception):
                    info.request(zc, int(resolve_timeout * 1000))
            props = {
                (k.decode() if isinstance(k, bytes) else k): (
                    v.decode() if isinstance(v, bytes) else v
                )
                for k, v in (info.properties or {}).items()
            }
            mid, fp = props.get("machine_id"), props.get("fp")
            if not protocol.is_store_id(mid) or mid == self.machine_id or not info.port:
                continue
            addrs = tuple(_fmt(a, info.port) for a in info.parsed_addresses())
            if addrs and isinstance(fp, str):
                out[mid] = Found(mid, fp, addrs)
        return out

    def stop(self) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        if self._browser is not None:
            with contextlib.suppress(Exception):
                self._browser.cancel()
        if self._registered.is_set() and self._info is not None:
            with contextlib.suppress(Exception):
                zc.unregister_service(self._info)
        with contextlib.suppress(Exception):
            zc.close()
