"""The ``cp1047`` codec (EBCDIC Latin-1 "open systems"), which Python does not ship.

z/OS and Model 204 peers commonly speak IBM-1047 rather than IBM-037. The two differ in
six code points: ``[ ] ^ ¬ Ý ¨``. Like ``cp037`` (and glibc's ``iconv``, ICU and Java),
LF is 0x25 and NEL 0x15; z/OS UNIX text files use 0x15 as their newline (ICU's
``swaplfnl`` variant), so a peer that means 0x15 by "newline" should get ``line_end`` as
raw bytes (``b"\x15"``), which is what ``send_line`` sends anyway. The table is built from
Python's own ``cp037`` with the six swaps instead of being copied in full, so the
difference stays auditable. The codec is
registered under ``cp1047`` and ``ibm1047`` only when Python does not already know it.
"""

from __future__ import annotations

import codecs
import encodings.cp037
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["register"]

#: byte -> character where IBM-1047 differs from IBM-037 (IBM CDRA tables).
CP1047_OVERRIDES: Final = {
    0x5F: "^",
    0xAD: "[",
    0xB0: "\xac",
    0xBA: "\xdd",
    0xBB: "\xa8",
    0xBD: "]",
}
_NAMES: Final = frozenset({"cp1047", "ibm1047", "ibm_1047", "1047"})


def _decoding_table() -> str:
    table = list(encodings.cp037.decoding_table)
    for byte, char in CP1047_OVERRIDES.items():
        table[byte] = char
    return "".join(table)


DECODING_TABLE: Final = _decoding_table()
ENCODING_TABLE: Final = codecs.charmap_build(DECODING_TABLE)


def _encode(text: str, errors: str = "strict") -> tuple[bytes, int]:
    return codecs.charmap_encode(text, errors, ENCODING_TABLE)


def _decode(data: Buffer, errors: str = "strict") -> tuple[str, int]:
    return codecs.charmap_decode(bytes(data), errors, DECODING_TABLE)


class _IncrementalEncoder(codecs.IncrementalEncoder):
    def encode(self, input: str, final: bool = False) -> bytes:
        return codecs.charmap_encode(input, self.errors, ENCODING_TABLE)[0]


class _IncrementalDecoder(codecs.IncrementalDecoder):
    def decode(self, input: Buffer, final: bool = False) -> str:
        return codecs.charmap_decode(bytes(input), self.errors, DECODING_TABLE)[0]


def _search(name: str) -> codecs.CodecInfo | None:
    if name.replace("-", "_").lower() not in _NAMES:
        return None
    return codecs.CodecInfo(
        name="cp1047",
        encode=_encode,
        decode=_decode,
        incrementalencoder=_IncrementalEncoder,
        incrementaldecoder=_IncrementalDecoder,
    )


def register() -> None:
    """Make ``"cp1047"`` available to ``str.encode``/``bytes.decode`` (idempotent)."""
    try:
        codecs.lookup("cp1047")
    except LookupError:
        codecs.register(_search)
