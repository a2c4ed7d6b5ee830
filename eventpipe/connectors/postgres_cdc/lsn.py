"""Log sequence numbers: PostgreSQL's ``X/Y`` text form <-> integers."""

from __future__ import annotations


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> int.  Raises ValueError on anything else."""
    hi, sep, lo = text.partition("/")
    if not sep:
        raise ValueError(f"{text!r} is not an LSN (expected X/Y in hex)")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(value: int) -> str:
    """int -> ``'16/B374D848'`` (upper-case hex, as PostgreSQL prints it)."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
