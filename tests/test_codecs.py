"""The cp1047 codec janusnet registers, and an EBCDIC exchange over a real socket."""

from __future__ import annotations

import codecs
import io

import pytest
from anyio.abc import SocketStream

import janusnet
from janusnet import ClientPort, Socket
from loopback import serve


@pytest.mark.parametrize(
    ("char", "byte"),
    [
        ("[", 0xAD),
        ("]", 0xBD),
        ("^", 0x5F),
        ("\xac", 0xB0),
        ("\xdd", 0xBA),
        ("\xa8", 0xBB),
        ("\n", 0x25),  # as glibc iconv, ICU and cp037; 0x15 is NEL (z/OS UNIX swaps them)
        ("\x85", 0x15),
        ("A", 0xC1),
        ("0", 0xF0),
        (" ", 0x40),
        (":", 0x7A),
    ],
    ids=repr,
)
def test_cp1047_code_points(char: str, byte: int) -> None:
    assert char.encode("cp1047") == bytes([byte])
    assert bytes([byte]).decode("cp1047") == char


def test_cp1047_is_a_bijection_over_all_bytes() -> None:
    every = bytes(range(256))
    assert every.decode("cp1047").encode("cp1047") == every
    assert len(set(every.decode("cp1047"))) == 256
    assert janusnet.ClientPort(encoding="ibm-1047").encoding == "ibm-1047"


def test_cp1047_incremental_codecs_and_text_streams() -> None:
    """The incremental encoder and decoder (what ``io.TextIOWrapper`` and
    ``codecs.iterdecode`` use) give what the one-shot codec gives, with their errors."""
    text = "CONNECT [::1]:443 HTTP/1.0\n^\xac"
    data = text.encode("cp1047")
    encoder = codecs.getincrementalencoder("cp1047")()
    assert b"".join(encoder.encode(char) for char in text) + encoder.encode("", True) == data
    decoder = codecs.getincrementaldecoder("cp1047")()
    pieces = [decoder.decode(data[i : i + 1]) for i in range(len(data))]
    assert "".join(pieces) + decoder.decode(b"", True) == text
    assert "".join(codecs.iterdecode([data[:5], data[5:]], "cp1047")) == text
    assert io.TextIOWrapper(io.BytesIO(data), encoding="cp1047", newline="").read() == text
    replacing = codecs.getincrementalencoder("cp1047")(errors="replace")
    assert replacing.encode("A\u20acB") == "A?B".encode("cp1047")
    with pytest.raises(UnicodeEncodeError):
        codecs.getincrementalencoder("cp1047")().encode("\u20ac")


@pytest.mark.anyio
async def test_cp1047_connect_line_round_trip(anyio_backend: str) -> None:
    line = "CONNECT [::1]:443 HTTP/1.0"
    seen: list[bytes] = []

    async def peer(stream: SocketStream) -> None:
        data = b""
        while not data.endswith(b"\r\n"):
            data += await stream.receive()
        seen.append(data)
        await stream.send("HTTP/1.0 200 OK".encode("cp1047") + b"\r\n")

    async with serve(peer) as number:
        port = ClientPort("EBCDIC", encoding="cp1047")
        async with await Socket.connect("127.0.0.1", number, client_port=port) as sock:
            await sock.send_line(line)
            reply = await sock.recv_parsed()
    assert seen == [line.encode("cp1047") + b"\r\n"]
    assert seen[0][8] == 0xAD and seen[0][12] == 0xBD  # '[' and ']' as IBM-1047 has them
    assert sock.decode(reply.data) == "HTTP/1.0 200 OK"


def test_cp1047_matches_the_system_iconv_table() -> None:
    """The whole table against glibc's ``IBM1047`` (skipped where iconv lacks it)."""
    import shutil
    import subprocess

    iconv = shutil.which("iconv")
    if iconv is None:
        pytest.skip("no iconv here")
    every = bytes(range(256))
    done = subprocess.run(
        [iconv, "-f", "IBM1047", "-t", "UTF-8"], input=every, capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip("iconv does not know IBM1047 here")
    assert every.decode("cp1047") == done.stdout.decode("utf-8")
