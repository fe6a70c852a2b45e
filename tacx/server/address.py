"""Where the server listens: `--listen HOST:PORT` read, and its socket bound before anything
starts, so a bad address, a port in use or a refusal is one line and exit 2, with no
coordinator started and no screen taken.

Loopback is the default: `--listen 8080` and `--listen :8080` mean 127.0.0.1:8080. Any other
address reaches beyond this machine, which `exposed` tells the caller to say loudly."""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"
BACKLOG = 128


class ListenError(Exception):
    """The address cannot be listened on: a sentence for a person."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @property
    def exposed(self) -> bool:
        """Reachable from other machines: anything but a loopback address or localhost."""
        if self.host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: whatever it resolves to may be reachable
            return True

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}"


def parse_listen(text: str) -> Address:
    """HOST:PORT, [IPv6]:PORT, :PORT or PORT; port 0 picks a free one."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ListenError(f"--listen {text!r}: an IPv6 address is written [ADDRESS]:PORT, e.g. [::1]:8080")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ListenError(f"--listen {text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ListenError(f"--listen {text!r}: write an IPv6 address in brackets, e.g. [::1]:8080")
        host = host or LOOPBACK
    else:
        host, port_text = LOOPBACK, text
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ListenError(f"--listen {text!r}: the port is a number from 0 to 65535 (0 picks a free one)")
    if not host or any(c.isspace() or c in "/@?#" for c in host):
        raise ListenError(f"--listen {text!r}: {host!r} is not a host name or address")
    return Address(host, int(port_text))


def bind(address: Address) -> socket.socket:
    """A listening socket on `address` (the first address its host resolves to), or a
    ListenError that says why not."""
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"--listen {address.host}: no such host or address ({exc.strerror})") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = address.url().removeprefix("http://")
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"cannot listen on {where}: the port is in use (another tacx? pick another port, or 0 for a free one)") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ListenError(f"cannot listen on {where}: permission denied (ports below 1024 need privileges; pick a higher one)") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ListenError(f"cannot listen on {where}: that address is not one of this machine's") from None
        raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return sock


def bound_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Listener:
    """An address and the socket bound to it, made before the coordinator starts."""

    address: Address
    sock: socket.socket

    @property
    def url(self) -> str:
        return self.address.url(bound_port(self.sock))

    def close(self) -> None:
        self.sock.close()

    def warning(self) -> str | None:
        """What to say loudly when the port is reachable from other machines."""
        if not self.address.exposed:
            return None
        return (f"WARNING: listening on {self.url}, which other machines can reach: anyone who can reach"
                " this port and has the token can start work on this machine (submit tasks that run"
                " commands). Listen on 127.0.0.1 unless that is what you mean.")


def listen(text: str) -> Listener:
    """`--listen TEXT` parsed and bound (ListenError when it cannot be)."""
    address = parse_listen(text)
    return Listener(address, bind(address))
