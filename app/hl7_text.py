"""Writing text into an HL7 v2 field: shared by the MLLP adapter's acknowledgements and the
session export's ORU message, beneath both."""

from __future__ import annotations

_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "~": "\\R\\", "&": "\\T\\"}


def escape_text(text: str) -> str:
    """Text safe inside one field of a message Vigil writes (standard separators).

    Delimiters get HL7 escapes; control characters become hex escapes (\\X1C\\) so that
    no CR or MLLP byte can break the message; other characters stay as they are.
    """
    return "".join(
        _ESCAPES.get(c) or (f"\\X{ord(c):02X}\\" if ord(c) < 0x20 or c == "\x7f" else c)
        for c in text
    )
