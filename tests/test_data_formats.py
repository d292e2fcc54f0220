"""Loading preference data: every format's fixture, layout detection, bad rows, splits, pairing, caps."""

from __future__ import annotations

import importlib.util
import json
import random
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from vrm.config.data import DataConfig, SyntheticConfig
from vrm.data.formats import FORMATS, LOCAL_ALIASES, TIE, pair_indices
from vrm.data.loading import load_preference_data
from vrm.data.schema import CANONICAL_FEATURES
from vrm.data.textio import BINARY_FORMATS, BYTE_ORDER_MARKS
from vrm.data.validation import REJECTS_FILE
from vrm.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
CONF_DATA = ROOT / "conf" / "data"
_spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)


def local(path: Path | str, **overrides) -> DataConfig:
    """Config for the user's own file as train, no carved splits."""
    fields = {"format": "jsonl", "train": str(path), "validation_fraction": 0.0, "test_fraction": 0.0, **overrides}
    return DataConfig(**fields)


def public(name: str, path: Path | str, **overrides) -> DataConfig:
    """The real conf/data/<name>.yaml with data.path pointing at a local copy, no carved splits."""
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(CONF_DATA / f"{name}.yaml"),
                          {"path": str(path), "validation_fraction": 0.0, "test_fraction": 0.0, **overrides})
    return OmegaConf.to_object(cfg)


def user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# -- every format's fixture ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["explicit.jsonl", "explicit.json", "explicit.csv"])
def test_explicit_files_load_to_canonical_pairs(name):
    data = load_preference_data(local(FIXTURES / name, aspect_names=["helpful", "harmless"]))
    rows = data.splits["train"].to_list()
    expected = [{**{k: row[k] for k in CANONICAL_FEATURES if k != "prompt"}, "prompt": user(row["prompt"])}
                for row in make_fixtures.EXPLICIT_ROWS]
    assert rows == expected
    assert data.aspect_names == ["helpful", "harmless"]
    assert data.report.layouts == {str(FIXTURES / name): "explicit"}
    assert data.report.rows == {"train": 3} and not data.report.skipped


@pytest.mark.parametrize("name", ["conversational.jsonl", "conversational.parquet"])
def test_conversational_files_split_the_shared_prompt(name):
    data = load_preference_data(local(FIXTURES / name))
    train = data.splits["train"]
    assert train["prompt"] == [
        user("Is the sky blue?"),
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Best pet?"}],
    ]
    assert train["chosen"] == ["Yes, on a clear day.", "A cat."]
    assert train["rejected"] == ["No.", "I refuse to answer."]
    assert data.report.layouts == {str(FIXTURES / name): "conversational"}
    assert "conversational" in data.report.summary()
    assert data.aspect_names == []


@pytest.mark.parametrize("alias", LOCAL_ALIASES)
def test_format_aliases_read_local_files(alias):
    data = load_preference_data(local(FIXTURES / "explicit.csv", format=alias))
    assert data.splits["train"]["chosen"] == [r["chosen"] for r in make_fixtures.EXPLICIT_ROWS]


def test_hh_rlhf_transcripts_split_into_prompt_and_final_responses():
    data = public("hh_rlhf", FIXTURES / "hh_rlhf.jsonl")
    train = load_preference_data(data).splits["train"]
    assert train["prompt"] == [
        user("How do I boil an egg?"),
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"},
         {"role": "user", "content": "Tell me a joke."}],
    ]
    assert train["chosen"] == ["Put it in boiling water for nine minutes.",
                               "Why did the chicken cross the road? To get to the other side."]
    assert train["rejected"] == ["Why would you?", "No."]


