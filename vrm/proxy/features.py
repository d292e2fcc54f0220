r"""Text features of the white-box proxy reward: tokens, length incentive, repetition penalty, turn cut.

One tokenization rule serves both the length incentive and the repetition penalty: NLTK's wordpunct tokenizer
(``nltk.tokenize.wordpunct_tokenize``), whose whole definition is the pattern below. We compile that pattern here
rather than call NLTK, so the package needs no NLTK at run time; the tests check it against NLTK.

The engine matters. NLTK 3.10 compiles its patterns with the third-party ``regex`` module, as we do; older NLTK
(3.8.1, of the paper's era) used the stdlib ``re``, whose ``\w`` and ``\s`` differ on some characters: combining
marks are word characters only for ``regex``, superscript digits and vulgar fractions only for ``re``, and the ASCII
separators U+001C..U+001F are whitespace only for ``re``. Ordinary text tokenizes the same under both.
"""

from __future__ import annotations

from collections.abc import Sequence

import regex

#: NLTK's ``WordPunctTokenizer``: runs of word characters, or runs of other non-space characters (NLTK's flags).
WORDPUNCT_PATTERN = regex.compile(r"\w+|[^\w\s]+", regex.UNICODE | regex.MULTILINE | regex.DOTALL)

#: Tokens per unit of length incentive: ``LI(y) = n_tokens(y) / LENGTH_SCALE``.
LENGTH_SCALE = 100

#: The repetition penalty counts token n-grams of this order.
REPETITION_NGRAM = 3

#: Markers that start a new turn in the prompt templates generations commonly run on into: Alpaca
#: (``### Instruction:``, ``### Input:``, ``### Response:``), Vicuna-style (``### Human:``, ``### Assistant:``) and
#: the plain-dialogue transcripts of Anthropic HH and similar (``Human:``, ``Assistant:``, ``User:`` at a line
#: start). The response is cut at the earliest one found; text before it is the answer.
DEFAULT_TURN_MARKERS: tuple[str, ...] = (
    "### Instruction:",
    "### Input:",
    "### Response:",
    "### Human:",
    "### Assistant:",
    "\nHuman:",
    "\nAssistant:",
    "\nUser:",
)


def tokenize(text: str) -> list[str]:
    """Tokens of ``text`` exactly as ``nltk.tokenize.wordpunct_tokenize`` gives them."""
    return WORDPUNCT_PATTERN.findall(text)


def length_incentive(text: str) -> float:
    """``LI(y) = n_tokens(y) / 100``."""
    return len(tokenize(text)) / LENGTH_SCALE


def repetition_penalty(text: str) -> float:
    """Distinct token trigrams over all token trigrams; 1.0 when there are fewer than three tokens."""
    tokens = tokenize(text)
    ngrams = [tuple(tokens[i:i + REPETITION_NGRAM]) for i in range(len(tokens) - REPETITION_NGRAM + 1)]
    if not ngrams:
        return 1.0
    return len(set(ngrams)) / len(ngrams)


def check_turn_markers(markers: Sequence[str]) -> tuple[str, ...]:
    """``markers`` as a tuple, after checking it is a sequence of non-empty strings (an empty one would cut all)."""
    if isinstance(markers, str):
        raise TypeError(f"turn markers must be a sequence of strings, not one string: {markers!r}")
    for i, marker in enumerate(markers):
        if not isinstance(marker, str) or not marker:
            raise ValueError(f"turn markers must be non-empty strings; marker {i} is {marker!r}")
    return tuple(markers)


def truncate_at_turn(text: str, markers: Sequence[str] = DEFAULT_TURN_MARKERS) -> str:
    """``text`` up to the earliest occurrence of any marker (all of it when none occurs)."""
    positions = (text.find(marker) for marker in check_turn_markers(markers))
    return text[:min((pos for pos in positions if pos >= 0), default=len(text))]
