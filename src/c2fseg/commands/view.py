"""``c2fseg view``: axial/coronal/sagittal PNG of a CT with optional label overlay."""

from __future__ import annotations

import argparse

from c2fseg.argtypes import existing_path


def slices_arg(value: str) -> str:
    """'auto' or three integers 'k,j,i' (canonical slice indices)."""
    if value.strip().lower() == "auto":
        return "auto"
    parts = value.split(",")
    if len(parts) != 3 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{value!r}: expected 'auto' or three integers 'k,j,i'")
    return value


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "view",
        help="render axial/coronal/sagittal slices with label overlay to a PNG",
        description=(
            "Render a CT in radiological display (patient right on the left) with a soft-tissue "
            "window, optionally overlaying a label map in colour with a legend. Slices default to "
            "the centre of the labelled organs; panel proportions follow the voxel spacing."
        ),
    )
    p.add_argument("image", metavar="IMAGE", type=existing_path, help="CT image (NIfTI, NRRD, MHA "
                   "or DICOM folder)")
    p.add_argument("--labels", type=existing_path, default=None, help="label map to overlay")
    p.add_argument("-o", "--output", required=True, help="output PNG file")
    p.add_argument("--slices", type=slices_arg, default="auto",
                   help="'auto' (default) or canonical indices 'k,j,i' (k: inferior->superior, "
                   "j: anterior->posterior, i: right->left)")
    p.add_argument("--window", type=float, nargs=2, default=(400.0, 40.0), metavar=("W", "L"),
                   help="display window width and level in HU (default 400 40)")
    p.set_defaults(func=run)


def run(args) -> int:
    from c2fseg.exitcodes import EXIT_OK, UsageError
    from c2fseg.io import ImageReadError
    from c2fseg.viz import render_overlay

    try:
        result = render_overlay(args.image, args.labels, args.output, slices=args.slices,
                                window=tuple(args.window))
    except (ImageReadError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {result['png']} (slices k,j,i = {','.join(map(str, result['slices']))})")
    return EXIT_OK
