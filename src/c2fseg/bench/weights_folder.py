"""Random-weight stage folders that ``predict_final.py`` loads exactly like trained ones.

``python -m c2fseg.bench.weights_folder DEST [--kind production|thin] [--width N --patch Z,Y,X]``
writes ``DEST/coarse``, ``DEST/organ`` and ``DEST/tumor`` (plans.json, dataset.json,
checkpoint_final.pth, manifest.json with hashes), so the GPU script can time the user's whole path
(process start, model loading, read, cascade, write) without trained weights.

Random networks of production size cost what trained ones cost, except for the ROI: the coarse
labels decide how much of the volume the fine stages see, and random coarse labels are arbitrary
(often nothing, giving an "empty" case with no fine stage at all). So by default the coarse
network's last layer is set to call every voxel liver: the ROI is then the whole volume, an
upper bound of the fine stages' work (``whole_volume_roi=False`` keeps the random labels).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from c2fseg.bench.plans import (
    CONFIGURATION,
    bench_plans,
    production_plans,
    stage_dataset_json,
    with_patch,
)
from c2fseg.plans import channel_labels_from_dataset
from c2fseg.weights import CHECKPOINT_NAME, write_manifest

STAGES = ("coarse", "organ", "tumor")
LIVER = 1


def stage_plans(stage: str, kind: str, width: int | None = None,
                patch: tuple[int, int, int] | None = None) -> dict:
    """Plans of a bench network (as ``c2fseg bench`` builds them), with optional overrides."""
    plans = bench_plans(stage, kind)
    if width is not None:
        conf = plans["configurations"][CONFIGURATION]
        return production_plans(stage, width, spacing=conf["spacing"], patch=patch or conf["patch_size"])
    return with_patch(plans, patch) if patch is not None else plans


def label_everything_liver(network: torch.nn.Module, channel_labels) -> None:
    """Make the network's output liver everywhere (zero last-layer weights, liver bias highest)."""
    last = network.decoder.seg_layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-10.0)
        last.bias[list(channel_labels).index(LIVER)] = 10.0


def write_stage(dest: Path, stage: str, plans: dict, *, seed: int, whole_volume_roi: bool) -> Path:
    """One ``dest/<stage>/`` folder with seeded random weights; returns it."""
    from c2fseg.infer.stage_loader import build_network

    dataset = stage_dataset_json(stage)
    channels = channel_labels_from_dataset(dataset)
    torch.manual_seed(seed)
    network = build_network(plans, CONFIGURATION, len(channels))
    if stage == "coarse" and whole_volume_roi:
        label_everything_liver(network, channels)
    folder = dest / stage
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=1), encoding="utf-8")
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1), encoding="utf-8")
    checkpoint = {
        "network_weights": network.state_dict(),
        "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": "all",
                      "dataset_json": dataset, "device": "cpu"},
        "trainer_name": "random-weights (c2fseg.bench.weights_folder)",
        "inference_allowed_mirroring_axes": (0, 1, 2),
        "current_epoch": 0,
    }
    torch.save(checkpoint, folder / CHECKPOINT_NAME)
    write_manifest(folder, stage=stage, configuration=CONFIGURATION, fold="all", plans=plans,
                   dataset_json=dataset, checkpoint_path=folder / CHECKPOINT_NAME,
                   training_cases=[], trainer=checkpoint["trainer_name"],
                   extra={"random_weights": True, "seed": seed,
                          "whole_volume_roi": bool(stage == "coarse" and whole_volume_roi)})
    return folder


def write_random_weights(dest: str | Path, kind: str = "production", *, seed: int = 0,
                         width: int | None = None, patch: tuple[int, int, int] | None = None,
                         whole_volume_roi: bool = True) -> Path:
    """``dest/coarse``, ``dest/organ``, ``dest/tumor`` with random weights; returns ``dest``."""
    dest = Path(dest)
    for i, stage in enumerate(STAGES):
        write_stage(dest, stage, stage_plans(stage, kind, width, patch), seed=seed + i,
                    whole_volume_roi=whole_volume_roi)
    return dest


def main(argv: list[str] | None = None) -> int:
    from c2fseg.argtypes import int_triple, positive_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="weights folder to write (coarse/, organ/, tumor/)")
    parser.add_argument("--kind", choices=("production", "thin"), default="production")
    parser.add_argument("--width", type=positive_int, default=None, help="base features (dry run)")
    parser.add_argument("--patch", type=int_triple, default=None, metavar="Z,Y,X")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-roi", action="store_true",
                        help="keep the random coarse labels (default: whole-volume ROI, an upper bound)")
    args = parser.parse_args(argv)
    write_random_weights(args.dest, args.kind, seed=args.seed, width=args.width, patch=args.patch,
                         whole_volume_roi=not args.random_roi)
    print(f"random-weight {args.kind} stages written to {args.dest}: {', '.join(STAGES)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