def test_ultrafeedback_carries_aspect_ratings():
    data = load_preference_data(public("ultrafeedback", FIXTURES / "ultrafeedback.jsonl", pairing="best_vs_worst"))
    assert data.aspect_names == ["helpfulness", "honesty", "instruction_following", "truthfulness"]
    [row] = data.splits["train"].to_list()
    assert row["prompt"] == user("Write a haiku about rain.")
    assert (row["chosen"], row["rejected"]) == ("Soft rain on the roof", "I cannot write poems.")
    assert row["aspects_chosen"] == [5.0, 4.0, 5.0, 4.0] and row["aspects_rejected"] == [1.0, 1.0, 1.0, 1.0]
    assert row["margin"] == pytest.approx(3.5) and row["subset"] == "evol_instruct"
    # The second instruction's completions are rated alike: no pair, counted.
    assert data.report.excluded == {TIE: 1}


def test_ultrafeedback_binarized_folder_maps_its_splits():
    data = load_preference_data(public("ultrafeedback_binarized", FIXTURES / "ultrafeedback_binarized"))
    assert set(data.splits) == {"train", "test"}
    assert data.splits["train"]["prompt"] == [user("Add 1 and 1."), user("Spell cat.")]
    assert data.splits["train"]["chosen"] == ["2", "C-A-T"]
    assert data.splits["train"]["rejected"] == ["11", "K-A-T"]
    assert data.splits["train"]["margin"] == [7.0, 4.5]
    assert data.splits["test"]["chosen"] == ["Mostly, yes."]
    assert data.report.sources["test"] == [f"{FIXTURES / 'ultrafeedback_binarized'} [test_prefs]"]


def test_helpsteer2_pairs_consecutive_responses_by_helpfulness():
    data = load_preference_data(public("helpsteer2", FIXTURES / "helpsteer2.jsonl"))
    assert data.aspect_names == ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
    rows = data.splits["train"].to_list()
    assert [(r["prompt"], r["chosen"], r["rejected"], r["margin"]) for r in rows] == [
        (user("Explain gravity."), "Mass attracts mass.", "Things fall down because of magic.", 2.0),
        (user("List two fruits."), "Apple and pear.", "Apple", 2.0),
    ]
    assert rows[1]["aspects_chosen"] == [4.0, 4.0, 4.0, 0.0, 1.0]
    assert rows[1]["aspects_rejected"] == [2.0, 2.0, 2.0, 0.0, 0.0]
    assert data.report.excluded == {TIE: 1, "helpsteer2: prompt with a single response": 1}


def test_shp_labels_choose_the_preferred_comment():
    rows = load_preference_data(public("shp", FIXTURES / "shp.jsonl")).splits["train"].to_list()
    assert [(r["prompt"], r["chosen"], r["rejected"], r["margin"], r["subset"]) for r in rows] == [
        (user("How long to rest a steak?"), "About five minutes.", "Never rest it.", 3.0, "askculinary"),
        (user("Who built the pyramids?"), "Paid Egyptian workers.", "Aliens.", 4.0, "askhistorians"),
    ]


def test_rewardbench_is_a_test_split_filtered_by_subset():
    data = load_preference_data(public("rewardbench", FIXTURES / "rewardbench.parquet", subset="math-prm, hep-python"))
    assert list(data.splits) == ["test"]
    assert data.splits["test"]["subset"] == ["hep-python", "math-prm"]
    assert data.splits["test"]["chosen"] == ["cba", "6"]
    assert data.report.excluded == {"not in data.subset": 1}
    everything = load_preference_data(public("rewardbench", FIXTURES / "rewardbench.parquet"))
    assert len(everything.splits["test"]) == 3


def test_synthetic_format_returns_the_benchmark():
    small = SyntheticConfig(num_train=8, num_validation=4, num_test=4, num_shifted=4)
    data = load_preference_data(DataConfig(format="synthetic", synthetic=small, max_rows=6))
    assert set(data.splits) == {"train", "validation", "test", "shifted"}
    assert data.report.rows == {"train": 6, "validation": 4, "test": 4, "shifted": 4}
    assert data.aspect_names == []


# -- configs --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("yaml", sorted(CONF_DATA.glob("*.yaml")), ids=lambda p: p.stem)
def test_data_configs_are_typed_and_name_a_format(yaml):
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(yaml)))
    assert cfg.format == yaml.stem
    assert cfg.format == "synthetic" or cfg.format in FORMATS
    assert (cfg.path is None) == (cfg.format in ("synthetic", "jsonl"))


