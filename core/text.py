"""Logged text made safe for where it is shown. Texts come from clients: hostile anywhere.

- ``for_terminal``: control characters (ESC sequences that move the cursor, retitle the window
  or hide what follows; C1 controls; bidirectional overrides that reorder a line) shown as
  visible ``\\x1b``-style escapes instead of acted on. Newlines and tabs become spaces (one row,
  one line).
- ``for_spreadsheet``: a cell that a spreadsheet would run as a formula (``=``, ``+``, ``-``,
  ``@``, tab, carriage return first: OWASP's CSV injection list) gets a leading apostrophe,
  which spreadsheets show as text and drop from the value.

HTML is escaped where it is made (the console builds text nodes; reports escape their data
block), rich markup by ``emotion_ops.commands.common.shown``.
"""

from __future__ import annotations

import re
import unicodedata

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_LAYOUT = re.compile(r"[\n\t]")


def _visible(character: str) -> str:
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str) -> str:
    """``text`` with every control or format character (Unicode Cc and Cf) shown, not run."""
    text = _LAYOUT.sub(" ", text)
    return "".join(
        _visible(character) if unicodedata.category(character) in ("Cc", "Cf") else character
        for character in text
    )


def for_spreadsheet(value: str) -> str:
    """``value`` as a spreadsheet cell that can only ever be text."""
    return "'" + value if value.startswith(_FORMULA_START) else value
