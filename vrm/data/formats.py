"""One adapter per source format: a raw row in the source's own columns becomes canonical :class:`PreferencePair`\\ s.

An adapter is a function ``(row, row_no, ctx) -> list`` that reads the fields it needs with the checks of
:mod:`vrm.data.validation` and raises :class:`RowFault` naming the source's own field. It returns pairs, or, for a
format whose pairs span rows (HelpSteer2), rated responses that the format's ``combine`` step pairs up. A row that is
well formed but yields no pair (UltraFeedback completions all rated alike) raises :class:`NoPair`; the loader counts it.

Formats (``data.format``; :data:`FORMATS`):

- ``jsonl``: the user's own files (JSON Lines, JSON, CSV, Parquet; aliases ``json``, ``csv``, ``parquet``) in either TRL
  layout, detected per file from its first row with a ``chosen`` string or list (:func:`detect_layout`):
  ``explicit`` (``prompt``, ``chosen``, ``rejected`` strings) or ``conversational`` (``chosen``/``rejected`` message
  lists that share every message before the final assistant response, with or without a separate ``prompt`` list).
  Optional canonical columns (``margin``, ``aspects_chosen``, ``aspects_rejected``, ``subset``, ``question_type``,
  ``reference``) are carried through; other columns are ignored.
- ``hh_rlhf``: Anthropic/hh-rlhf transcripts ``"\\n\\nHuman: ... \\n\\nAssistant: ..."``; the shared turns are the
  prompt, the final assistant turns the responses.
- ``ultrafeedback``: openbmb/UltraFeedback; each instruction's rated ``completions`` become pairs by ``data.pairing``
  (seeded by ``data.split_seed`` and the row), ranked by ``data.rank_by``; ratings of the four aspects are carried.
- ``ultrafeedback_binarized``: HuggingFaceH4/ultrafeedback_binarized; margin = score_chosen - score_rejected.
- ``helpsteer2`` and ``helpsteer2_preference``: nvidia/HelpSteer2's per-response ratings and its ``preference/``
  data (:mod:`vrm.data.helpsteer2`), multi-turn prompts as real messages.
- ``shp``: stanfordnlp/SHP; ``labels`` 1 means ``human_ref_A`` is preferred; margin = ``score_ratio`` as given;
  subset = the subreddit (``domain`` without its split suffix).
- ``rewardbench``: allenai/reward-bench, explicit strings plus ``subset``; its ``filtered`` split is the test split.
- ``rewardbench2``: allenai/reward-bench-2's best-of-N items (:mod:`vrm.data.rewardbench2_items`).

Ties (``data.ties``, one rule for every format): a pair whose two responses the source scores alike is a tie. An
adapter whose source names a chosen side returns it with margin 0 and the loader skips (and counts) or keeps it; a
source without a side (ratings only) leaves it out under :data:`TIE` whatever ``data.ties`` says.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from vrm.data.helpsteer2 import (
    HELPSTEER2_ASPECTS,
    TIE,
    helpsteer2_pairs,
    helpsteer2_preference_row,
    helpsteer2_row,
    preference_split,
)
from vrm.data.rewardbench2_items import rewardbench2_pairs, rewardbench2_row
from vrm.data.schema import Message, PreferencePair
from vrm.data.validation import (
    EMPTY,
    INVALID_VALUE,
    WRONG_TYPE,
    RowFault,
    messages,
    number,
    optional_number,
    optional_text,
    ratings,
    require,
    text_field,
    type_name,
)
from vrm.errors import DataError, NoPair

EXPLICIT, CONVERSATIONAL = "explicit", "conversational"
#: How UltraFeedback's rated completions become pairs (``data.pairing``).
PAIRINGS = ("best_vs_random", "best_vs_worst", "all_pairs")
#: What ranks UltraFeedback completions (``data.rank_by``): the mean of the aspect ratings, or GPT-4's overall score.
RANK_BY = ("mean_aspects", "overall_score")
#: ``data.format`` names that read the user's own files, the reader chosen by file extension.
LOCAL_ALIASES = ("json", "csv", "parquet")

ULTRAFEEDBACK_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")
#: Values of ``data.ties``.
TIE_RULES = ("skip", "keep")
#: SHP's ``domain`` is the subreddit plus the split (``askculinary_train``); the subset is the subreddit alone.
_SHP_SPLIT_SUFFIX = re.compile(r"_(train|validation|test)$")


@dataclass(frozen=True)
class RowContext:
    """What an adapter needs beyond the row."""

    layout: str = EXPLICIT
    pairing: str = "best_vs_random"
    rank_by: str = "mean_aspects"
    seed: int = 0


def detect_layout(row: object) -> str | None:
    """TRL layout of a row from its ``chosen``: a string is explicit, a list conversational; else undecided."""
    chosen = row.get("chosen") if isinstance(row, Mapping) else None
    if isinstance(chosen, str):
        return EXPLICIT
    if isinstance(chosen, list):
        return CONVERSATIONAL
    return None


def detect_file_layout(rows: Iterable[object]) -> str:
    """Layout of a file: that of its first row that decides one (explicit when none does)."""
    return next((layout for row in rows if (layout := detect_layout(row))), EXPLICIT)


def split_conversations(prompt: list[Message], chosen: list[Message],
                        rejected: list[Message]) -> tuple[list[Message], str, str]:
    """Prompt messages and the two final assistant responses of ``prompt + chosen`` and ``prompt + rejected``."""
    full = {"chosen": prompt + chosen, "rejected": prompt + rejected}
    for name, conversation in full.items():
        if not conversation or conversation[-1]["role"] != "assistant":
            raise RowFault(INVALID_VALUE, name, "the last message must be the assistant's response")
    if full["chosen"][:-1] != full["rejected"][:-1]:
        raise RowFault(INVALID_VALUE, "rejected", "chosen and rejected differ before their final response "
                                                  "(they must share the prompt messages)")
    return full["chosen"][:-1], full["chosen"][-1]["content"], full["rejected"][-1]["content"]


def _canonical_extras(row: Mapping) -> dict:
    """The optional canonical columns a row may carry."""
    extras = {
        "margin": optional_number(row, "margin"),
        "subset": optional_text(row, "subset"),
        "question_type": optional_text(row, "question_type"),
        "reference": optional_text(row, "reference"),
    }
    for name in ("aspects_chosen", "aspects_rejected"):
        value = row.get(name)
        extras[name] = [] if value is None else ratings(value, name)
    return extras


def _explicit_row(row: Mapping, row_no: int, ctx: RowContext) -> list[PreferencePair]:
    prompt, chosen, rejected = (text_field(row, key) for key in ("prompt", "chosen", "rejected"))
    return [PreferencePair.from_text(prompt, chosen, rejected, **_canonical_extras(row))]


def _conversational_row(row: Mapping, row_no: int, ctx: RowContext) -> list[PreferencePair]:
    prompt = [] if row.get("prompt") is None else messages(row["prompt"], "prompt")
    chosen, rejected = (messages(require(row, key), key) for key in ("chosen", "rejected"))
    prompt, chosen_text, rejected_text = split_conversations(prompt, chosen, rejected)
    return [PreferencePair(prompt, chosen_text, rejected_text, **_canonical_extras(row))]


def _local_row(row: Mapping, row_no: int, ctx: RowContext) -> list[PreferencePair]:
    layout = detect_layout(row)
    if layout is not None and layout != ctx.layout:
        raise RowFault(WRONG_TYPE, "chosen", f"{type_name(row['chosen'])} in a file whose layout is {ctx.layout} "
                                             "(detected from its first row)")
    convert = _conversational_row if ctx.layout == CONVERSATIONAL else _explicit_row
    return convert(row, row_no, ctx)


_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(transcript: str, field: str) -> list[Message]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> user and assistant messages (contents stripped)."""
    parts = _HH_TURN.split(transcript)
    if parts[0].strip():
        raise RowFault(INVALID_VALUE, field, "transcript must start with '\\n\\nHuman:'")
    turns = [{"role": _HH_ROLES[who], "content": content.strip()} for who, content in zip(parts[1::2], parts[2::2])]
    for i, turn in enumerate(turns):
        if not turn["content"]:
            raise RowFault(EMPTY, field, f"turn {i + 1} ({turn['role']}) is empty")
    return turns


