"""What one authorizer container remembers between requests to feed the risk signals (see bulwark.auth.risk).

Per container and bounded in size. A key's networks are also persisted on its record (written only when a new network
appears), so "new network" holds across containers; volume and failure counts are this container's view, which is a
sample of the traffic — good enough to notice a surge, and documented as such.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict
from dataclasses import dataclass

_MAX_PRINCIPALS = 10_000
_EWMA_ALPHA = 0.3


def network_of(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network an address belongs to; the address itself if unparsable."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


@dataclass
class _Volume:
    minute: int
    count: int
    average: float | None


class RiskMemory:
    def __init__(self) -> None:
        self._volume: OrderedDict[str, _Volume] = OrderedDict()
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def count_request(self, principal: str, now: float) -> tuple[int, float | None]:
        """Count one request; returns (requests this minute, ratio to the recent per-minute average or None)."""
        minute = int(now // 60)
        with self._lock:
            v = self._volume.get(principal)
            if v is None:
                v = _Volume(minute, 0, None)
            elif v.minute != minute:
                # Fold finished minutes (idle minutes count as zero) into the average.
                avg = v.count if v.average is None else v.average
                avg = (1 - _EWMA_ALPHA) * avg + _EWMA_ALPHA * v.count
                for _ in range(min(minute - v.minute - 1, 30)):
                    avg *= 1 - _EWMA_ALPHA
                v = _Volume(minute, 0, avg)
            v.count += 1
            self._volume[principal] = v
            self._volume.move_to_end(principal)
            while len(self._volume) > _MAX_PRINCIPALS:
                self._volume.popitem(last=False)
            ratio = None if not v.average else v.count / max(v.average, 1.0)
            return v.count, ratio

    def record_failure(self, ip: str, now: float) -> None:
        with self._lock:
            stamps = self._failures.setdefault(ip, [])
            stamps.append(now)
            del stamps[:-50]
            self._failures.move_to_end(ip)
            while len(self._failures) > _MAX_PRINCIPALS:
                self._failures.popitem(last=False)

    def failures(self, ip: str, now: float, window: float) -> int:
        with self._lock:
            return sum(1 for t in self._failures.get(ip, ()) if now - t <= window)