def test_bad_config_values_are_named():
    with pytest.raises(DataError, match="data.format"):
        load_preference_data(DataConfig(format="yaml"))
    with pytest.raises(DataError, match="on_bad_row"):
        load_preference_data(local(FIXTURES / "explicit.jsonl", on_bad_row="ignore"))
    with pytest.raises(DataError, match="pairing"):
        load_preference_data(local(FIXTURES / "explicit.jsonl", pairing="best"))
    with pytest.raises(DataError, match="data.train"):
        load_preference_data(DataConfig(format="jsonl"))
    with pytest.raises(DataError, match="no such file"):
        load_preference_data(local(FIXTURES / "missing.jsonl"))


def test_fixture_files_match_their_script(tmp_path):
    make_fixtures.write_fixtures(tmp_path)
    for made in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        committed = FIXTURES / made.relative_to(tmp_path)
        if made.suffix == ".parquet":
            assert pq.read_table(made).equals(pq.read_table(committed)), committed
        else:
            assert made.read_bytes() == committed.read_bytes(), committed


# -- bad rows -------------------------------------------------------------------------------------------------------
BAD = [(line, kind, field) for line, kind, field in make_fixtures.BAD_LINES if kind is not None]


@pytest.mark.parametrize(("line", "kind", "field"), BAD, ids=[f"{k}-{f}" for _, k, f in BAD])
def test_each_bad_row_is_named(tmp_path, line, kind, field):
    path = tmp_path / "mine.jsonl"
    path.write_bytes(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}).encode() + b"\n" + line + b"\n")
    with pytest.raises(DataError) as caught:
        load_preference_data(local(path))
    message = str(caught.value)
    assert str(path) in message and "line 2" in message and kind in message
    assert caught.value.row == 2 and caught.value.field == field
    if field:
        assert f"'{field}'" in message


def test_skipped_rows_are_counted_and_written_to_rejects(tmp_path, caplog):
    caplog.set_level("WARNING")
    data = load_preference_data(local(FIXTURES / "bad.jsonl", on_bad_row="skip"), tmp_path)
    assert data.splits["train"]["chosen"] == ["Yes.", "Sure."]
    assert data.report.skipped == dict(Counter(kind for _, kind, _ in BAD))
    assert data.report.rows_read == len(make_fixtures.BAD_LINES)
    rejects = [json.loads(line) for line in (tmp_path / REJECTS_FILE).read_text().splitlines()]
    assert data.report.rejects_path == str(tmp_path / REJECTS_FILE)
    expected = [(n, field) for n, (_, kind, field) in enumerate(make_fixtures.BAD_LINES, start=1) if kind]
    assert [(r["row"], r["field"]) for r in rejects] == expected
    assert all(r["file"] == str(FIXTURES / "bad.jsonl") and r["row_kind"] == "line" and r["reason"] for r in rejects)
    assert rejects[0]["raw"] == {"prompt": "p", "chosen": "c"}
    assert rejects[4]["raw"]["chosen"] == "caf\udce9"  # the invalid byte, kept
    assert "skipped 10 bad rows" in caplog.text


def test_table_rows_are_named_by_row_index(tmp_path):
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p", "chosen": "", "rejected": "r"}]
    (tmp_path / "mine.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mine.parquet")
    for name in ("mine.json", "mine.parquet"):
        with pytest.raises(DataError, match=r"mine\.\w+, row index 1, field 'chosen': empty text"):
            load_preference_data(local(tmp_path / name))


def test_csv_rows_are_named_by_line(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text('prompt,chosen,rejected\np,"multi\nline",r\np,c\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 4: invalid value: 2 cells, the header has 3"):
        load_preference_data(local(path))
    path.write_text("prompt,chosen,rejected,margin\np,c,r,high\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2, field 'margin': wrong type"):
        load_preference_data(local(path))


def test_invalid_utf8_in_parquet_is_named(tmp_path):
    offsets = pa.array([0, 1, 3], type=pa.int32()).buffers()[1]
    chosen = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"ca\xff")])
    pq.write_table(pa.table({"prompt": ["p", "q"], "chosen": chosen, "rejected": ["r", "s"]}), tmp_path / "x.parquet")
    with pytest.raises(DataError, match="row index 1, field 'chosen': undecodable text"):
        load_preference_data(local(tmp_path / "x.parquet"))


