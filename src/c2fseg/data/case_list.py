"""Fixed case lists for a stage (``data_split/*.json``): which cases a stage trains on, in which fold.

A case list restricts one stage of ``c2fseg split`` to the listed cases and replaces its seeded
k-fold split with the list's one fold, which becomes **fold 0** of that stage (the list's own
fold name, e.g. ``fold_2``, is kept in the splits as ``case_list.fold_name``). The format::

    {"format": "c2fseg-case-list", "version": 1, "source": "...", "stage": "coarse",
     "group": "G6", "cases": [...], "fold": {"name": "fold_2", "train": [...], "val": [...]}}

``group`` is the FLARE23 group every listed case must be in (``c2fseg.data.groups``); a listed
case in another group, or not found in the data, is reported as a problem of the splits.
"""

from __future__ import annotations

import os
from pathlib import Path

from c2fseg.fileutil import check_document, read_json_file
from c2fseg.labels import check_stage

CASE_LIST_FORMAT = "c2fseg-case-list"
CASE_LIST_VERSION = 1
#: ``problems[].kind`` of a listed case that is not in the data folder.
LISTED_MISSING = "listed_case_missing"
#: ``problems[].kind`` of a listed case whose labels put it in another group than the list says.
LISTED_WRONG_GROUP = "listed_case_wrong_group"
_GROUPS = ("G1", "G2", "G3", "G4", "G5", "G6")


def load_case_list(path: str | os.PathLike) -> dict:
    """Read and check a case-list file; ValueError (naming the file and the fix) if it is unusable."""
    path = Path(path)
    doc = read_json_file(path, "see data_split/README.md for the case-list format")
    check_case_list(doc, str(path))
    doc["file"] = str(path)
    return doc


def check_case_list(doc: dict, where: str = "case list") -> None:
    """Raise ValueError naming the problem if ``doc`` is not a consistent case list."""

    def bad(msg: str) -> ValueError:
        return ValueError(f"{where}: {msg} (format described in data_split/README.md)")

    check_document(doc, CASE_LIST_FORMAT, CASE_LIST_VERSION, "case list", bad)
    try:
        check_stage(doc.get("stage"))
    except ValueError as exc:
        raise bad(str(exc)) from None
    if doc.get("group") not in _GROUPS:
        raise bad(f"group must be one of {', '.join(_GROUPS)}, got {doc.get('group')!r}")
    cases = doc.get("cases")
    if not isinstance(cases, list) or not cases or not all(isinstance(c, str) for c in cases):
        raise bad("'cases' must be a non-empty list of case ids")
    if len(set(cases)) != len(cases):
        raise bad("'cases' lists a case more than once")
    fold = doc.get("fold")
    if not isinstance(fold, dict) or not all(isinstance(fold.get(k), list) for k in ("train", "val")):
        raise bad("'fold' must hold 'train' and 'val' lists")
    train, val = set(fold["train"]), set(fold["val"])
    if train & val:
        raise bad(f"fold cases in both train and val: {sorted(train & val)[:5]}")
    if train | val != set(cases):
        raise bad("fold train + val must be exactly the listed cases")


def apply_case_list(doc: dict, groups_of: dict[str, list[str]]) -> tuple[dict, list[dict]]:
    """The stage entry of the splits for a case list, and the problems it finds.

    ``groups_of`` maps each usable case of the data to its groups. The stage keeps the listed
    cases present in the data (also those in the wrong group: the list says what to train on;
    they are reported); its one fold is the list's fold restricted to them.
    """
    listed = list(doc["cases"])
    present = [c for c in listed if c in groups_of]
    missing = [c for c in listed if c not in groups_of]
    group = doc["group"]
    wrong = [c for c in present if group not in groups_of[c]]
    where = doc.get("file", "the case list")
    problems = [{"case": c, "kind": LISTED_MISSING,
                 "reason": f"listed in {where} but not a usable case of the data folder"}
                for c in missing]
    problems += [{"case": c, "kind": LISTED_WRONG_GROUP,
                  "reason": f"listed in {where} as {group}, but its labels put it in "
                            f"{'/'.join(groups_of[c])}; it stays in the {doc['stage']} stage"}
                 for c in wrong]
    keep = set(present)
    fold = {k: sorted(c for c in doc["fold"][k] if c in keep) for k in ("train", "val")}
    entry = {
        "cases": sorted(present),
        "folds": [fold],
        "case_list": {"file": where, "source": doc.get("source"), "group": group,
                      "fold_name": doc["fold"].get("name"), "listed": len(listed),
                      "missing": missing, "wrong_group": wrong},
    }
    return entry, problems
