"""How big one input may be: the one size policy of every reader (training files, ``vrm-score`` input,
``vrm-serve`` requests). A bigger input is refused with the file, line and field named (or a 413 from the server),
before it costs minutes and gigabytes: a 50 MB single-line row took 93 s and 7.2 GB in ``vrm-score``.
"""

from __future__ import annotations

#: Characters in one text: a prompt, a response, one message's content, a full conversation text (``query``), a
#: reference answer. ``vrm-serve`` counts a pair's prompt and response together against it (``--max-text-chars``).
MAX_TEXT_CHARS = 65536
#: Messages in one conversation (a prompt given as messages): many empty messages hold few characters but cost a chat
#: template rendering each.
MAX_MESSAGES = 1024
#: Characters in one line of a JSON Lines file (one row): room for a prompt, two responses and their messages at
#: the text limit, JSON-escaped. A longer line is not read whole; it is a bad row named by its line number.
MAX_LINE_CHARS = 16 * MAX_TEXT_CHARS * 6


def too_long(value: str) -> str | None:
    """Why ``value`` is over the text limit (its length and the limit), or None."""
    if len(value) > MAX_TEXT_CHARS:
        return f"{len(value)} characters, over the limit of {MAX_TEXT_CHARS} a text (vrm.data.limits.MAX_TEXT_CHARS)"
    return None
