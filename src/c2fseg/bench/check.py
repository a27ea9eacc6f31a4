"""CUDA vs CPU label agreement of the same random-weight stage model on a small phantom.

``python -m c2fseg.bench.check [--out FILE]``: the GPU script's first check that the device path
(fp16 autocast, on-device resampling and argmax) gives the labels the CPU path (fp32) gives.
With random weights many voxels sit near decision boundaries, so agreement is reported, not
required to be 100 %; a broken device path gives far lower agreement than fp16 rounding does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from c2fseg.bench.baseline import agreement
from c2fseg.bench.plans import CONFIGURATION, production_plans, stage_dataset_json


def device_agreement(device: str = "cuda", seed: int = 0, width: int = 16) -> dict:
    """Organ-stage labels of a small phantom on ``device`` (fp16 and fp32) vs CPU fp32."""
    from c2fseg.data.phantom_case import generate_case
    from c2fseg.infer.stage_model import StageModel

    case = generate_case(seed, 0, size="small", tumor=True)
    spacing = case.geometry.canonical_spacing
    # the model works at the case's own spacing so the check stays small (seconds on a CPU)
    plans = production_plans("organ", width, spacing=[round(float(s), 3) for s in spacing], patch=[32, 64, 64])
    torch.manual_seed(seed)
    ref = StageModel.from_plans(plans, stage_dataset_json("organ"), CONFIGURATION, "organ", None, "cpu",
                                precision="fp32")
    state = ref.network.state_dict()
    expected = ref.predict(case.image, spacing).labels.numpy()
    out = {"case_shape_zyx": list(case.image.shape), "spacing_zyx": list(spacing), "device": device}
    for precision in ("fp32", "fp16" if torch.device(device).type == "cuda" else "bf16"):
        model = StageModel.from_plans(plans, stage_dataset_json("organ"), CONFIGURATION, "organ", state,
                                      device, precision=precision)
        got = model.predict(case.image, spacing).labels.cpu().numpy()
        out[precision] = agreement(expected, got)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to compare")
        return 2
    result = device_agreement(args.device)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    ok = result["fp32"]["equal_fraction"] > 0.99 and result.get("fp16", result.get("bf16"))["equal_fraction"] > 0.95
    print(f"{args.device} vs CPU fp32 agreement:", "ok" if ok else "LOW (check the device path)")
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
