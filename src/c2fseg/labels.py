"""Label, stage and tolerance registry (FLARE23). Imports nothing heavy: no torch, no SimpleITK.

Every other module takes label ids, names, NSD tolerances and stage definitions from here.
"""

from __future__ import annotations

from types import MappingProxyType

#: FLARE23 label ids -> names (fixed, used everywhere).
LABELS = MappingProxyType(
    {
        0: "background",
        1: "liver",
        2: "right_kidney",
        3: "spleen",
        4: "pancreas",
        5: "aorta",
        6: "inferior_vena_cava",
        7: "right_adrenal_gland",
        8: "left_adrenal_gland",
        9: "gallbladder",
        10: "esophagus",
        11: "stomach",
        12: "duodenum",
        13: "left_kidney",
        14: "tumor",
    }
)
NAME_TO_ID = MappingProxyType({name: i for i, name in LABELS.items()})

BACKGROUND = 0
TUMOR = 14
ORGANS: tuple[int, ...] = tuple(range(1, 14))
ALL_FOREGROUND: tuple[int, ...] = ORGANS + (TUMOR,)
MAX_LABEL = 14

#: Normalised surface distance tolerances in mm (official FLARE23 evaluation).
NSD_TOLERANCE_MM = MappingProxyType(
    {1: 5.0, 2: 3.0, 3: 3.0, 4: 5.0, 5: 2.0, 6: 2.0, 7: 2.0, 8: 2.0, 9: 2.0, 10: 3.0, 11: 5.0,
     12: 7.0, 13: 3.0, 14: 2.0}
)

#: Labels scored only on the axial slices that the ground truth spans (tubular organs that
#: continue outside the annotated range).
Z_RANGE_LABELS: tuple[int, ...] = (5, 6, 10)

#: NSD is set to 0 when the DSC is below this value.
NSD_MIN_DSC = 0.2

#: The three cascade stages, in the order they run.
STAGES: tuple[str, ...] = ("coarse", "tumor", "organ")

#: Foreground labels each stage predicts (its network has len(labels) + 1 output channels).
STAGE_LABELS = MappingProxyType(
    {
        "coarse": ORGANS,
        "tumor": ORGANS + (TUMOR,),
        "organ": ORGANS,
    }
)

#: Organs whose largest connected component is kept when building the ROI from the coarse output
#: (the adrenals and duodenum are thin or fragmented and are ignored for the ROI).
ROI_ORGANS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 9, 10, 11, 13)

#: Organs that are anatomically a single connected object (largest-component post-processing).
SINGLE_COMPONENT_ORGANS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)


def label_name(label: int) -> str:
    """Name of a label id; raises ValueError for ids outside 0-14."""
    try:
        return LABELS[int(label)]
    except KeyError:
        raise ValueError(f"label {label} is not a FLARE23 label (valid: 0-{MAX_LABEL})") from None


def check_stage(stage: str) -> str:
    """Return ``stage`` if it is a known stage name, else raise ValueError listing the valid ones."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    return stage
