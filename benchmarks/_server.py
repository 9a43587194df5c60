"""The benchmark server: its own process (``spawn``), blocking sockets, one client at a time.

Protocol (one command per connection, sent by the client as a line):

* ``RECORDS <variant> <count>`` -- the server streams ``count`` pre-generated records of
  ``variant`` (``one``: every record ends in ``\\r\\n``; ``three``: records end randomly in
  ``\\r\\n``, ``\\n`` or ``|``; ``framed``: a hex length line, then the record and
  ``\\r\\n``), then closes.
* TLS bulk, on a second port: on connect the server sends a greeting line; the client
  answers ``STARTTLS <nbytes>``; the server replies ``220 go ahead``, does the TLS
  handshake server-side (trustme certificate), sends ``nbytes`` bytes whose last bytes are
  :data:`BULK_TRAILER`, and closes.

The server is deliberately simple and fast (``sendall`` of pre-built payloads), so the
client in the parent process is the only thing being measured.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import ssl
import tempfile
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Final

#: Record bodies are drawn from these bytes only, so no token can occur inside a body and
#: every reader (including the hand-written ones) has one right answer.
ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,:;-_=+/"
#: Fixed seed: every run, and both processes, see exactly the same records.
SEED: Final = 20240611
TOKENS_ONE: Final = (b"\r\n",)
TOKENS_THREE: Final = (b"\r\n", b"\n", b"|")
GREETING: Final = b"220 janusnet-bench ready\r\n"
GO_AHEAD: Final = b"220 go ahead\r\n"
#: The bulk payload ends with this, so a client that stops short or reads garbage notices.
BULK_TRAILER: Final = b"--janusnet-bench-end--"
BULK_CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class RecordSet:
    """A pre-generated record stream and what a correct reader must find in it."""

    payload: bytes
    count: int
    data_bytes: int
    token_bytes: int
    first: bytes
    last: bytes


def make_records(variant: str, count: int) -> RecordSet:
    """Build ``count`` records of 40-88 body bytes (mean ~64 with the token), seeded.

    ``framed``: each body is sent as a hex length line, the body and ``\r\n`` (HTTP/1.1
    chunked framing); the bodies' bytes are ``data_bytes``.
    """
    rng = random.Random(f"{SEED}-{variant}-{count}")
    tokens = TOKENS_ONE if variant == "one" else TOKENS_THREE
    # A pool of bodies keeps generation fast; the choice of body and token per record is
    # still random, so record boundaries fall everywhere relative to TCP segments.
    pool = [bytes(rng.choice(ALPHABET) for _ in range(rng.randint(40, 88))) for _ in range(997)]
    parts: list[bytes] = []
    bodies: list[bytes] = []
    data_bytes = token_bytes = 0
    choose = rng.choice
    for _ in range(count):
        body = choose(pool)
        token = choose(tokens)
        if variant == "framed":
            parts.append(b"%x\r\n" % len(body))
            token = b"\r\n"
        parts.append(body)
        parts.append(token)
        bodies.append(body)
        data_bytes += len(body)
        token_bytes += len(token)
    return RecordSet(
        payload=b"".join(parts),
        count=count,
        data_bytes=data_bytes,
        token_bytes=token_bytes,
        first=bodies[0],
        last=bodies[-1],
    )


def bulk_payload(nbytes: int) -> bytes:
    """``nbytes`` of filler ending in :data:`BULK_TRAILER`."""
    filler = max(nbytes - len(BULK_TRAILER), 0)
    return (bytes(range(256)) * (filler // 256 + 1))[:filler] + BULK_TRAILER


def _read_line(conn: socket.socket) -> bytes:
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            break
        line += byte
    return bytes(line).strip()


def _serve_records(conn: socket.socket, records: dict[tuple[str, int], bytes]) -> None:
    _, variant, count = _read_line(conn).split()
    key = (variant.decode(), int(count))
    if key not in records:
        records[key] = make_records(*key).payload
    conn.sendall(records[key])


def _serve_tls(conn: socket.socket, bulk: dict[int, bytes], tls_context: ssl.SSLContext) -> None:
    conn.sendall(GREETING)
    command = _read_line(conn).split()
    if not command or command[0] != b"STARTTLS":
        return
    nbytes = int(command[1])
    if nbytes not in bulk:
        bulk[nbytes] = bulk_payload(nbytes)
    conn.sendall(GO_AHEAD)
    with tls_context.wrap_socket(conn, server_side=True) as tls:
        view = memoryview(bulk[nbytes])
        for start in range(0, nbytes, BULK_CHUNK):
            tls.sendall(view[start : start + BULK_CHUNK])


def server_process_setup(cert_chain_pem: bytes, cpu: int | None) -> ssl.SSLContext:
    """In a server process: pin it to ``cpu`` (when given), return its TLS context."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})
    with tempfile.NamedTemporaryFile(suffix=".pem", delete=False) as pem:
        pem.write(cert_chain_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pem.name)
    os.unlink(pem.name)
    return context


def serve(pipe: Connection, cert_chain_pem: bytes, cpu: int | None) -> None:
    """Listen on loopback, report the port through ``pipe``, serve until told to stop."""
    tls_context = server_process_setup(cert_chain_pem, cpu)
    records: dict[tuple[str, int], bytes] = {}
    bulk: dict[int, bytes] = {}
    records_listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    tls_listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    pipe.send((records_listener.getsockname()[1], tls_listener.getsockname()[1]))
    with records_listener, tls_listener:
        while not pipe.poll():
            ready, _, _ = select.select([records_listener, tls_listener], [], [], 0.2)
            for listener in ready:
                conn, _ = listener.accept()
                with conn:
                    try:
                        if listener is records_listener:
                            _serve_records(conn, records)
                        else:
                            _serve_tls(conn, bulk, tls_context)
                    except (OSError, ValueError, IndexError):
                        pass  # a client that gave up early; it reports its own failure