def _hh_rlhf_row(row: Mapping, row_no: int, ctx: RowContext) -> list[PreferencePair]:
    chosen, rejected = (parse_hh_transcript(text_field(row, key), key) for key in ("chosen", "rejected"))
    prompt, chosen_text, rejected_text = split_conversations([], chosen, rejected)
    return [PreferencePair(prompt, chosen_text, rejected_text)]


def _ultrafeedback_rating(annotations: Mapping, aspect: str, field: str) -> float | None:
    annotation = require(annotations, aspect, f"{field}.{aspect}")
    if not isinstance(annotation, Mapping):
        raise RowFault(WRONG_TYPE, f"{field}.{aspect}", f"expected an object, got {type_name(annotation)}")
    rating = require(annotation, "Rating", f"{field}.{aspect}.Rating")
    return None if rating == "N/A" else number(rating, f"{field}.{aspect}.Rating", parse_text=True)


def _ultrafeedback_completion(completion: object, field: str, rank_by: str) -> tuple[str, list, float | None]:
    """(response, aspect ratings, ranking score or None when unrated) of one completion."""
    if not isinstance(completion, Mapping):
        raise RowFault(WRONG_TYPE, field, f"expected an object, got {type_name(completion)}")
    response = text_field(completion, "response", f"{field}.response")
    annotations = require(completion, "annotations", f"{field}.annotations")
    if not isinstance(annotations, Mapping):
        raise RowFault(WRONG_TYPE, f"{field}.annotations", f"expected an object, got {type_name(annotations)}")
    aspects = [_ultrafeedback_rating(annotations, a, f"{field}.annotations") for a in ULTRAFEEDBACK_ASPECTS]
    if rank_by == "overall_score":
        score = number(require(completion, "overall_score", f"{field}.overall_score"), f"{field}.overall_score")
    else:
        rated = [r for r in aspects if r is not None]
        score = sum(rated) / len(rated) if rated else None
    return response, aspects, score


