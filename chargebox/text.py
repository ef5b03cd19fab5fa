"""Text that is shown back to people (seller names, adjustment reasons) must show what it says.

Pure and a leaf: it imports only `errors`. Refused: text with nothing visible, control
characters, the bidi overrides U+202D/U+202E (they show `\\u202egnp.exe` as `exe.png`),
the Arabic letter mark, line separators and TAG characters, and embeddings or isolates
left open or closed out of order. Kept: what Persian writing needs, the zero-width
non-joiner (U+200C) and the LRM/RLM marks, and balanced pairs. A name a client sent
that a refusal only shows back (`shown_back`) is marked and cut, not refused.
"""

from __future__ import annotations

import unicodedata

from chargebox.errors import ValidationError, phrase

# Categories that draw nothing by themselves: controls, format characters (ZWSP, BOM,
# LRM, ALM...), separators, combining marks with no base, and what Python's Unicode
# database (14.0) does not know yet, so a name of characters newer than it is refused.
_DRAWS_NOTHING = frozenset({"Cc", "Cf", "Cs", "Cn", "Zs", "Zl", "Zp", "Mn", "Me"})
# Letters and symbols that render blank: the Hangul fillers, the blank Braille pattern.
_BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e\u2028\u2029")
_OVERRIDES = {
    "\u202d": phrase("left-to-right override"),
    "\u202e": phrase("right-to-left override"),
}
# Refused anywhere: the Arabic letter mark (it reorders the digits around it), the line
# and paragraph separators (text here is one line), and the TAG characters (they carry
# invisible ASCII: "Ali" plus tags shows "Ali" and says "Aliadmin").
_HIDDEN = {"\u061c": phrase("the Arabic letter mark"), "\u2028": phrase("a line separator"),
           "\u2029": phrase("a paragraph separator")}  # fmt: skip
_TAGS = range(0xE0000, 0xE0080)
# Each embedding (LRE, RLE) is closed by PDF, each isolate (LRI, RLI, FSI) by PDI.
_CLOSER = {
    "\u202a": "\u202c",  # left-to-right embedding ... pop directional formatting
    "\u202b": "\u202c",  # right-to-left embedding ... pop directional formatting
    "\u2066": "\u2069",  # left-to-right isolate ... pop directional isolate
    "\u2067": "\u2069",  # right-to-left isolate ... pop directional isolate
    "\u2068": "\u2069",  # first strong isolate ... pop directional isolate
}
_CLOSERS = frozenset(_CLOSER.values())


# Shown back, not stored: what draws nothing and is not a space (controls, format and
# bidi characters, unassigned ones, line separators) becomes U+FFFD.
_SHOWN_AS_MARK = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})
SHOWN_BACK = 40  # characters of a name sent to us that a refusal shows back, at most


def shown_back(text: str) -> str:
    """A name a client sent that a refusal names but nothing keeps (an unknown query
    parameter's): each character that draws nothing but a space shown as U+FFFD, so that
    no bidi control closes the isolate it is shown in (web/refusals.py) and nothing hides,
    and cut at SHOWN_BACK characters (a link cannot put a paragraph of its own on a page)."""
    marked = "".join("\ufffd" if unicodedata.category(ch) in _SHOWN_AS_MARK else ch
                     for ch in text[: SHOWN_BACK + 1])  # fmt: skip
    return marked if len(marked) <= SHOWN_BACK else marked[:SHOWN_BACK] + "\u2026"


def reads_as_a_key(name: str) -> bool:
    """Whether a query parameter's or a header's name reads as an Idempotency-Key's
    (`idempotency_key`, `X-Idempotency-Key`, `Idempotence_Key`: any case, any separators)."""
    letters = "".join(ch for ch in name.lower() if "a" <= ch <= "z")
    return "idempoten" in letters and letters.endswith("key")


def header_spelt(name: str) -> str:
    """A header's name as WSGI keys it (`X_IDEMPOTENCY_KEY`), as it is spelt in HTTP
    (`X-Idempotency-Key`)."""
    return "-".join(part.capitalize() for part in name.split("_"))


def visible(ch: str) -> bool:
    """Whether the one character `ch` draws something on its own."""
    return ch not in _BLANK and unicodedata.category(ch) not in _DRAWS_NOTHING


def clean_text(value: object, field: str, max_length: int) -> str:
    """A trimmed, NFC-normalised single-line text of 1..max_length characters that shows
    at least one visible character and cannot reorder what it shows (see the module)."""
    if not isinstance(value, str):
        raise ValidationError("{field} must be a string", field)
    text = unicodedata.normalize("NFC", value).strip()
    if not 1 <= len(text) <= max_length:
        raise ValidationError(
            "{field} must be 1 to {max_length} characters", field, max_length=max_length
        )
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text):
        raise ValidationError("{field} must not contain control or surrogate characters", field)
    if not any(map(visible, text)):
        raise ValidationError(
            "{field} shows nothing: it holds only spaces or invisible characters", field
        )
    _require_plain_direction(text, field)
    return text


def _require_plain_direction(text: str, field: str) -> None:
    """Refuse overrides, and embeddings/isolates not closed in proper nesting."""
    open_ones: list[str] = []
    for ch in text:
        if ch in _HIDDEN or ord(ch) in _TAGS:
            what = _HIDDEN.get(ch, phrase("a TAG character"))
            raise ValidationError(
                "{field} must not contain U+{code} ({character}): it shows something "
                "else than it says",
                field,
                code=f"{ord(ch):04X}",
                character=what,
            )
        if ch in _OVERRIDES:
            raise _override(ch, field)
        if ch in _CLOSER:
            open_ones.append(_CLOSER[ch])
        elif ch in _CLOSERS and (not open_ones or open_ones.pop() != ch):
            raise _unbalanced(field)
    if open_ones:
        raise _unbalanced(field)


def refuse_overrides(value: str, field: str) -> None:
    """Refuse a bidi override (U+202D, U+202E) anywhere in `value`: a phone number's digits
    behind one show in another order than they are read (and charged)."""
    for ch in _OVERRIDES:
        if ch in value:
            raise _override(ch, field)


def _override(ch: str, field: str) -> ValidationError:
    return ValidationError(
        "{field} must not contain U+{code} ({character}): "
        "it shows the text in another order than it is written",
        field,
        code=f"{ord(ch):04X}",
        character=_OVERRIDES[ch],
    )


def _unbalanced(field: str) -> ValidationError:
    return ValidationError(
        "{field} has a direction control (U+202A, U+202B, U+2066-U+2069) that is not "
        "closed in order: it would change how the rest of the page reads",
        field,
    )
