"""Build one cascade stage's nnU-Net raw dataset from a FLARE23-style data folder.

What each stage trains on (groups as in ``c2fseg.data.groups``):

* ``coarse``: fully labelled cases (G6), organs 1-13; any tumor voxel becomes background.
* ``tumor``: tumor cases (G4), 15 classes. Organs the case does not annotate are filled in
  from pseudo labels (made by the trained coarse model).
* ``organ``: every training case (labelled or not), 14 classes, from pseudo labels with the
  case's own annotated organs on top; under ground-truth tumor voxels the pseudo label is used
  (the organ there is unknown to the ground truth).

Partially labelled cases (G5 and most of G4): an organ missing from a label file means "not
annotated", not "background". Training on such a file as-is would teach the network that those
organs are background. Our rule: the coarse stage uses only fully labelled cases (G6), as the
published method did; the tumor and organ stages fill every unannotated organ from pseudo labels,
so no target ever labels an unannotated organ as background. The merge rules are:

1. ground-truth labels always win over pseudo labels;
2. tumor voxels stay tumor (tumor stage);
3. pseudo labels only add organs that the case does not annotate, and only on voxels that are
   ground-truth background.

A fully annotated case without tumor voxels needs no pseudo label (rule 3 adds nothing to it):
:func:`pseudo_label_needed` says which cases do, so the coarse model labels only those.

A case whose target is empty (no label of the stage, e.g. an unlabelled scan whose coarse pseudo
label found nothing) is skipped and reported in the build record's ``skipped`` entry; the build
fails only when no case is left.

Input paths come from the splits document (``splits["cases"][case]["image"/"label"]``, any image
format c2fseg reads); the stage dataset itself is always written as ``.nii.gz``.

Every case is written in canonical orientation (``c2fseg.io.geometry``: axes z, y, x toward
Superior, Posterior, Left) with an identity direction, cropped along z to its labelled slices plus
a margin, so that all cases share one axis order and the plans' axes are the canonical axes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2fseg.fileutil import write_json_atomic
from c2fseg.io import ImageReadError, read_geometry, read_image, read_labels, write_volume
from c2fseg.io.discover import COLLISION, CT_CHANNEL_SUFFIX, find_cases
from c2fseg.io.geometry import Geometry, grid_difference, make_geometry
from c2fseg.labels import LABELS, ORGANS, STAGE_LABELS, TUMOR, check_stage

#: Bumped when the merge rules or the file layout change, so old builds are redone.
BUILD_VERSION = 2
IMAGE_SUFFIX = CT_CHANNEL_SUFFIX + ".nii.gz"
LABEL_SUFFIX = ".nii.gz"
RECORD = "c2fseg_build.json"


class StageDatasetError(ValueError):
    """The data folder cannot be used for a stage; the message lists the cases and the fix."""


class EmptyTargetError(ValueError):
    """A case has no label of the stage in its target: it is skipped, not fatal."""


# ----------------------------------------------------------------------------- pure functions


def zcrop_bounds(labels: np.ndarray, margin: int = 10) -> tuple[int, int]:
    """Slice range [lo, hi) along canonical axis 0 spanning the labelled slices +- ``margin``.

    A map with no foreground keeps every slice (nothing tells us where the abdomen is).
    """
    nz = labels.shape[0]
    occupied = np.flatnonzero(labels.reshape(nz, -1).any(axis=1))
    if occupied.size == 0:
        return 0, nz
    return max(int(occupied[0]) - margin, 0), min(int(occupied[-1]) + margin + 1, nz)


def crop_z(array: np.ndarray, bounds: tuple[int, int]) -> np.ndarray:
    """``array[lo:hi]`` along canonical axis 0 (a view)."""
    lo, hi = bounds
    return array[lo:hi]


def annotated_organs(labels: np.ndarray) -> frozenset[int]:
    """Organs present in a ground-truth label map (absent organs count as not annotated)."""
    present = np.unique(labels)
    return frozenset(int(v) for v in present if int(v) in ORGANS)


def pseudo_label_needed(stage: str, labels_present: Iterable[int] | None) -> bool:
    """Whether a case of ``stage`` needs a pseudo label, from the labels its ground truth holds.

    None (no label file) needs one; the tumor stage needs one when an organ is not annotated,
    the organ stage also when the case has tumor voxels (the organ under them is unknown). A
    fully annotated case without tumor takes its whole target from the ground truth.
    """
    check_stage(stage)
    if stage == "coarse":
        return False
    if labels_present is None:
        return True
    present = {int(v) for v in labels_present}
    if any(o not in present for o in ORGANS):
        return True
    return stage == "organ" and TUMOR in present


def recorded_labels(entry: Mapping | None) -> tuple[int, ...] | None:
    """The label values ``c2fseg split`` recorded for a case (its splits ``cases`` entry), or None
    when the case has no label file or no record."""
    if not entry or not entry.get("label") or entry.get("labels_present") is None:
        return None
    return tuple(int(v) for v in entry["labels_present"])


def _organs_only(pseudo: np.ndarray) -> np.ndarray:
    """Pseudo labels restricted to organs 1-13 (anything else is background)."""
    return np.where(np.isin(pseudo, ORGANS), pseudo, 0).astype(np.uint8)


def _check_same_shape(gt: np.ndarray, pseudo: np.ndarray) -> None:
    if gt.shape != pseudo.shape:
        raise ValueError(f"pseudo label shape {pseudo.shape} differs from the label shape {gt.shape}")


def coarse_target(gt: np.ndarray) -> np.ndarray:
    """Coarse-stage target: organs 1-13 of a fully labelled case; tumor becomes background."""
    return np.where(gt == TUMOR, 0, gt).astype(np.uint8)


def tumor_target(gt: np.ndarray, pseudo: np.ndarray) -> np.ndarray:
    """Tumor-stage target (15 classes): ground truth plus pseudo labels of unannotated organs.

    Pseudo labels fill only organs the case does not annotate, only on ground-truth background;
    annotated organs and tumor voxels keep their ground-truth label.
    """
    _check_same_shape(gt, pseudo)
    pseudo = _organs_only(pseudo)
    missing = [o for o in ORGANS if o not in annotated_organs(gt)]
    fill = (gt == 0) & np.isin(pseudo, missing)
    out = gt.astype(np.uint8, copy=True)
    out[fill] = pseudo[fill]
    return out


def organ_target(gt: np.ndarray | None, pseudo: np.ndarray) -> np.ndarray:
    """Organ-stage target (14 classes, no tumor).

    Annotated organs come from the ground truth; ground-truth background gets the pseudo label of
    organs the case does not annotate; under ground-truth tumor the organ is unknown, so the pseudo
    label is used there. ``gt`` None (unlabelled case) means pseudo labels everywhere.
    """
    pseudo = _organs_only(pseudo)
    if gt is None:
        return pseudo
    _check_same_shape(gt, pseudo)
    missing = [o for o in ORGANS if o not in annotated_organs(gt)]
    out = np.where(np.isin(gt, ORGANS), gt, 0).astype(np.uint8)
    from_pseudo = ((gt == 0) & np.isin(pseudo, missing)) | (gt == TUMOR)
    out[from_pseudo] = pseudo[from_pseudo]
    return out


def stage_target(stage: str, gt: np.ndarray | None, pseudo: np.ndarray | None) -> np.ndarray:
    """The training target of ``stage`` from a ground-truth and/or a pseudo label map."""
    check_stage(stage)
    if stage == "coarse":
        if gt is None:
            raise ValueError("the coarse stage needs a ground-truth label map")
        return coarse_target(gt)
    if pseudo is None:
        raise ValueError(f"the {stage} stage needs a pseudo label map")
    if stage == "tumor":
        if gt is None:
            raise ValueError("the tumor stage needs a ground-truth label map")
        return tumor_target(gt, pseudo)
    return organ_target(gt, pseudo)


def stage_dataset_json(stage: str, num_training: int) -> dict:
    """nnU-Net dataset.json for a stage: one CT channel, consecutive labels 0..N."""
    labels = {LABELS[0]: 0, **{LABELS[lab]: lab for lab in STAGE_LABELS[stage]}}
    if sorted(labels.values()) != list(range(len(labels))):
        raise AssertionError("stage labels must be consecutive for nnU-Net")
    return {
        "name": f"c2fseg {stage}",
        "description": f"c2fseg {stage} stage (canonical orientation, z-cropped)",
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": int(num_training),
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO",
    }


# ----------------------------------------------------------------------------- case lookup


@dataclass(frozen=True)
class CaseSources:
    """Input files of one training case (label/pseudo may be None)."""

    case: str
    image: Path
    label: Path | None
    pseudo: Path | None
    #: label values the splits recorded for the case (None: unknown, read from the file if needed)
    labels_present: tuple[int, ...] | None = None

    def signature(self) -> dict:
        """Name, size and modification time of every input: changes mean "rebuild this case"."""
        sig = {}
        for key in ("image", "label", "pseudo"):
            p = getattr(self, key)
            if p is not None and p.exists():
                st = p.stat()
                sig[key] = [str(p.resolve()), st.st_size, st.st_mtime_ns]
            else:
                sig[key] = None
        return sig


def files_by_case(folder: Path | None, layout: str) -> dict[str, Path]:
    """{case id: file} of a folder (:func:`c2fseg.io.find_cases` in ``layout``); empty when the
    folder does not exist.

    For lookups only: of several files of one case the preferred one is taken (.nii.gz first),
    and names that are not case files (an image without ``_0000``) are left out.
    """
    if folder is None or not folder.is_dir():
        return {}
    return {c.case_id: c.path for c in find_cases(folder, layout) if c.ok or c.problem == COLLISION}


def find_pseudo_label(folder: Path, case: str,
                      files: Mapping[str, Path] | None = None) -> Path | None:
    """``<case>.<ext>`` (or ``<case>_0000.<ext>``) in a pseudo-label folder, if present.

    ``<ext>`` is any image format c2fseg reads (.nii.gz first). ``files`` is the folder's
    :func:`files_by_case` when the caller has it already (one folder scan for many cases).
    """
    files = files_by_case(folder, "labels") if files is None else files
    return files.get(case) or files.get(case + CT_CHANNEL_SUFFIX)


def case_sources(data_dir: Path, cases: Iterable[str], pseudo_dir: Path | None,
                 case_files: Mapping[str, Mapping] | None = None) -> list[CaseSources]:
    """Locate the image, label and pseudo label of every case (missing files are None).

    ``case_files`` is the splits document's ``cases`` entry: ``{case: {"image": rel, "label":
    rel or None}}`` with paths relative to ``data_dir`` (what ``c2fseg split`` found, any
    extension). Cases not in it are looked up as ``imagesTr/<case>_0000.<ext>`` and
    ``labelsTr/<case>.<ext>``; a missing image is reported as ``imagesTr/<case>_0000.nii.gz``.
    """
    cases = list(cases)
    listed = case_files or {}
    unlisted = any(not (listed.get(c) or {}).get("image") for c in cases)
    images = files_by_case(data_dir / "imagesTr", "images") if unlisted else {}
    labels = files_by_case(data_dir / "labelsTr", "labels") if unlisted else {}
    pseudo = files_by_case(pseudo_dir, "labels")
    out = []
    for case in cases:
        entry = listed.get(case)
        present = None
        if entry is not None and entry.get("image"):
            image = data_dir / entry["image"]
            label = data_dir / entry["label"] if entry.get("label") else None
            present = recorded_labels(entry)
        else:
            image = images.get(case) or data_dir / "imagesTr" / (case + IMAGE_SUFFIX)
            label = labels.get(case)
        out.append(CaseSources(
            case=case,
            image=image,
            label=label if label is not None and label.is_file() else None,
            pseudo=find_pseudo_label(pseudo_dir, case, pseudo) if pseudo_dir is not None else None,
            labels_present=present,
        ))
    return out


def geometry_mismatch(image_geom: Geometry, other_geom: Geometry) -> str | None:
    """Why a label's voxel grid differs from its image's, or None when it can be used with it.

    :func:`c2fseg.io.geometry.grid_difference`: canonical shape, spacing and origin, so a label
    stored in another but equivalent axis order matches its image, while one shifted in space
    does not.
    """
    return grid_difference(image_geom, other_geom)


def check_sources(stage: str, sources: list[CaseSources]) -> None:
    """Fail before any long work if files are missing or image/label headers disagree.

    Raises StageDatasetError listing every problem case (label values are checked while
    building, because they need the whole volume).
    """
    problems: list[str] = []
    needs_label = stage in ("coarse", "tumor")
    needs_pseudo = stage in ("tumor", "organ")
    for src in sources:
        if not src.image.is_file():
            problems.append(f"{src.case}: image {src.image} is missing")
            continue
        if needs_label and src.label is None:
            problems.append(f"{src.case}: no label file in labelsTr (the {stage} stage needs labels)")
        if needs_pseudo and src.pseudo is None and not _complete_without_pseudo(stage, src):
            problems.append(f"{src.case}: no pseudo label file (the case does not annotate every "
                            "organ, or has tumor voxels the organ stage needs an organ label under)")
        try:
            geom = read_geometry(src.image)
            for kind in ("label", "pseudo"):
                other = getattr(src, kind)
                if other is None:
                    continue
                why = geometry_mismatch(geom, read_geometry(other))
                if why is not None:
                    problems.append(f"{src.case}: {kind} {other.name} does not match the image "
                                    f"{src.image.name}: {why}")
        except ImageReadError as exc:
            problems.append(f"{src.case}: unreadable file ({exc})")
    if problems:
        raise StageDatasetError(_problem_report(stage, problems))


def _complete_without_pseudo(stage: str, src: CaseSources) -> bool:
    """True when ``src``'s label needs no pseudo label for ``stage``: judged from the labels the
    splits recorded, else from the file (an unreadable one counts as needing a pseudo label;
    the build reports why it cannot be read). The build checks it again on the label it reads."""
    if src.label is None:
        return False
    present = src.labels_present
    if present is None:
        try:
            present = np.unique(read_labels(src.label).array)
        except ImageReadError:
            return False
    return not pseudo_label_needed(stage, present)


def _problem_report(stage: str, problems: list[str]) -> str:
    shown = "\n  ".join(problems[:50])
    more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
    return (f"cannot build the {stage} training set, {len(problems)} problem(s):\n  {shown}{more}\n"
            "Fix or remove these cases (or rebuild splits.json with `c2fseg split`).")


# ----------------------------------------------------------------------------- writing


def _canonical_geometry(shape, spacing, origin) -> Geometry:
    return make_geometry(tuple(shape), tuple(spacing), tuple(origin))


def _cropped_origin(volume, lo: int) -> tuple[float, float, float]:
    """World (x, y, z) origin of canonical voxel [lo, 0, 0] when written with identity direction."""
    ox, oy, oz = volume.geometry.canonical_origin
    return (ox, oy, oz + lo * volume.spacing[0])


def _ct_for_writing(ct: np.ndarray, clip: Sequence[float] | None = None) -> np.ndarray:
    """int16 when the CT holds whole HU values in range (4x smaller files), float32 otherwise.

    ``clip`` = (low, high) HU clips the CT first, so nnU-Net computes its intensity statistics
    and normalises on the clipped values (the published FLARE23 recipe clips to [-325, 325]).
    """
    if clip is not None:
        ct = np.clip(ct, float(clip[0]), float(clip[1]))
    if ct.size and ct.min() >= -32768 and ct.max() <= 32767 and np.array_equal(ct, np.round(ct)):
        return ct.astype(np.int16)
    return ct.astype(np.float32)


def build_case(stage: str, src: CaseSources, out_dir: Path, margin: int,
               ct_clip: Sequence[float] | None = None) -> dict:
    """Write one case's canonical, z-cropped image and target; return its summary.

    Raises EmptyTargetError (nothing written) when the target has no label of the stage.
    """
    ct = read_image(src.image)
    gt = read_labels(src.label).array if src.label is not None else None
    pseudo = read_labels(src.pseudo).array if src.pseudo is not None else None
    for name, arr in (("label", gt), ("pseudo label", pseudo)):
        if arr is not None and arr.shape != ct.shape:
            raise ImageReadError(f"{src.case}: {name} shape {arr.shape} differs from image {ct.shape}")
    if pseudo is None and gt is not None and stage != "coarse":
        if pseudo_label_needed(stage, np.unique(gt)):
            tumor = " (or has tumor voxels)" if stage == "organ" else ""
            raise ValueError(f"no pseudo label file, and its label does not annotate every organ{tumor}; "
                             "if splits.json says otherwise, rebuild it with `c2fseg split`")
        pseudo = np.zeros_like(gt)  # fully annotated, no tumor: the ground truth is the whole target
    target = stage_target(stage, gt, pseudo)
    if not target.any():
        used = " and ".join(n for n, a in (("label", gt), ("pseudo label", pseudo)) if a is not None)
        raise EmptyTargetError(f"empty {stage} target: its {used} hold(s) no {stage}-stage label")
    bounds = zcrop_bounds(target, margin)
    geom = _canonical_geometry(
        (bounds[1] - bounds[0], *ct.shape[1:]), ct.spacing, _cropped_origin(ct, bounds[0])
    )
    write_volume(_ct_for_writing(crop_z(ct.array, bounds), ct_clip), geom, out_dir / "imagesTr" / (src.case + IMAGE_SUFFIX))
    write_volume(crop_z(target, bounds), geom, out_dir / "labelsTr" / (src.case + LABEL_SUFFIX))
    return {"z_range": list(bounds), "labels": sorted(int(v) for v in np.unique(target))}


def _load_record(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def build_stage_dataset(stage: str, data_dir: str | os.PathLike, cases: Iterable[str],
                        out_dir: str | os.PathLike, *, pseudo_dir: str | os.PathLike | None = None,
                        margin: int = 10, progress: bool = True,
                        case_files: Mapping[str, Mapping] | None = None,
                        ct_clip: Sequence[float] | None = None) -> dict:
    """Write ``out_dir`` (imagesTr, labelsTr, dataset.json) for ``stage`` from ``cases``.

    ``case_files`` is the splits document's ``cases`` entry (image/label paths relative to
    ``data_dir``); without it the usual ``imagesTr/<case>_0000.<ext>`` names are looked up.
    Resumable: a case whose inputs are unchanged since the last build is not rewritten.
    Cases of a previous build that are no longer listed are removed. A case whose target is
    empty is skipped and listed in the record's ``skipped`` ({case: reason}); only when no case
    is left does the build fail. Returns the build record (per case summary under ``cases``,
    ``skipped``, and a ``hash`` of the whole dataset used to decide whether planning and
    preprocessing are up to date). Raises StageDatasetError listing every bad case.
    ``ct_clip`` = (low, high) HU clips every CT written (recorded: a changed clip rebuilds).
    """
    from tqdm import tqdm

    check_stage(stage)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    pseudo = Path(pseudo_dir) if pseudo_dir is not None else None
    cases = sorted(dict.fromkeys(cases))
    if not cases:
        raise StageDatasetError(f"no training cases for the {stage} stage (check splits.json)")
    sources = case_sources(data_dir, cases, pseudo, case_files)
    check_sources(stage, sources)

    old = _load_record(out_dir)
    clip = _check_clip(ct_clip)
    same_build = (old.get("version") == BUILD_VERSION and old.get("margin") == margin
                  and old.get("ct_clip") == clip)
    old_cases = old.get("cases", {}) if same_build else {}
    old_skipped = old.get("skipped", {}) if same_build else {}
    record: dict = {"version": BUILD_VERSION, "stage": stage, "margin": margin, "ct_clip": clip,
                    "cases": {}, "skipped": {}}
    problems = []
    for src in tqdm(sources, desc=f"{stage} dataset", unit="case", disable=not progress):
        sig = src.signature()
        prev = old_cases.get(src.case)
        done = (out_dir / "imagesTr" / (src.case + IMAGE_SUFFIX)).is_file() and \
            (out_dir / "labelsTr" / (src.case + LABEL_SUFFIX)).is_file()
        if prev is not None and prev.get("sources") == sig and done:
            record["cases"][src.case] = prev
            continue
        if old_skipped.get(src.case, {}).get("sources") == sig:
            record["skipped"][src.case] = old_skipped[src.case]
            continue
        try:
            record["cases"][src.case] = {"sources": sig, **build_case(stage, src, out_dir, margin, clip)}
        except EmptyTargetError as exc:
            record["skipped"][src.case] = {"sources": sig, "reason": str(exc)}
        except (ImageReadError, ValueError) as exc:
            problems.append(f"{src.case}: {exc}")
    if problems:
        write_json_atomic(out_dir / RECORD, record)  # keep finished cases for the next attempt
        raise StageDatasetError(_problem_report(stage, problems))
    _remove_stale_cases(out_dir, set(record["cases"]))
    if not record["cases"]:
        write_json_atomic(out_dir / RECORD, record)
        raise StageDatasetError(
            f"no case is left for the {stage} stage: all {len(cases)} case(s) have an empty target "
            f"(first: {next(iter(record['skipped']))}: {next(iter(record['skipped'].values()))['reason']}). "
            "Check the labels (and pseudo labels) of these cases."
        )
    hashed = record["cases"] if clip is None else {"cases": record["cases"], "ct_clip": clip}
    record["hash"] = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()
    write_json_atomic(out_dir / "dataset.json", stage_dataset_json(stage, len(record["cases"])))
    write_json_atomic(out_dir / RECORD, record)
    return record


def skipped_reasons(record: Mapping) -> dict[str, str]:
    """{case: reason} of the cases a build record skipped (empty targets)."""
    return {case: entry["reason"] for case, entry in sorted(record.get("skipped", {}).items())}


def _remove_stale_cases(out_dir: Path, keep: set[str]) -> None:
    for sub, suffix in (("imagesTr", IMAGE_SUFFIX), ("labelsTr", LABEL_SUFFIX)):
        folder = out_dir / sub
        for f in folder.glob("*" + suffix) if folder.is_dir() else ():
            if f.name[: -len(suffix)] not in keep:
                f.unlink()


def _check_clip(ct_clip: Sequence[float] | None) -> list[float] | None:
    """``ct_clip`` as [low, high] floats (None: no clip); ValueError unless low < high."""
    if ct_clip is None:
        return None
    low, high = (float(v) for v in ct_clip)
    if not low < high:
        raise ValueError(f"ct_clip must be [low, high] HU with low < high, got {list(ct_clip)}")
    return [low, high]
