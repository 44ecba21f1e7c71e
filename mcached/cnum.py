"""memcached's number readers, as C reads them: libc's ``atoi`` and ``atof``, and util.c's
``safe_strtoul``, ``safe_strtol`` and ``safe_strtod``, on text. The command line
(`mcached.settings`) and the text protocol's few floating-point arguments
(`mcached.protocol.parser`) read numbers with them, so both read ``0x1p-2``, ``5x`` or
``1e999`` as memcached does."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

_C_SPACE = " \t\n\v\f\r"
_LEAD_INT = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
# what glibc's strtod reads (C locale): blanks, a sign, then a decimal or hex number, an
# infinity or a NaN
_LEAD_FLOAT = re.compile(
    r"[ \t\n\v\f\r]*([+-]?(?:0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)"
    r"(?:[pP][+-]?[0-9]+)?|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|(?i:inf(?:inity)?|nan(?:\([0-9A-Za-z_]*\))?)))"
)
_DBL_MIN = 2.2250738585072014e-308  # the least normal double
_INT64 = 2**63
_UINT64 = 2**64
_UINT32 = 2**32


def decimal(digits: str | bytes) -> int:
    """``int()`` of an optionally signed run of ASCII digits, however long. CPython refuses a
    string of more than 4,300 digits (``sys.get_int_max_str_digits``), and such a token in a
    request closed its connection, where C's strtoul reads any number of leading zeros; a
    number of more than 20 significant digits is past every range memcached reads, so it
    comes back as 10**20, of its sign (past them too: the readers' ERANGE)."""
    if len(digits) <= 20:
        return int(digits)
    text = digits.decode("ascii") if isinstance(digits, bytes) else digits
    body = text.lstrip("+-").lstrip("0")
    value = int(body or "0") if len(body) <= 20 else 10**20
    return -value if text[:1] == "-" else value


def int32(value: int) -> int:
    """A number as a C int holds it (strtol's long, stored in 32 bits)."""
    value = max(-_INT64, min(_INT64 - 1, value))
    return ((value + 2**31) % _UINT32) - 2**31


def _strtod(text: str) -> tuple[float, bool]:
    """The value of a number `_LEAD_FLOAT` matched, and whether strtod would set ERANGE:
    a finite number past the doubles (then inf), or one that rounds to a subnormal or to
    zero without being exactly that."""
    sign = -1.0 if text[0] == "-" else 1.0
    body = text.lstrip("+-").lower()
    if body[0] in "in":
        return math.copysign(math.inf if body[0] == "i" else math.nan, sign), False
    if body.startswith("0x"):
        try:
            value = float.fromhex(body)
        except OverflowError:
            return sign * math.inf, True
        mantissa, _, exp = body[2:].partition("p")
        whole, _, frac = mantissa.partition(".")
        digits = int(whole + frac or "0", 16)
        exact = Fraction(digits, 16 ** len(frac)) * Fraction(2) ** int(exp or "0")
        inexact = value < _DBL_MIN and digits and (not value or exact != Fraction(value))
        return sign * value, bool(inexact)
    value = float(body)
    if math.isinf(value):
        return sign * value, True
    return sign * value, value < _DBL_MIN and Decimal(body) != Decimal(value)


def c_atoi(raw: str) -> int:
    """libc's ``atoi``: leading blanks and a sign, the digits up to the first other
    character, 0 when there are none; kept in a C int."""
    m = _LEAD_INT.match(raw)
    return int32(decimal(m.group(1))) if m else 0


def c_atof(raw: str) -> float:
    """libc's ``atof``: the number ``strtod`` reads at the start, 0.0 when there is none
    (``1.5x`` is 1.5, ``0x2`` is 2.0, ``1e999`` is inf)."""
    m = _LEAD_FLOAT.match(raw)
    return _strtod(m.group(1))[0] if m else 0.0


def _ends_number(raw: str, end: int) -> bool:
    """memcached's safe_strto* take a number followed by a blank or the end."""
    return end == len(raw) or raw[end] in _C_SPACE


def safe_strtoul(raw: str) -> int | None:
    """util.c's ``safe_strtoul`` into a uint32_t: strtoul's 64 bits (a minus sign negates
    modulo 2^64, refused when the result reads as negative), kept in 32; None if not a
    number."""
    m = _LEAD_INT.match(raw)
    if not m or not _ends_number(raw, m.end()):
        return None
    value = decimal(m.group(1))
    if abs(value) >= _UINT64:
        return None  # ERANGE
    value %= _UINT64
    if value >= _INT64 and "-" in raw:
        return None
    return value % _UINT32


def safe_strtol(raw: str) -> int | None:
    """util.c's ``safe_strtol`` into an int32_t: strtol's 64-bit range, kept in 32 bits."""
    m = _LEAD_INT.match(raw)
    if not m or not _ends_number(raw, m.end()):
        return None
    value = decimal(m.group(1))
    if not -_INT64 <= value < _INT64:
        return None  # ERANGE
    return int32(value)


def safe_strtod(raw: str) -> float | None:
    """util.c's ``safe_strtod``: strtod's number, followed by a blank or the end, and no
    ERANGE (`_strtod`); None otherwise."""
    m = _LEAD_FLOAT.match(raw)
    if not m or not _ends_number(raw, m.end()):
        return None
    value, erange = _strtod(m.group(1))
    return None if erange else value
