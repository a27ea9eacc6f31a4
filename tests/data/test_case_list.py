"""Case lists (data_split/*.json): `c2fseg split --cases` restricts a stage to a list and its fold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from c2fseg.cli import main
from c2fseg.data import generate_dataset
from c2fseg.data.case_list import (
    LISTED_MISSING,
    LISTED_WRONG_GROUP,
    check_case_list,
    load_case_list,
)
from c2fseg.data.groups import build_splits, load_splits
from c2fseg.train.run import nnunet_folds, stage_cases

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "data_split" / "hiasbuaa_coarse.json"


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    """Small phantom set (G6, G5, G4 cases) and each case's groups as `c2fseg split` finds them."""
    out = tmp_path_factory.mktemp("phantoms")
    generate_dataset(out, 6, 5, "small", progress=False,
                     group_fractions={"G6": 0.5, "G5": 0.25, "G4": 0.25})
    splits = build_splits(out, folds=2, workers=1)
    return out, {c: rec["groups"] for c, rec in splits["cases"].items()}


def case_list(cases: list[str], train: list[str], group: str = "G6") -> dict:
    return {"format": "c2fseg-case-list", "version": 1, "source": "test", "stage": "coarse",
            "group": group, "cases": cases,
            "fold": {"name": "fold_2", "train": train, "val": [c for c in cases if c not in train]}}


def write_list(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_published_coarse_list_is_consistent():
    doc = load_case_list(PUBLISHED)
    assert doc["stage"] == "coarse" and doc["group"] == "G6"
    assert len(doc["cases"]) == 219 and len(set(doc["cases"])) == 219
    assert len(doc["fold"]["train"]) == 175 and len(doc["fold"]["val"]) == 44
    assert all(c.startswith("FLARE23_") for c in doc["cases"])


@pytest.mark.parametrize("change, match", [
    ({"format": "x"}, "not a c2fseg case list"),
    ({"stage": "lungs"}, "unknown stage"),
    ({"group": "G7"}, "group must be"),
    ({"cases": ["a", "a"]}, "more than once"),
    ({"fold": {"train": ["a"], "val": ["a", "b"]}}, "both train and val"),
    ({"fold": {"train": ["a"], "val": []}}, "exactly the listed cases"),
])
def test_bad_case_lists_are_refused(change, match):
    doc = case_list(["a", "b"], ["a"]) | change
    with pytest.raises(ValueError, match=match):
        check_case_list(doc)


def test_split_with_cases_restricts_stage_and_reports(phantoms, tmp_path, capsys):
    data, groups = phantoms
    g6 = sorted(c for c, g in groups.items() if "G6" in g)
    other = sorted(c for c, g in groups.items() if "G6" not in g)
    assert len(g6) >= 2 and other
    listed = [g6[0], g6[1], other[0], "FLARE23_9998", "FLARE23_9999"]
    path = write_list(tmp_path / "list.json", case_list(listed, [g6[0], other[0], "FLARE23_9998"]))
    out = tmp_path / "splits.json"

    code = main(["split", str(data), "-o", str(out), "--folds", "2", "--workers", "1",
                 "--cases", str(path)])
    assert code == 3  # written, with problems
    printed = capsys.readouterr().out
    splits = load_splits(out)
    present = [g6[0], g6[1], other[0]]
    assert stage_cases(splits, "coarse") == sorted(present)  # exactly the listed and present cases
    assert nnunet_folds(splits, "coarse") == [{"train": sorted([g6[0], other[0]]), "val": [g6[1]]}]
    kinds = {(p["case"], p["kind"]) for p in splits["problems"]}
    assert (other[0], LISTED_WRONG_GROUP) in kinds
    assert {("FLARE23_9998", LISTED_MISSING), ("FLARE23_9999", LISTED_MISSING)} <= kinds
    assert not any(c in (g6[0], g6[1]) for c, _ in kinds)
    assert f"problem: FLARE23_9999: {LISTED_MISSING}" in printed
    assert f"problem: {other[0]}: {LISTED_WRONG_GROUP}" in printed
    assert "3 of 5 listed cases" in printed and "2 missing from the data, 1 not in G6" in printed
    # the other stages keep their k-fold splits over every usable case
    assert len(splits["stages"]["organ"]["folds"]) == 2
    assert stage_cases(splits, "organ") == sorted(groups)


def test_clean_list_exits_ok_and_fold_0_is_the_lists_fold(phantoms, tmp_path):
    data, groups = phantoms
    g6 = sorted(c for c, g in groups.items() if "G6" in g)
    path = write_list(tmp_path / "list.json", case_list(g6, g6[:-1]))
    out = tmp_path / "splits.json"
    assert main(["split", str(data), "-o", str(out), "--workers", "1", "--cases", str(path)]) == 0
    splits = load_splits(out)
    entry = splits["stages"]["coarse"]
    assert entry["case_list"]["fold_name"] == "fold_2" and len(entry["folds"]) == 1
    assert entry["folds"][0]["val"] == [g6[-1]]


def test_edited_listed_fold_is_refused_on_load(phantoms, tmp_path):
    data, groups = phantoms
    g6 = sorted(c for c, g in groups.items() if "G6" in g)
    path = write_list(tmp_path / "list.json", case_list(g6, g6[:-1]))
    out = tmp_path / "splits.json"
    main(["split", str(data), "-o", str(out), "--workers", "1", "--cases", str(path)])
    broken = json.loads(out.read_text())
    broken["stages"]["coarse"]["folds"][0]["train"].remove(g6[0])
    out.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="from a case list"):
        load_splits(out)


def test_bad_case_list_file_is_a_usage_error(phantoms, tmp_path):
    data, _ = phantoms
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert main(["split", str(data), "-o", str(tmp_path / "s.json"), "--cases", str(bad)]) == 2
    assert main(["split", str(data), "-o", str(tmp_path / "s.json"),
                 "--cases", str(PUBLISHED), "--cases", str(PUBLISHED)]) == 2
