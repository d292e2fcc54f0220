"""Public datasets as they are on the hub: tests/fixtures/hub/<name>/ has each dataset's files, folders, splits and
columns (written from its card by make_hub_fixtures.py), read through ``data.path=FOLDER`` with the real
conf/data/<name>.yaml, which takes the same ``datasets.load_dataset`` call as the hub name."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from vrm.config.data import DataConfig
from vrm.data.formats import TIE
from vrm.data.helpsteer2 import parse_helpsteer2_prompt
from vrm.data.loading import load_preference_data
from vrm.errors import DataError, RowFault

ROOT = Path(__file__).resolve().parents[1]
HUB = ROOT / "tests" / "fixtures" / "hub"
CARDS = {"hh-rlhf": "Anthropic/hh-rlhf", "ultrafeedback_binarized": "HuggingFaceH4/ultrafeedback_binarized",
         "UltraFeedback": "openbmb/UltraFeedback", "HelpSteer2": "nvidia/HelpSteer2", "SHP": "stanfordnlp/SHP",
         "reward-bench": "allenai/reward-bench", "reward-bench-2": "allenai/reward-bench-2"}
_spec = importlib.util.spec_from_file_location("make_hub_fixtures", HUB / "make_hub_fixtures.py")
make_hub_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_hub_fixtures)


def hub(config: str, folder: str, **overrides) -> DataConfig:
    """conf/data/<config>.yaml reading the fixture folder, no carved splits."""
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(ROOT / "conf" / "data" / f"{config}.yaml"),
                          {"path": str(HUB / folder), "validation_fraction": 0.0, "test_fraction": 0.0, **overrides})
    return OmegaConf.to_object(cfg)


def user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def _content(path: Path) -> object:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    return path.read_bytes()


@pytest.mark.parametrize("folder", sorted(CARDS))
def test_each_fixture_names_its_card_and_is_what_the_script_writes(folder, tmp_path):
    assert f"https://huggingface.co/datasets/{CARDS[folder]}" in (HUB / folder / "README.md").read_text()
    make_hub_fixtures.WRITERS[folder](tmp_path)
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(HUB / folder) for p in (HUB / folder).rglob("*") if p.is_file())
    for name in files:
        assert _content(tmp_path / name) == _content(HUB / folder / name), name


# -- Anthropic/hh-rlhf ------------------------------------------------------------------------------------------------
def test_hh_rlhf_reads_every_data_dir_and_splits_the_shared_transcript(tmp_path):
    data = load_preference_data(hub("hh_rlhf", "hh-rlhf"), tmp_path)
    train = data.splits["train"].to_list()
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in train] == [
        (user("How do I pick a lock?"), "I can't help with breaking into places.", "Use a tension wrench."),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! What can I do for you?"},
          {"role": "user", "content": "Tell me something mean."}],
         "I'd rather say something kind: you asked nicely.", "You are boring."),
        (user("How do I boil an egg?"), "Put it in boiling water for nine minutes.", "Why would you?"),
    ]
    assert data.splits["test"]["chosen"] == ["Honesty usually works better.", "4."]
    # The transcript ending in an empty assistant turn is skipped and counted; red-team-attempts is not read.
    assert data.report.skipped == {"empty text": 1} and data.report.rows_read == 6
    assert (tmp_path / "rejects.jsonl").exists()


def test_hh_rlhf_subset_loads_that_data_dir_with_the_same_name_in_every_split():
    data = load_preference_data(hub("hh_rlhf", "hh-rlhf", subset="harmless-base"))
    assert data.report.rows == {"train": 2, "test": 1}
    assert {s for split in data.splits.values() for s in split["subset"]} == {"harmless-base"}


def test_a_data_dir_that_is_not_there_is_named_with_the_closest():
    with pytest.raises(DataError, match=r"'harmles-base' is not a data_dir .* \['harmless-base', 'helpful-base', "
                                        r"'red-team-attempts'\]; did you mean 'harmless-base'\?"):
        load_preference_data(hub("hh_rlhf", "hh-rlhf", subset="harmles-base"))


# -- HuggingFaceH4/ultrafeedback_binarized ----------------------------------------------------------------------------
def test_ultrafeedback_binarized_skips_and_counts_ties_by_default():
    data = load_preference_data(hub("ultrafeedback_binarized", "ultrafeedback_binarized"))
    assert data.splits["train"]["chosen"] == ["2", "C-A-T"] and data.splits["train"]["margin"] == [7.0, 4.5]
    assert data.splits["test"]["chosen"] == ["Mostly, yes."]
    assert data.report.excluded == {TIE: 2}  # one tie in train_prefs, one in test_prefs; *_sft and *_gen unread
    assert "left out: tie" in data.report.summary()


def test_ultrafeedback_binarized_keeps_ties_with_margin_zero_when_asked():
    data = load_preference_data(hub("ultrafeedback_binarized", "ultrafeedback_binarized", ties="keep"))
    assert data.splits["train"]["chosen"] == ["2", "C-A-T", "Hello!"]
    assert data.splits["train"]["margin"] == [7.0, 4.5, 0.0] and data.splits["test"]["margin"] == [3.0, 0.0]
    assert not data.report.excluded


def test_a_tie_rule_that_does_not_exist_is_refused():
    with pytest.raises(DataError, match="data.ties must be one of"):
        load_preference_data(hub("ultrafeedback_binarized", "ultrafeedback_binarized", ties="half"))


# -- openbmb/UltraFeedback --------------------------------------------------------------------------------------------
def test_ultrafeedback_reads_every_source_file_with_na_ratings_and_counts_the_tie():
    data = load_preference_data(hub("ultrafeedback", "UltraFeedback", pairing="all_pairs"))
    rows = data.splits["train"].to_list()
    # evol_instruct: ratings means 4.5, 7/3 (honesty N/A: the mean of the three others), 1, 4 -> 6 pairs;
    # sharegpt: all four alike (a tie, counted); 'Name a planet': 5, 1.25, 2.75, 4.75 -> 6 pairs.
    assert len(rows) == 12 and data.report.excluded == {TIE: 1}
    rain = next(r for r in rows if r["chosen"] == "Soft rain on the roof" and r["rejected"] == "Rain rain rain rain")
    assert rain["aspects_rejected"] == [2.0, None, 2.0, 3.0] and rain["margin"] == pytest.approx(4.5 - 7 / 3)
    assert {r["subset"] for r in rows} == {"evol_instruct", "sharegpt"}


def test_ultrafeedback_subset_filters_sources_and_names_a_wrong_one():
    data = load_preference_data(hub("ultrafeedback", "UltraFeedback", subset="sharegpt"))
    assert data.splits["train"]["prompt"] == [user("Name a planet.")]
    with pytest.raises(DataError, match=r"'sharegtp' matches no pair .* \['evol_instruct', 'sharegpt'\]; "
                                        r"did you mean 'sharegpt'\?"):
        load_preference_data(hub("ultrafeedback", "UltraFeedback", subset="sharegtp"))


# -- nvidia/HelpSteer2 ------------------------------------------------------------------------------------------------
MULTI_TURN = [{"role": "user", "content": "I want to learn Python."},
              {"role": "assistant", "content": "Great! Start with the tutorial."},
              {"role": "user", "content": "Which one?"}]


def test_helpsteer2_multi_turn_prompts_become_messages():
    data = load_preference_data(hub("helpsteer2", "HelpSteer2"))
    train = data.splits["train"].to_list()
    assert [(r["prompt"], r["chosen"], r["rejected"], r["margin"]) for r in train] == [
        (user("Explain gravity."), "Mass attracts mass.", "Things fall down because of magic.", 3.0),
        (MULTI_TURN, "The official one at docs.python.org.", "Any.", 2.0),
    ]
    assert data.splits["validation"]["chosen"] == ["Blue."]
    assert data.report.excluded == {TIE: 1}  # 'List two fruits.': both rated 3


def test_helpsteer2_ties_cannot_be_kept_they_have_no_side():
    with pytest.raises(DataError, match="data.ties=keep: data.format=helpsteer2 .* no direction"):
        load_preference_data(hub("helpsteer2", "HelpSteer2", ties="keep"))


@pytest.mark.parametrize("how", [("helpsteer2", {"subset": "preference"}), ("helpsteer2_preference", {})])
def test_helpsteer2_preference_data_trains_with_its_split_column_and_ties_counted(how):
    config, overrides = how
    data = load_preference_data(hub(config, "HelpSteer2", **overrides))
    assert data.report.format == "helpsteer2_preference"
    train = data.splits["train"].to_list()
    assert [(r["prompt"], r["chosen"], r["rejected"], r["margin"]) for r in train] == [
        (user("Explain gravity."), "Mass attracts mass.", "Things fall down because of magic.", 3.0),  # -3: first
        (MULTI_TURN, "The official one at docs.python.org.", "Any.", 2.0),  # +2: the second response
    ]
    assert data.splits["validation"]["chosen"] == ["Blue."]  # split 'val'
    assert data.report.excluded == {TIE: 1} and data.aspect_names == []


@pytest.mark.parametrize("prompt, why", [
    ("Hi\n<extra_id_1>Assistant\nHello", "the last turn must be the user's"),
    ("Hi\n<extra_id_1>User\nAgain", "turn 2 is marked user, expected assistant"),
    ("Hi\n<extra_id_1>Assistant\n\n<extra_id_1>User\nSo?", "turn 2 \\(assistant\\) is empty"),
])
def test_malformed_helpsteer2_turns_are_named(prompt, why):
    with pytest.raises(RowFault, match=why):
        parse_helpsteer2_prompt(prompt)


# -- stanfordnlp/SHP --------------------------------------------------------------------------------------------------
def test_shp_subsets_are_the_subreddits_in_every_split():
    data = load_preference_data(hub("shp", "SHP"))
    assert data.report.rows == {"train": 2, "validation": 2, "test": 2}
    for split in data.splits.values():
        assert split["subset"] == ["askculinary", "askhistorians"]
    test = data.splits["test"].to_list()
    assert (test[0]["chosen"], test[0]["margin"]) == ("A neutral oil with a high smoke point.", 4.0)  # labels 0: B
    only = load_preference_data(hub("shp", "SHP", subset="askhistorians"))
    assert only.splits["train"]["prompt"] == [user("Who built the pyramids?")]


# -- allenai/reward-bench ---------------------------------------------------------------------------------------------
def test_rewardbench_reads_the_filtered_split_and_checks_subset_names():
    data = load_preference_data(hub("rewardbench", "reward-bench"))
    assert list(data.splits) == ["test"] and data.report.rows == {"test": 7}  # raw's extra row is not read
    with pytest.raises(DataError, match=r"'mt-bench-medium' matches no pair .*did you mean 'mt-bench-med'\?"):
        load_preference_data(hub("rewardbench", "reward-bench", subset="mt-bench-medium"))


# -- allenai/reward-bench-2 -------------------------------------------------------------------------------------------
def test_rewardbench2_items_become_correct_by_incorrect_pairs_in_item_order():
    data = load_preference_data(hub("rewardbench2", "reward-bench-2"))
    items = data.items["test"]
    assert [item.id for item in items] == [row["id"] for row in make_hub_fixtures.REWARDBENCH2]
    test = data.splits["test"].to_list()
    assert len(test) == sum(len(i.chosen) * len(i.rejected) for i in items) == 32
    tied = [r for r in test if r["prompt"] == user("Name a primary colour.")][2:]  # after ref:0's two pairs
    assert [(r["chosen"], r["rejected"]) for r in tied] == [("Red.", "Green."), ("Red.", "Purple."),
                                                            ("Blue.", "Green."), ("Blue.", "Purple."),
                                                            ("Yellow.", "Green."), ("Yellow.", "Purple.")]
    capped = load_preference_data(hub("rewardbench2", "reward-bench-2", subset="Ties", max_rows=2))
    assert [i.id for i in capped.items["test"]] == ["ref:0", "tied:0"] and capped.report.rows == {"test": 8}


def test_rewardbench2_counts_that_disagree_with_the_lists_are_named(tmp_path):
    row = dict(make_hub_fixtures.REWARDBENCH2[0], num_correct=2, additional_metadata=None)
    (tmp_path / "rb2.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"num_correct.*2 but the row has 1"):
        load_preference_data(hub("rewardbench2", "reward-bench-2", path=str(tmp_path / "rb2.jsonl"),
                                 on_bad_row="error"))


# -- the empty-split error ----------------------------------------------------------------------------------------
def test_an_empty_split_names_its_own_reasons_only(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "margin": 1.0}) + "\n"
                     + json.dumps({"prompt": "p", "chosen": "", "rejected": "b"}) + "\n")
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b", "margin": 0}) + "\n")
    cfg = DataConfig(format="jsonl", train=str(train), test=str(test), validation_fraction=0.0, on_bad_row="skip")
    with pytest.raises(DataError, match="the test split has no pairs") as err:
        load_preference_data(cfg, tmp_path)
    assert TIE in str(err.value) and "empty text" not in str(err.value) and "skipped" not in str(err.value)


def test_vrm_train_runs_on_the_helpsteer2_preference_data(tmp_path):
    from conftest import TINY_OVERRIDES, compose_train

    from vrm.cli.train import train_and_export

    cfg = compose_train(TINY_OVERRIDES + ["data=helpsteer2_preference", f"data.path={HUB / 'HelpSteer2'}",
                                          "data.max_length=64", "logger=none", "callbacks=none"], tmp_path)
    metrics = train_and_export(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and 0.0 <= metrics["val/acc"] <= 1.0
