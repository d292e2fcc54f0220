"""Fuzzing every public-dataset adapter through the real load path (conf/data/<name>.yaml, a local file).

Each row loads, or is skipped and written to rejects naming it (``on_bad_row=skip``), or stops the load with a
DataError naming it (``on_bad_row=error``); rows that are well formed but give no pair are counted as excluded.
Nothing crashes and nothing vanishes. Values mostly keep one JSON type per column, as in the real datasets; a file
that ``datasets``' JSON builder cannot type is read row by row (the last test).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from vrm.config.data import DataConfig
from vrm.data.formats import HELPSTEER2_ASPECTS, TIE, ULTRAFEEDBACK_ASPECTS
from vrm.data.loading import load_preference_data
from vrm.data.validation import REJECTS_FILE
from vrm.errors import DataError

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Text the JSON builder can read (no lone surrogates), with the markers and blanks that trip parsers.
_char = st.characters(exclude_categories=("Cs",))
_text = st.one_of(st.text(_char, max_size=8), st.sampled_from(["", " ", "\n", "N/A", "5", "-1", "nan", "1e9"]))
_maybe_text = st.none() | _text
_number = st.none() | st.integers(-3, 12) | st.floats(allow_nan=True, allow_infinity=True)
_hh_piece = st.sampled_from(["\n\nHuman:", "\n\nAssistant:", "Human:", " hi", " there", "", "\n\n", "Assistant: x"])
_transcript = st.none() | st.lists(_hh_piece, max_size=6).map("".join) | _text
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", ""]), "content": _text})
_messages = st.none() | st.lists(_message, max_size=4)
_rating = st.fixed_dictionaries({"Rating": st.sampled_from(["1", "3", "5", "N/A", "", "x", "-2", "7.5"])})
_annotations = st.fixed_dictionaries({}, optional={a: _rating for a in ULTRAFEEDBACK_ASPECTS})
_completion = st.fixed_dictionaries({}, optional={"response": _text, "annotations": _annotations,
                                                  "overall_score": st.floats(0, 10)})

ROWS = {
    "hh_rlhf": st.fixed_dictionaries({}, optional={"chosen": _transcript, "rejected": _transcript}),
    "ultrafeedback": st.fixed_dictionaries({}, optional={"instruction": _maybe_text, "source": _maybe_text,
                                                         "completions": st.none() | st.lists(_completion, max_size=4)}),
    "ultrafeedback_binarized": st.fixed_dictionaries({}, optional={
        "prompt": _maybe_text, "chosen": _messages, "rejected": _messages, "score_chosen": _number,
        "score_rejected": _number}),
    "shp": st.fixed_dictionaries({}, optional={
        "history": _maybe_text, "human_ref_A": _maybe_text, "human_ref_B": _maybe_text,
        "labels": st.none() | st.integers(-1, 2), "score_ratio": _number, "domain": _maybe_text}),
    "rewardbench": st.fixed_dictionaries({}, optional={"prompt": _maybe_text, "chosen": _maybe_text,
                                                       "rejected": _maybe_text, "subset": _maybe_text}),
}


def public(name: str, path: Path, **overrides) -> DataConfig:
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(CONF_DATA / f"{name}.yaml"),
                          {"path": str(path), "validation_fraction": 0.0, "test_fraction": 0.0, **overrides})
    return OmegaConf.to_object(cfg)


def write_rows(folder: Path, rows: list[dict]) -> Path:
    path = folder / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def rejected_rows(rejects: Path) -> list[int]:
    return [json.loads(line)["row"] for line in rejects.read_text().splitlines()] if rejects.exists() else []


def load_both_ways(name: str, rows: list[dict], **overrides):
    """Load ``rows`` skipping bad ones, then strictly; returns the lenient result (strict must agree with it), or
    None when no row gave a pair (then the error names the file and counts every row)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_rows(Path(tmp), rows)
        rejects = Path(tmp) / REJECTS_FILE
        try:
            data = load_preference_data(public(name, path, on_bad_row="skip", **overrides), tmp)
        except DataError as err:
            named = rejected_rows(rejects)
            assert re.search(rf"file {path}: the \w+ split has no pairs: none of its {len(rows)} rows gave", str(err))
            assert (f"{len(named)} were skipped" in str(err)) == bool(named), str(err)
            return None, len(named)
        skipped = sum(data.report.skipped.values())
        assert data.report.rows_read == len(rows)
        named = rejected_rows(rejects)
        assert len(named) == skipped and all(0 <= row <= len(rows) for row in named)  # row index or line
        try:
            load_preference_data(public(name, path, on_bad_row="error", **overrides))
        except DataError as err:
            assert skipped > 0
            assert re.search(rf"(row index|line) {min(named)}\b", str(err)), str(err)
        else:
            assert skipped == 0
        return data, skipped


@pytest.mark.parametrize("name", sorted(ROWS))
def test_every_row_loads_is_excluded_or_is_named(name):
    overrides = {"pairing": "best_vs_worst"} if name == "ultrafeedback" else {}  # one pair per row

    @FUZZ
    @given(st.lists(ROWS[name], min_size=1, max_size=6))
    def check(rows):
        data, skipped = load_both_ways(name, rows, **overrides)
        if data is None:
            return
        loaded = sum(len(split) for split in data.splits.values())
        excluded = sum(data.report.excluded.values())
        assert loaded + skipped + excluded == len(rows), data.report.summary()

    check()


_helpsteer_row = st.fixed_dictionaries({"response": _maybe_text},
                                       optional={a: st.none() | st.integers(0, 4) for a in HELPSTEER2_ASPECTS})


@FUZZ
@given(st.lists(_helpsteer_row, min_size=1, max_size=8))
def test_helpsteer2_rows_pair_up_or_are_accounted_for(rows):
    # Rows 2k and 2k+1 share a prompt: a good pair of rows gives one pair or one tie, a lone good row is excluded.
    rows = [{"prompt": f"prompt {i // 2}", **row} for i, row in enumerate(rows)]
    for i, row in enumerate(rows):  # distinct responses, so a pair is never rejected for identical texts
        if row["response"]:
            row["response"] = f"{row['response']} ({i})"
    data, skipped = load_both_ways("helpsteer2", rows)
    if data is None:
        return
    loaded = sum(len(split) for split in data.splits.values())
    excluded = data.report.excluded
    ties = excluded.get(TIE, 0)
    singles = excluded.get("helpsteer2: prompt with a single response", 0)
    assert 2 * (loaded + ties) + singles + skipped == len(rows), data.report.summary()


@pytest.mark.parametrize("rows", [[{}, {}], [{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "x"},
                                           {"chosen": 3, "rejected": ["y"]}]])
def test_rows_the_json_builder_cannot_type_are_each_named(tmp_path, rows):
    # Rows without a single column used to fail the whole file ("corresponds to no data"), naming no row.
    path = write_rows(tmp_path, rows)
    with pytest.raises(DataError, match=rf"file {path}: the train split has no pairs: none of its 2 rows gave a "
                                        "pair; 2 were skipped"):
        load_preference_data(public("hh_rlhf", path), tmp_path)
    assert len((tmp_path / REJECTS_FILE).read_text().splitlines()) == 2
