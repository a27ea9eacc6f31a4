"""Sort training cases into the FLARE23 data groups G1-G6 and make seeded k-fold splits per stage.

Groups follow only from what each label file contains (see ``shared/reference/flare23.md``):
G1 no label file, or one that holds only background (0) - nothing is annotated, so it is
treated as unlabelled (``robustness.md``) and the case records why in ``unlabelled_reason``;
G2 has a label file with at least one foreground label; G4 = G2 with tumor (label 14); G3 = G2
without tumor; G6 = G3 with all 13 organs; G5 = G3 with only some. An organ missing from a partial label file means "not
annotated", so each case records which organ labels are present ("annotated").

Stage training sets: coarse = G6, tumor = G4, organ = every usable case (G1 + G2; its targets are
pseudo labels). Cases with problems (bad label values, image/label header mismatch, label without
image, unreadable file) are listed with the reason and left out of every stage.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from c2fseg.fileutil import check_document, default_workers, read_json_file, write_json_atomic
from c2fseg.io import LabelValueError, geometry_difference, read_geometry, read_labels
from c2fseg.io.discover import BAD_NAME, COLLISION, CT_CHANNEL_SUFFIX, case_id_of, find_cases
from c2fseg.io.errors import ImageReadError, itk_reason
from c2fseg.labels import MAX_LABEL, ORGANS, STAGES, TUMOR

SPLITS_FORMAT = "c2fseg-splits"
SPLITS_VERSION = 1
GROUPS: tuple[str, ...] = ("G1", "G2", "G3", "G4", "G5", "G6")
#: ``CaseInfo.problem`` of a case whose scan crashed its worker process.
SCAN_FAILED = "scan_failed"
#: Errors that make one file unreadable (never raised out of :func:`scan_case`).
_READ_ERRORS = (ImageReadError, OSError, RuntimeError)


@dataclass
class CaseInfo:
    """What one training case holds; ``problem`` set means the case is unusable."""

    case: str
    image: str | None
    label: str | None
    groups: list[str] = field(default_factory=list)  # e.g. ["G2", "G3", "G6"]
    labels_present: list[int] = field(default_factory=list)
    annotated: list[int] = field(default_factory=list)  # organ ids present in the label file
    problem: str | None = None  # problem kind, e.g. "label_values"
    reason: str | None = None
    unlabelled_reason: str | None = None  # why a case with a label file is G1

    @property
    def group(self) -> str | None:
        """The most specific group (G1, G4, G5 or G6)."""
        return self.groups[-1] if self.groups else None


def groups_for(labels_present: list[int] | None) -> list[str]:
    """Groups of a case from the labels in its label file (None = no label file).

    A label file with no foreground label (only 0, or no voxels) annotates nothing: G1.
    """
    if labels_present is None or not any(v != 0 for v in labels_present):
        return ["G1"]
    if TUMOR in labels_present:
        return ["G2", "G4"]
    complete = all(organ in labels_present for organ in ORGANS)
    return ["G2", "G3", "G6" if complete else "G5"]


def label_values(array: np.ndarray, path: Path, chunk: int = 1 << 22) -> list[int]:
    """Distinct label values of a label array; ValueError if any is not an integer in 0-14.

    Counts with ``np.bincount`` chunk by chunk, so a 512x512x300 map needs no big temporaries.
    """
    if array.dtype.kind not in "iubf":
        raise ValueError(f"{path}: unsupported label pixel type {array.dtype}")
    flat = array.reshape(-1)
    counts = np.zeros(MAX_LABEL + 1, dtype=np.int64)
    for start in range(0, flat.size, chunk):
        part = flat[start : start + chunk]
        if part.dtype.kind == "f":
            if not np.all(np.isfinite(part)) or np.any(part != np.round(part)):
                raise ValueError(f"{path}: label values must be whole numbers 0-{MAX_LABEL}")
            part = part.astype(np.int64)
        if part.min() < 0 or part.max() > MAX_LABEL:
            bad = np.unique(part[(part < 0) | (part > MAX_LABEL)])[:10]
            shown = ", ".join(str(int(v)) for v in bad)
            raise ValueError(f"{path}: label values outside 0-{MAX_LABEL}: {shown}")
        counts += np.bincount(part, minlength=MAX_LABEL + 1)
    return [int(v) for v in np.flatnonzero(counts)]


def scan_case(image_path: str | os.PathLike | None, label_path: str | os.PathLike | None) -> CaseInfo:
    """Read one case's label file (and the image header) and sort it into its groups.

    The label is read with :func:`c2fseg.io.read_labels` (integrity and value checks); of the
    image only the header is read. Never raises for bad data: problems are returned in
    ``CaseInfo.problem``/``reason``.
    """
    image_path = Path(image_path) if image_path is not None else None
    label_path = Path(label_path) if label_path is not None else None
    case = (case_id_of(label_path, "labels") if label_path is not None
            else case_id_of(image_path, "images"))  # type: ignore[arg-type]
    info = CaseInfo(case, str(image_path) if image_path else None, str(label_path) if label_path else None)
    if image_path is None:
        return _fail(info, "label_without_image", f"{label_path}: label file has no image "
                     f"(expected imagesTr/{case}{CT_CHANNEL_SUFFIX}.<ext>)")
    try:
        image_geometry = read_geometry(image_path)
    except _READ_ERRORS as exc:
        return _fail(info, "unreadable_image", _read_failure(image_path, exc))
    if label_path is None:
        info.groups = groups_for(None)
        return info
    try:
        label = read_labels(label_path)
    except LabelValueError as exc:
        return _fail(info, "label_values", str(exc))
    except _READ_ERRORS as exc:
        return _fail(info, "unreadable_label", _read_failure(label_path, exc))
    why = geometry_difference(image_geometry, label.geometry)
    if why:
        return _fail(info, "geometry_mismatch",
                     f"{label_path}: header differs from image {image_path.name}: {why}")
    present = label_values(label.array, label_path)
    info.labels_present = present
    info.annotated = [v for v in present if v in ORGANS]
    info.groups = groups_for(present)
    if info.groups == ["G1"]:
        info.unlabelled_reason = (f"{label_path}: label file holds only background (0), nothing "
                                  "is annotated; treated as unlabelled (G1)")
        info.label = None
    return info


def _read_failure(path: Path, exc: Exception) -> str:
    """The reason for an unreadable file: c2fseg.io's message (it names the file), or the
    useful line of any other error."""
    if isinstance(exc, ImageReadError):
        return str(exc)
    return f"{path}: cannot be read ({itk_reason(exc)})"


def _fail(info: CaseInfo, kind: str, reason: str) -> CaseInfo:
    info.problem, info.reason = kind, reason
    return info


def pair_cases(data_dir: Path) -> tuple[dict[str, tuple[Path | None, Path | None]], list[dict]]:
    """Pair ``imagesTr/<case>_0000.<ext>`` with ``labelsTr/<case>.<ext>``; list naming problems.

    Cases are found with :func:`c2fseg.io.find_cases` (layouts "images" and "labels"); a case
    with two files in one folder is a ``duplicate`` problem and left out.
    """
    images_dir, labels_dir = data_dir / "imagesTr", data_dir / "labelsTr"
    if not images_dir.is_dir():
        raise FileNotFoundError(
            f"{data_dir}: no imagesTr folder; expected the nnU-Net raw layout "
            "DATA/imagesTr/<case>_0000.nii.gz and DATA/labelsTr/<case>.nii.gz"
        )
    problems: list[dict] = []
    images = _case_files(images_dir, "images", problems)
    labels = _case_files(labels_dir, "labels", problems) if labels_dir.is_dir() else {}
    dup = {p["case"] for p in problems if p["kind"] == "duplicate"}
    pairs = {c: (images.get(c), labels.get(c)) for c in sorted(set(images) | set(labels)) if c not in dup}
    return pairs, problems


def _case_files(folder: Path, layout: str, problems: list[dict]) -> dict[str, Path]:
    """{case: file} of one folder; naming problems are appended to ``problems``."""
    found: dict[str, Path] = {}
    for case in find_cases(folder, layout):
        if case.problem == BAD_NAME:
            problems.append(_problem(case.case_id, "bad_name", case.error or ""))
        elif case.problem == COLLISION:
            first, *others = case.candidates
            problems += [_problem(case.case_id, "duplicate", f"{first.name} and {other.name} in "
                                  f"{folder} are the same case; keep one") for other in others]
        else:
            found[case.case_id] = case.path
    return found


def _problem(case: str, kind: str, reason: str) -> dict:
    return {"case": case, "kind": kind, "reason": reason}


def scan_cases(pairs: dict[str, tuple[Path | None, Path | None]], workers: int) -> list[CaseInfo]:
    """Scan every case in a process pool (inline for one worker) with a progress bar.

    A case whose worker process dies (even when re-run alone) becomes a problem case
    (``SCAN_FAILED``) instead of stopping the scan; the other cases keep their results.
    """
    from c2fseg.parallel import run_cases

    tasks = [(case, (img, lab)) for case, (img, lab) in pairs.items()]
    results: list[CaseInfo] = []
    for case, info, error in run_cases(scan_case, tasks, workers, desc="scan labels"):
        if info is None:
            img, lab = pairs[case]
            info = _fail(CaseInfo(case, str(img) if img else None, str(lab) if lab else None),
                         SCAN_FAILED, f"{lab or img}: scanning failed: {error}")
        results.append(info)
    return sorted(results, key=lambda info: info.case)


def kfold(cases: list[str], strata: dict[str, str], folds: int, seed: int, stage: str) -> list[dict]:
    """Seeded k-fold split: each case in exactly one val fold, fold sizes differ by at most 1.

    Cases are shuffled within each stratum (group), strata are concatenated and dealt round-robin,
    so every group is spread evenly too. nnU-Net's ``splits_final.json`` format.
    """
    rng = np.random.default_rng([seed, STAGES.index(stage)])
    order: list[str] = []
    for stratum in sorted(set(strata[c] for c in cases)):
        members = sorted(c for c in cases if strata[c] == stratum)
        order += [members[i] for i in rng.permutation(len(members))]
    val = [sorted(order[k::folds]) for k in range(folds)]
    return [{"train": sorted(set(cases) - set(v)), "val": v} for v in val]


def build_splits(data_dir: str | os.PathLike, folds: int = 5, seed: int = 0,
                 workers: int | None = None, case_lists: list[dict] | None = None) -> dict:
    """Scan a FLARE/nnU-Net raw dataset and return the splits document.

    Keys: ``format``/``version``; ``data_dir`` (absolute), ``seed``, ``folds``; ``counts`` per group
    (plus ``cases`` usable and ``problems``); ``stages[stage] = {"cases": [...], "folds": [{"train":
    [...], "val": [...]}, ...]}`` (nnU-Net ``splits_final.json`` form); ``cases[case] = {"group",
    "groups", "image", "label" (relative to data_dir; label None for G1), "labels_present",
    "annotated", "unlabelled_reason" (set for a G1 case whose label file holds only
    background)}``; ``problems`` = [{"case", "kind", "reason"}]; ``warnings``.

    ``case_lists`` (from :func:`c2fseg.data.case_list.load_case_list`) fix a stage's cases and
    its one fold (fold 0); listed cases missing from the data or in another group than the list
    says are added to ``problems`` (see :func:`c2fseg.data.case_list.apply_case_list`).
    """
    from c2fseg.data.case_list import apply_case_list

    if folds < 2:
        raise ValueError(f"folds must be >= 2 (got {folds})")
    data_dir = Path(data_dir).resolve()
    pairs, problems = pair_cases(data_dir)
    infos = scan_cases(pairs, workers or default_workers())
    problems += [_problem(i.case, i.problem, i.reason) for i in infos if i.problem]  # type: ignore[arg-type]
    good = [i for i in infos if not i.problem]
    group_of = {i.case: i.group for i in good}
    members = {
        "coarse": [i.case for i in good if "G6" in i.groups],
        "tumor": [i.case for i in good if "G4" in i.groups],
        "organ": [i.case for i in good],
    }
    stages = {stage: {"cases": cases, "folds": kfold(cases, group_of, folds, seed, stage)}  # type: ignore[arg-type]
              for stage, cases in members.items()}
    groups_of = {i.case: list(i.groups) for i in good}
    for doc in case_lists or []:
        stages[doc["stage"]], listed_problems = apply_case_list(doc, groups_of)
        problems += listed_problems
    warnings = [
        f"stage {stage} has {len(entry['cases'])} case(s), fewer than {folds} folds: some folds "
        "have no validation cases" for stage, entry in stages.items()
        if "case_list" not in entry and len(entry["cases"]) < folds
    ]
    background_only = [i.case for i in good if i.unlabelled_reason]
    if background_only:
        shown = ", ".join(background_only[:10]) + (", ..." if len(background_only) > 10 else "")
        warnings.append(f"{len(background_only)} label file(s) hold only background and were "
                        f"treated as unlabelled (G1): {shown}")
    return {
        "format": SPLITS_FORMAT,
        "version": SPLITS_VERSION,
        "data_dir": str(data_dir),
        "seed": seed,
        "folds": folds,
        "counts": {g: sum(g in i.groups for i in good) for g in GROUPS}
        | {"cases": len(good), "problems": len(problems)},
        "stages": stages,
        "cases": {i.case: _case_record(i, data_dir) for i in good},
        "problems": sorted(problems, key=lambda p: (p["case"], p["kind"])),
        "warnings": warnings,
    }


def _case_record(info: CaseInfo, data_dir: Path) -> dict:
    """JSON record of a usable case, with file paths relative to the data folder."""
    record = asdict(info)
    for key in ("image", "label"):
        if record[key] is not None:
            record[key] = os.path.relpath(record[key], data_dir)
    del record["case"], record["problem"], record["reason"]
    return {"group": info.group, **record}


def write_splits(splits: dict, path: str | os.PathLike) -> Path:
    """Validate and write the splits document as JSON, atomically (temp file + rename)."""
    validate_splits(splits, str(path))
    return write_json_atomic(path, splits, indent=1)


def load_splits(path: str | os.PathLike) -> dict:
    """Read and validate a splits.json written by ``c2fseg split``."""
    path = Path(path)
    splits = read_json_file(path, "create it with `c2fseg split`")
    validate_splits(splits, str(path))
    return splits


def validate_splits(splits: dict, where: str = "splits") -> None:
    """Raise ValueError naming the problem if ``splits`` is not a consistent splits document."""

    def bad(msg: str) -> ValueError:
        return ValueError(f"{where}: {msg}; recreate it with `c2fseg split`")

    check_document(splits, SPLITS_FORMAT, SPLITS_VERSION, "splits file", bad)
    missing = [k for k in ("data_dir", "seed", "folds", "counts", "stages", "cases", "problems")
               if k not in splits]
    if missing:
        raise bad(f"missing keys {missing}")
    known = set(splits["cases"])
    for stage in STAGES:
        entry = splits["stages"].get(stage)
        if not isinstance(entry, dict) or "cases" not in entry or "folds" not in entry:
            raise bad(f"stage {stage!r} is missing or lacks 'cases'/'folds'")
        cases = set(entry["cases"])
        if cases - known:
            raise bad(f"stage {stage!r} lists unknown cases {sorted(cases - known)[:5]}")
        if "case_list" in entry:
            _check_listed_folds(entry, stage, bad)
            continue
        if len(entry["folds"]) != splits["folds"]:
            raise bad(f"stage {stage!r} has {len(entry['folds'])} folds, expected {splits['folds']}")
        vals = [c for fold in entry["folds"] for c in fold["val"]]
        if sorted(vals) != sorted(cases):
            raise bad(f"stage {stage!r}: validation folds do not hold each case exactly once")
        for k, fold in enumerate(entry["folds"]):
            if set(fold["train"]) != cases - set(fold["val"]):
                raise bad(f"stage {stage!r} fold {k}: train is not the stage cases minus val")


def _check_listed_folds(entry: dict, stage: str, bad) -> None:
    """A case-list stage: each fold's train and val are disjoint and together the stage cases."""
    cases = set(entry["cases"])
    for k, fold in enumerate(entry["folds"]):
        train, val = set(fold["train"]), set(fold["val"])
        if train & val or train | val != cases:
            raise bad(f"stage {stage!r} fold {k} (from a case list): train and val must split the "
                      "stage cases")
