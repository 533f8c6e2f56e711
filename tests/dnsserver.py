"""A small authoritative DNS responder on loopback, for tests of MX, address and DMARC lookups.

It runs in background threads (UDP and TCP on the same ephemeral port), so sync and asyncio
tests alike can point a `clublist.dns.Resolver(["127.0.0.1"], port=server.port)` at it.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterable, Mapping

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def _under(name: str, domains: Iterable[str]) -> bool:
    return any(name == domain or name.endswith("." + domain) for domain in domains)


class DNSServer:
    """Answers from a zone dict: {(name, type): [rdata text, ...]}.

    Names are absolute without the trailing dot; TXT values may be given unquoted. A name
    absent from every record (and not a parent of one) gets NXDOMAIN; a present name asked
    for another type gets an empty NOERROR answer. Names at or under `servfail` get
    SERVFAIL; at or under `hang` get no answer at all. Every query is recorded in `queries`.
    """

    def __init__(
        self,
        records: Mapping[tuple[str, str], Iterable[str]] | None = None,
        *,
        servfail: Iterable[str] = (),
        hang: Iterable[str] = (),
        ttl: int = 300,
    ) -> None:
        self.records = {
            (_key(name), rdtype.upper()): list(values) for (name, rdtype), values in (records or {}).items()
        }
        self.servfail = {_key(name) for name in servfail}
        self.hang = {_key(name) for name in hang}
        self.ttl = ttl
        self.queries: list[tuple[str, str]] = []
        self.port = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    def count(self, name: str, rdtype: str | None = None) -> int:
        """How many queries asked for `name` (of `rdtype`, if given)."""
        with self._lock:
            return sum(1 for qname, qtype in self.queries if qname == _key(name) and rdtype in (None, qtype))

    def answer(self, wire: bytes) -> bytes | None:
        """The response to one query in wire format, or None to stay silent."""
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries.append((name, rdtype))
        if _under(name, self.hang):
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        values = self.records.get((name, rdtype))
        if _under(name, self.servfail):
            response.set_rcode(dns.rcode.SERVFAIL)
        elif values:
            rdatas = [
                dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, _rdata_text(rdtype, v))
                for v in values
            ]
            response.answer.append(dns.rrset.from_rdata_list(question.name, self.ttl, rdatas))
        elif not any(_under(known, [name]) for known, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    def start(self) -> DNSServer:
        """Bind UDP and TCP on one free port of 127.0.0.1 and serve in daemon threads."""
        for _ in range(20):
            udp = _UDPServer(("127.0.0.1", 0), _UDPHandler, self)
            try:
                tcp = _TCPServer(("127.0.0.1", udp.server_address[1]), _TCPHandler, self)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise OSError("no port free for both UDP and TCP on 127.0.0.1")
        self.port = udp.server_address[1]
        self._stopped.clear()
        self._servers = [udp, tcp]
        self._threads = [
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
            for server in self._servers
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()
        self._servers, self._threads = [], []

    def __enter__(self) -> DNSServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _rdata_text(rdtype: str, value: str) -> str:
    """TXT values longer than one DNS string (255 octets, e.g. a DKIM key) become several."""
    if rdtype == "TXT" and not value.startswith('"'):
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
        return " ".join('"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in chunks)
    return value


class _UDPServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type, dns_server: DNSServer) -> None:
        self.dns_server = dns_server
        super().__init__(address, handler)


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type, dns_server: DNSServer) -> None:
        self.dns_server = dns_server
        super().__init__(address, handler)


class _UDPHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.dns_server.answer(data)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TCPHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        dns_server: DNSServer = self.server.dns_server
        sock: socket.socket = self.request
        while len(header := sock.recv(2, socket.MSG_WAITALL)) == 2:
            (length,) = struct.unpack("!H", header)
            reply = dns_server.answer(sock.recv(length, socket.MSG_WAITALL))
            if reply is None:  # hang: hold the connection open, silent, until stopped
                dns_server._stopped.wait()
                return
            sock.sendall(struct.pack("!H", len(reply)) + reply)