def test_public_dataset_rows_are_validated(tmp_path):
    row = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.", "rejected": "\n\nHuman: Bye\n\nAssistant: Bye."}
    path = write_jsonl(tmp_path / "hh.jsonl", [row])
    with pytest.raises(DataError, match=r"row index 0, field 'rejected': invalid value: chosen and rejected differ"):
        load_preference_data(public("hh_rlhf", path, on_bad_row="error"))
    good = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi\n\nAssistant: Go."}
    write_jsonl(path, [row, good])
    skipped = load_preference_data(public("hh_rlhf", path), tmp_path)  # the yaml skips bad public rows
    assert skipped.report.skipped == {"invalid value": 1} and skipped.splits["train"]["rejected"] == ["Go."]


def test_conversational_rows_must_share_the_prompt(tmp_path):
    rows = [{"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
             "rejected": [{"role": "user", "content": "z"}, {"role": "assistant", "content": "c"}]},
            {"chosen": [{"role": "user", "content": "a"}], "rejected": [{"role": "user", "content": "b"}]},
            {"chosen": [{"role": "assistant", "content": "b"}], "rejected": [{"role": "assistant", "content": "c"}]},
            {"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
             "rejected": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c"}]}]
    data = load_preference_data(local(write_jsonl(tmp_path / "c.jsonl", rows), on_bad_row="skip"), tmp_path)
    assert data.splits["train"]["prompt"] == [user("a")]
    rejects = [json.loads(line) for line in (tmp_path / REJECTS_FILE).read_text().splitlines()]
    assert [(r["row"], r["field"]) for r in rejects] == [(1, "rejected"), (2, "chosen"), (3, "prompt")]
    assert data.report.skipped == {"invalid value": 2, "empty text": 1}


_text = st.text(st.characters(exclude_categories=()), max_size=6)  # surrogates too
_scalar = st.none() | st.booleans() | st.integers() | st.floats() | _text
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", ""]), "content": _text})
_value = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=2),
                      max_leaves=5) | st.lists(_message | _scalar, max_size=3)
_keys = st.sampled_from(["prompt", "chosen", "rejected", "margin", "aspects_chosen", "aspects_rejected", "subset",
                         "question_type", "reference", "other"])
_good_row = st.fixed_dictionaries({"prompt": _text, "chosen": _text, "rejected": _text},
                                  optional={"margin": st.floats(), "aspects_chosen": st.lists(st.floats(), max_size=2)})
_row = st.dictionaries(_keys, _value, max_size=6) | _good_row | _value


def _line(row: object, ascii_only: bool) -> bytes:
    return json.dumps(row, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


_garbage = st.binary(min_size=1, max_size=12).filter(
    lambda b: b"\n" not in b and b"\r" not in b and b.strip(b" \t") and not b.startswith(b"\xef\xbb\xbf"))
_lines = st.lists(st.builds(_line, _row, st.booleans()) | _garbage, min_size=1, max_size=8)


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_lines)
@example([b"(\xb5/\xfd"])  # zstd's magic, which the fuzzer found: the file is refused whole as not text
@example([b"\xff\xfe{}"])  # a UTF-16 byte order mark before UTF-8 text
def test_malformed_rows_load_or_raise_data_error_never_vanish(lines):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        rejects = Path(tmp) / REJECTS_FILE
        try:
            data = load_preference_data(local(path, on_bad_row="skip"), tmp)
        except DataError as err:
            content = path.read_bytes()
            if any(content.startswith(magic) for magic, _, _ in BINARY_FORMATS):  # not text: refused whole, named
                assert str(err).startswith(f"file {path}: is a ") and ", not text: " in str(err)
                return
            if any(content.startswith(bom) for bom, _ in BYTE_ORDER_MARKS) and "byte order mark" in str(err):
                assert str(err).startswith(f"file {path}: starts with a ")  # a UTF-16/32 mark before UTF-8 text
                return
            # every line was bad: the file is named, every line is in the rejects
            assert f"file {path}: the train split has no pairs" in str(err)
            assert len(rejects.read_text().splitlines()) == len(lines)
            return
        loaded = sum(len(split) for split in data.splits.values())
        skipped = sum(data.report.skipped.values())
        assert loaded + skipped == len(lines) == data.report.rows_read
        assert skipped == (len(rejects.read_text().splitlines()) if rejects.exists() else 0)
        try:
            strict = load_preference_data(local(path))
        except DataError:
            assert skipped > 0
        else:
            assert skipped == 0 and sum(len(s) for s in strict.splits.values()) == len(lines)


