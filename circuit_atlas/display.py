"""Tokens as a reader should see them.

Tokens print as Python strings (' Austin'), except those that are not text on their own: a byte
of a multi-byte character or a control character prints as its bytes, <0xE5 0xA4>, instead of
'\ufffd' or '\\x12'.
"""

from __future__ import annotations

import re
from functools import cache

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SENTENCEPIECE_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, inverted: the character each byte is written as -> the byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


def _token_bytes(piece: str) -> bytes | None:
    """The raw bytes of a vocabulary piece (byte-level BPE or SentencePiece <0x..>), None if unknown."""
    byte_pieces = _SENTENCEPIECE_BYTE.findall(piece)
    if byte_pieces and _SENTENCEPIECE_BYTE.sub("", piece) == "":
        return bytes(int(h, 16) for h in byte_pieces)
    table = _byte_decoder()
    if piece and all(c in table for c in piece):
        return bytes(table[c] for c in piece)
    return None


def show_text(text: str) -> str:
    """repr of a decoded token, with control characters as <0x..> bytes."""
    if _CONTROL.search(text):
        return "<" + " ".join(f"0x{b:02X}" for b in text.encode("utf-8")) + ">"
    return repr(text)


def display_token(tokenizer, token_id: int) -> str:
    """A token as a reader should see it: ' Austin', or <0xE5 0xA4> for a piece that is not text alone."""
    text = tokenizer.decode([int(token_id)])
    if "\ufffd" not in text:
        return show_text(text)
    raw = _token_bytes(tokenizer.convert_ids_to_tokens(int(token_id)) or "")
    return "<" + " ".join(f"0x{b:02X}" for b in raw) + ">" if raw else repr(text)
