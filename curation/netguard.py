"""Address policy for fetching: which URLs and peers may be contacted.

Pure decisions over plain values (no sockets here): the fetch worker resolves a host, then
asks ``check_ip`` about every address before it connects, on the first request and on every
redirect hop. A refusal is a ``Blocked`` error whose reason becomes the sample's status.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

WEB_SCHEMES = ("http", "https")


class Blocked(OSError):
    """A request the policy refuses; ``reason`` is the sample reason recorded for it."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        # The marker survives urllib wrapping the error into URLError text.
        super().__init__(f"counteranimal:{reason}: {detail}")


@dataclass(frozen=True)
class NetPolicy:
    allowed_networks: tuple[str, ...] = ()      # CIDRs exempt from the private-address rule
    file_root: str | None = None                # file:// allowed only under this folder
    _nets: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_networks)
        object.__setattr__(self, "_nets", nets)

    def check_scheme(self, scheme: str, url: str = "") -> None:
        scheme = (scheme or "").lower()
        if scheme in WEB_SCHEMES:
            return
        if scheme == "file" and self.file_root is not None:
            return
        raise Blocked("unsupported_scheme", f"only http(s) URLs are fetched, not {scheme or 'no'}:// ({url})")

    def check_ip(self, ip: str, host: str = "") -> None:
        """Refuse non-public addresses unless an allowed network covers them."""
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
        if getattr(addr, "ipv4_mapped", None):
            addr = addr.ipv4_mapped
        if any(addr in net for net in self._nets):
            return
        if not is_public(addr):
            raise Blocked("blocked_address",
                          f"{host or ip} resolves to {addr}, a non-public address (allow it with fetch.allowed_networks)")

    def check_file(self, path: str) -> str:
        """Return the real path of a file:// target when it lies under the source folder."""
        if self.file_root is None:
            raise Blocked("unsupported_scheme", f"file:// URLs are read only from a folder source ({path})")
        root = os.path.realpath(self.file_root)
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root:
            raise Blocked("blocked_path", f"{path} is outside the source folder {root}")
        return real


def is_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
                or addr.is_reserved or addr.is_unspecified or not addr.is_global)