def pair_indices(scores: list[float | None], pairing: str, rng: random.Random) -> list[tuple[int, int]]:
    """(chosen, rejected) index pairs of rated items with distinct scores; ``None`` scores take no part.

    best_vs_random: the best (first on ties) against a random lower-rated one; best_vs_worst: best against the
    lowest (first on ties); all_pairs: every two with distinct scores, the higher chosen.
    """
    rated = [i for i, s in enumerate(scores) if s is not None]
    if pairing == "all_pairs":
        return [(i, j) for i in rated for j in rated if scores[i] > scores[j]]
    if not rated:
        return []
    best = max(rated, key=lambda i: scores[i])
    lower = [j for j in rated if scores[j] < scores[best]]
    if not lower:
        return []
    if pairing == "best_vs_worst":
        return [(best, min(lower, key=lambda j: scores[j]))]
    return [(best, rng.choice(lower))]


def _ultrafeedback_row(row: Mapping, row_no: int, ctx: RowContext) -> list[PreferencePair]:
    instruction = text_field(row, "instruction")
    completions = require(row, "completions")
    if not isinstance(completions, list):
        raise RowFault(WRONG_TYPE, "completions", f"expected a list, got {type_name(completions)}")
    rated = [_ultrafeedback_completion(c, f"completions[{i}]", ctx.rank_by) for i, c in enumerate(completions)]
    rng = random.Random(f"{ctx.seed}/{row_no}")
    pairs = [
        PreferencePair.from_text(instruction, rated[i][0], rated[j][0], margin=rated[i][2] - rated[j][2],
                                 aspects_chosen=rated[i][1], aspects_rejected=rated[j][1],
                                 subset=optional_text(row, "source"))
        for i, j in pair_indices([score for _, _, score in rated], ctx.pairing, rng)
    ]
    if not pairs:
        rated = sum(score is not None for _, _, score in rated)
        raise NoPair(TIE if rated >= 2 else "ultrafeedback: fewer than two rated completions")
    return pairs


def _ultrafeedback_binarized_row(row: Mapping, row_no: int, ctx: RowContext) -> list[PreferencePair]:
    chosen, rejected = (messages(require(row, key), key) for key in ("chosen", "rejected"))
    prompt, chosen_text, rejected_text = split_conversations([], chosen, rejected)
    score_chosen, score_rejected = (number(require(row, key), key) for key in ("score_chosen", "score_rejected"))
    if score_chosen < score_rejected:
        raise RowFault(INVALID_VALUE, "score_rejected", f"{score_rejected} above score_chosen {score_chosen}")
    return [PreferencePair(prompt, chosen_text, rejected_text, margin=score_chosen - score_rejected)]


def _shp_row(row: Mapping, row_no: int, ctx: RowContext) -> list[PreferencePair]:
    prompt, ref_a, ref_b = (text_field(row, key) for key in ("history", "human_ref_A", "human_ref_B"))
    label = require(row, "labels")
    if isinstance(label, bool) or not isinstance(label, int):
        raise RowFault(WRONG_TYPE, "labels", f"expected 0 or 1, got {type_name(label)}")
    if label not in (0, 1):
        raise RowFault(INVALID_VALUE, "labels", f"expected 1 (A preferred) or 0 (B preferred), got {label}")
    chosen, rejected = (ref_a, ref_b) if label == 1 else (ref_b, ref_a)
    subset = _SHP_SPLIT_SUFFIX.sub("", optional_text(row, "domain"))
    return [PreferencePair.from_text(prompt, chosen, rejected, margin=optional_number(row, "score_ratio"),
                                     subset=subset)]


