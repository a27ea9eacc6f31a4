"""Synthetic abdominal CT datasets in the FLARE23 / nnU-Net raw layout (``c2fseg phantom``).

No public CT can ship with c2fseg, so demo, tests and benchmarks use phantoms: contrast-enhanced
abdomens with all 13 FLARE organs, body wall, spine, ribs, lungs, bowel, pelvis and the scanner
table, random but deterministic per (seed, case index). See ``phantom_anatomy`` for the anatomy
(and why thin structures are drawn thicker at ``size="small"``) and ``phantom_case`` for the grid,
tumours, blur and noise.

The label situation mimics FLARE23 training data: G1 unlabelled (no label file; the image may
still hold tumours), G4 tumour labelled with organs possibly partial, G5 some organs only, G6
all 13 organs. Held-out test cases (imagesTs/labelsTs) are always fully labelled.

Layout written::

    OUT/imagesTr/<case>_0000.nii.gz   OUT/labelsTr/<case>.nii.gz (absent for G1)
    OUT/imagesTs/<case>_0000.nii.gz   OUT/labelsTs/<case>.nii.gz
    OUT/dataset.json                  OUT/phantoms.json (per-case facts and the settings)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from c2fseg.data.phantom_case import SIZES, generate_case
from c2fseg.fileutil import write_json_atomic
from c2fseg.labels import LABELS, ORGANS, TUMOR

#: FLARE23 training-pool proportions of the label groups (flare23.md).
DEFAULT_GROUP_FRACTIONS = {"G1": 0.45, "G4": 0.37, "G5": 0.12, "G6": 0.055}
GROUPS = tuple(DEFAULT_GROUP_FRACTIONS)
#: Chance that an unlabelled (G1) / test case carries tumours in its image.
UNLABELLED_TUMOR_FRACTION = 0.5
TEST_TUMOR_FRACTION = 0.5
LAYOUT = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
FORMAT_VERSION = 2  # 2: lesions at least 2.5 voxels in radius at size small


class PhantomError(ValueError):
    """The output folder or the arguments cannot be used; the message says how to fix it."""


def normalise_fractions(fractions: dict[str, float] | None) -> dict[str, float]:
    """Group fractions summing to 1 (missing groups count 0); defaults to the FLARE23 mix."""
    if fractions is None:
        fractions = DEFAULT_GROUP_FRACTIONS
    unknown = set(fractions) - set(GROUPS)
    if unknown:
        raise PhantomError(f"unknown group(s) {sorted(unknown)}; use {', '.join(GROUPS)}")
    values = {g: float(fractions.get(g, 0.0)) for g in GROUPS}
    if any(v < 0 or not np.isfinite(v) for v in values.values()) or sum(values.values()) <= 0:
        raise PhantomError(f"group fractions {fractions} must be >= 0 with a positive sum")
    total = sum(values.values())
    return {g: round(v / total, 6) for g, v in values.items()}


def allocate_groups(n: int, fractions: dict[str, float], seed: int) -> list[str]:
    """Group of each training case: largest-remainder counts, >= 1 of every used group when
    n >= 4, shuffled with the seed."""
    fr = normalise_fractions(fractions)
    raw = {g: n * f for g, f in fr.items()}
    counts = {g: int(np.floor(v)) for g, v in raw.items()}
    for g in sorted(GROUPS, key=lambda g: raw[g] - counts[g], reverse=True)[: n - sum(counts.values())]:
        counts[g] += 1
    if n >= 4:
        for g in GROUPS:
            if fr[g] > 0 and counts[g] == 0:
                donor = max(GROUPS, key=lambda d: counts[d])
                counts[donor] -= 1
                counts[g] += 1
    groups = [g for g in GROUPS for _ in range(counts[g])]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6770]))
    return [groups[i] for i in rng.permutation(len(groups))]


def _label_plan(group: str, rng: np.random.Generator) -> tuple[list[int], bool]:
    """(organs kept in the label file, tumour in the image) for a training group."""
    organs = list(ORGANS)
    if group == "G6":
        return organs, False
    if group == "G5":
        keep = int(rng.integers(4, len(organs)))  # at least one organ missing
        return sorted(int(o) for o in rng.choice(organs, size=keep, replace=False)), False
    if group == "G4":
        if rng.random() < 0.35:
            return organs, True
        keep = int(rng.integers(0, len(organs)))
        return sorted(int(o) for o in rng.choice(organs, size=keep, replace=False)), True
    return [], bool(rng.random() < UNLABELLED_TUMOR_FRACTION)  # G1


def case_id(number: int) -> str:
    """Case name as used in file names (``phantom_0001``)."""
    return f"phantom_{number:04d}"


def plan_cases(cases: int, seed: int, test_cases: int, fractions: dict[str, float]) -> list[dict]:
    """What every case will be: id, split, group, labelled organs, tumour. Cheap (no drawing)."""
    plans = []
    for n, group in enumerate(allocate_groups(cases, fractions, seed), start=1):
        organs, tumor = _label_plan(group, np.random.default_rng(np.random.SeedSequence([seed, n, 7])))
        plans.append({"case": case_id(n), "index": n, "split": "train", "group": group,
                      "labelled_organs": organs, "tumor": tumor})
    for n in range(cases + 1, cases + test_cases + 1):
        r = np.random.default_rng(np.random.SeedSequence([seed, n, 7]))
        plans.append({"case": case_id(n), "index": n, "split": "test", "group": "test",
                      "labelled_organs": list(ORGANS), "tumor": bool(r.random() < TEST_TUMOR_FRACTION)})
    return plans


def dataset_json(num_training: int, num_test: int) -> dict:
    """nnU-Net v2 style dataset.json for the phantom dataset."""
    return {
        "name": "c2fseg_phantoms",
        "description": "Synthetic contrast-enhanced abdominal CT phantoms with FLARE23 labels "
                       "(partially labelled training cases; see phantoms.json).",
        "channel_names": {"0": "CT"},
        "labels": {name: int(i) for i, name in LABELS.items()},
        "numTraining": int(num_training),
        "numTest": int(num_test),
        "file_ending": ".nii.gz",
    }


def _paths(out: Path, plan: dict) -> tuple[Path, Path | None]:
    """Image path and label path (None when the case has no label file)."""
    img_dir, lab_dir = ("imagesTr", "labelsTr") if plan["split"] == "train" else ("imagesTs", "labelsTs")
    image = out / img_dir / f"{plan['case']}_0000.nii.gz"
    label = None if plan["group"] == "G1" else out / lab_dir / f"{plan['case']}.nii.gz"
    return image, label


def _valid_file(path: Path, shape: list[int] | None) -> bool:
    """The file exists and its header reads with the expected size (cheap: no voxel data)."""
    import SimpleITK as sitk

    if not path.is_file():
        return False
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False
    return shape is None or sorted(reader.GetSize()) == sorted(shape)


def _check_folder(out: Path, settings: dict, overwrite: bool) -> dict:
    """Existing per-case records to reuse; raises PhantomError if the folder holds other data."""
    manifest = out / "phantoms.json"
    if not out.exists() or not any(out.iterdir()):
        return {}
    if overwrite:
        return {}
    if not manifest.is_file():
        raise PhantomError(f"{out} is not empty and has no phantoms.json; choose an empty folder "
                           "or pass --overwrite to write phantoms into it anyway")
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PhantomError(f"{manifest} cannot be read ({exc}); pass --overwrite to regenerate") from None
    if old.get("settings") != settings:
        diff = {k: (old.get("settings", {}).get(k), v) for k, v in settings.items()
                if old.get("settings", {}).get(k) != v}
        raise PhantomError(f"{out} holds phantoms made with other settings (existing, requested: "
                           f"{diff}); use another folder or pass --overwrite to replace them")
    return old.get("cases", {})


def _remove_stale(out: Path, plans: list[dict]) -> None:
    """With overwrite: delete phantom files in the layout folders that the new plan does not use."""
    keep = set()
    for p in plans:
        img, lab = _paths(out, p)
        keep.add(img)
        if lab is not None:
            keep.add(lab)
    for sub in LAYOUT:
        for f in (out / sub).glob("*.nii.gz") if (out / sub).is_dir() else []:
            if f not in keep:
                f.unlink()


def write_case(out: Path, plan: dict, seed: int, size: str) -> dict:
    """Generate one planned case, write its image (and label file) atomically, return its record."""
    from c2fseg.io.image import write_volume

    case = generate_case(seed, plan["index"], size, tumor=plan["tumor"])
    image_path, label_path = _paths(out, plan)
    write_volume(case.image, case.geometry, image_path)
    info = dict(case.info)
    present = [int(v) for v in np.unique(case.labels) if v]
    tumor_labelled = False
    if label_path is not None:
        labels = case.labels
        dropped = [o for o in ORGANS if o not in plan["labelled_organs"]]
        if dropped:
            labels = np.where(np.isin(labels, dropped), np.uint8(0), labels).astype(np.uint8)
        tumor_labelled = bool(np.any(labels == TUMOR))
        write_volume(labels, case.geometry, label_path)
    rel = {"image": str(image_path.relative_to(out)),
           "label": str(label_path.relative_to(out)) if label_path else None}
    return {**info, "split": plan["split"], "group": plan["group"],
            "labelled_organs": [o for o in plan["labelled_organs"] if o in present],
            "organs_in_image": [o for o in present if o != TUMOR],
            "tumor_labelled": tumor_labelled, "files": rel, "complete": True}


def generate_dataset(out_dir: str | os.PathLike, cases: int, seed: int, size: str = "small",
                     **options) -> dict:
    """Write ``cases`` training (+ ``test_cases``) phantoms to ``out_dir``; returns a summary.

    Options: ``test_cases`` (0), ``group_fractions`` (dict G1/G4/G5/G6 -> fraction; default the
    FLARE23 mix), ``overwrite`` (False), ``progress`` (True). Re-running with the same settings
    skips cases already written; other settings in a non-empty folder raise PhantomError.
    """
    test_cases = int(options.pop("test_cases", 0))
    fractions = normalise_fractions(options.pop("group_fractions", None))
    overwrite = bool(options.pop("overwrite", False))
    progress = bool(options.pop("progress", True))
    if options:
        raise TypeError(f"unknown option(s): {', '.join(sorted(options))}")
    if size not in SIZES:
        raise PhantomError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if cases < 1 or test_cases < 0:
        raise PhantomError("need cases >= 1 and test_cases >= 0")
    out = Path(out_dir)
    settings = {"format": FORMAT_VERSION, "seed": int(seed), "size": size, "cases": int(cases),
                "test_cases": test_cases, "group_fractions": fractions}
    done = _check_folder(out, settings, overwrite)
    plans = plan_cases(cases, seed, test_cases, fractions)
    for sub in LAYOUT:
        (out / sub).mkdir(parents=True, exist_ok=True)
    if overwrite:
        _remove_stale(out, plans)
    write_json_atomic(out / "dataset.json", dataset_json(cases, test_cases), indent=1)
    records: dict[str, dict] = {}
    manifest = {"generator": "c2fseg.data.phantom", "settings": settings, "cases": records}
    from tqdm import tqdm

    skipped = 0
    for plan in tqdm(plans, desc="phantoms", unit="case", disable=not progress):
        old = done.get(plan["case"])
        if old and old.get("complete") and _is_written(out, plan, old):
            records[plan["case"]] = old
            skipped += 1
            continue
        records[plan["case"]] = write_case(out, plan, seed, size)
        write_json_atomic(out / "phantoms.json", manifest, indent=1)  # after each case: resumable
    write_json_atomic(out / "phantoms.json", manifest, indent=1)
    groups = {g: sum(1 for p in plans if p["group"] == g) for g in (*GROUPS, "test")}
    return {"out_dir": str(out), "cases": cases, "test_cases": test_cases, "size": size,
            "seed": int(seed), "groups": groups, "generated": len(plans) - skipped,
            "skipped": skipped, "tumor_cases": sum(1 for r in records.values() if r["tumor"])}


def _is_written(out: Path, plan: dict, record: dict) -> bool:
    """Both files of a recorded case exist with readable headers of the recorded shape."""
    image, label = _paths(out, plan)
    if not _valid_file(image, record.get("shape")):
        return False
    return label is None or _valid_file(label, record.get("shape"))