# -- splits, pairing, caps ----------------------------------------------------------------------------------------
def _many(tmp_path: Path, n: int = 50) -> Path:
    return write_jsonl(tmp_path / "many.jsonl",
                       [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(n)])


def test_missing_splits_are_carved_from_train_by_seed(tmp_path):
    path = _many(tmp_path)

    def splits(seed: int) -> dict[str, list[str]]:
        cfg = local(path, split_seed=seed, validation_fraction=0.1, test_fraction=0.2)
        data = load_preference_data(cfg)
        assert data.report.carved == {"validation": "train", "test": "train"}
        return {name: list(split["chosen"]) for name, split in data.splits.items()}

    first = splits(0)
    assert {k: len(v) for k, v in first.items()} == {"train": 35, "validation": 5, "test": 10}
    assert sorted(sum(first.values(), [])) == sorted(f"good {i}" for i in range(50))
    assert splits(0) == first
    assert splits(1) != first


def test_given_splits_are_kept_and_only_missing_ones_carved(tmp_path):
    path = _many(tmp_path)
    cfg = local(path, validation=str(FIXTURES / "explicit.jsonl"), validation_fraction=0.5, test_fraction=0.1)
    data = load_preference_data(cfg)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 45, "validation": 3, "test": 5}
    assert data.report.carved == {"test": "train"}


def test_ultrafeedback_pairing_modes():
    scores = [4.5, 2.0, 3.0, 1.0, None]
    assert pair_indices(scores, "best_vs_worst", random.Random(0)) == [(0, 3)]
    assert pair_indices(scores, "all_pairs", random.Random(0)) == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 1), (2, 3)]
    drawn = {pair_indices(scores, "best_vs_random", random.Random(seed))[0] for seed in range(30)}
    assert drawn == {(0, 1), (0, 2), (0, 3)}
    assert pair_indices([2.0, 2.0, None], "best_vs_random", random.Random(0)) == []
    assert pair_indices([None, None], "all_pairs", random.Random(0)) == []

    def pairs(**overrides) -> list[tuple[str, str]]:
        data = load_preference_data(public("ultrafeedback", FIXTURES / "ultrafeedback.jsonl", **overrides))
        return list(zip(data.splits["train"]["chosen"], data.splits["train"]["rejected"]))

    assert len(pairs(pairing="all_pairs")) == 6
    random_pairs = pairs(pairing="best_vs_random")
    assert random_pairs == pairs(pairing="best_vs_random")
    assert random_pairs[0][0] == "Soft rain on the roof"
    assert pairs(pairing="best_vs_worst", rank_by="overall_score") == [
        ("Clouds weep; streets shine bright", "I cannot write poems."), ("Sure, yes.", "Yes.")]


def test_max_rows_takes_the_first_rows_of_each_split(tmp_path):
    path = _many(tmp_path)
    full = load_preference_data(local(path, validation_fraction=0.2))
    capped = load_preference_data(local(path, validation_fraction=0.2, max_rows=4))
    assert capped.report.rows == {"train": 4, "validation": 4}
    assert capped.report.capped == {"train": 40, "validation": 10}
    for name in ("train", "validation"):
        assert list(capped.splits[name]["chosen"]) == list(full.splits[name]["chosen"])[:4]