Adapter = Callable[[Mapping, int, RowContext], list]


@dataclass(frozen=True)
class Format:
    """How one source format is read."""

    name: str
    convert: Adapter
    #: Canonical split -> the source's split name; the first is where a single file goes.
    splits: Mapping[str, str] = field(default_factory=lambda: {"train": "train"})
    aspect_names: tuple[str, ...] = ()
    #: What ``data.subset`` selects: ``filter`` keeps pairs whose subset is listed; ``data_dir`` loads each listed
    #: ``data_dir`` of the dataset.
    subset_by: str = "filter"
    #: Pairs up what ``convert`` returned, across rows: ``(items as (row, item), excluded counts) -> (row, pair)s``.
    combine: Callable[[list[tuple[int, object]], Counter[str]], list[tuple[int, PreferencePair]]] | None = None
    #: Reported layout of the source (local files report the layout detected per file instead).
    layout: str = ""
    #: Whether a tie keeps a chosen side (``data.ties=keep`` possible): the source labels one response chosen.
    ties_have_side: bool = False
    #: Rows name their own split in a column: ``row -> canonical split`` (raises :class:`RowFault` on a bad value).
    split_of_row: Callable[[Mapping], str] | None = None
    #: The ``data_dir`` read when ``data.subset`` names none.
    default_data_dir: str | None = None
    #: ``data_dir`` -> the format its files have, where it differs (HelpSteer2's ``preference/``).
    data_dir_formats: Mapping[str, str] = field(default_factory=dict)
    #: One row is a best-of-N item whose pairs come from ``combine``; the items are kept (RewardBench 2).
    best_of_n: bool = False


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("jsonl", _local_row, ties_have_side=True),
    Format("hh_rlhf", _hh_rlhf_row, {"train": "train", "test": "test"}, subset_by="data_dir",
           layout="hh_rlhf transcripts"),
    Format("ultrafeedback", _ultrafeedback_row, aspect_names=ULTRAFEEDBACK_ASPECTS,
           layout="ultrafeedback rated completions"),
    Format("ultrafeedback_binarized", _ultrafeedback_binarized_row, {"train": "train_prefs", "test": "test_prefs"},
           layout=CONVERSATIONAL, ties_have_side=True),
    Format("helpsteer2", helpsteer2_row, {"train": "train", "validation": "validation"},
           aspect_names=HELPSTEER2_ASPECTS, subset_by="data_dir", combine=helpsteer2_pairs,
           layout="helpsteer2 rated responses", data_dir_formats={"preference": "helpsteer2_preference"}),
    Format("helpsteer2_preference", helpsteer2_preference_row, {"train": "train", "validation": "validation"},
           subset_by="data_dir", layout="helpsteer2 preference pairs", split_of_row=preference_split,
           default_data_dir="preference"),
    Format("shp", _shp_row, {"train": "train", "validation": "validation", "test": "test"}, subset_by="data_dir",
           layout="shp comment pairs"),
    Format("rewardbench", _explicit_row, {"test": "filtered"}, layout=EXPLICIT),
    Format("rewardbench2", rewardbench2_row, {"test": "test"}, combine=rewardbench2_pairs,
           layout="rewardbench2 best-of-N items", best_of_n=True),
)}


def resolve_format(name: str, data_dirs: list[str]) -> Format:
    """The format of ``data.format`` as the ``data_dir`` folders named by ``data.subset`` lay it out (HelpSteer2's
    ``preference/`` holds pairs, not rated responses)."""
    spec = get_format(name)
    layouts = {spec.data_dir_formats.get(d, spec.name) for d in data_dirs} if spec.subset_by == "data_dir" else set()
    if len(layouts) > 1:
        raise DataError(f"data.subset={','.join(data_dirs)} mixes data_dirs of different layouts ({sorted(layouts)}); "
                        "load them in separate runs")
    return FORMATS[layouts.pop()] if layouts else spec


def get_format(name: str) -> Format:
    """The adapter of ``data.format`` (``json``/``csv``/``parquet`` are the ``jsonl`` reader of local files)."""
    key = "jsonl" if name in LOCAL_ALIASES else name
    if key not in FORMATS:
        raise DataError(f"unknown data.format {name!r}; expected synthetic or one of "
                        f"{sorted(FORMATS) + list(LOCAL_ALIASES)}")
    return FORMATS[key]
