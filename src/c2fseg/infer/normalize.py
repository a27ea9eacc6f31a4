"""CT intensity normalisation on any torch device, with the statistics taken from the plans.

Same arithmetic as nnU-Net's CTNormalization (clip to the foreground 0.5/99.5 percentiles, then
z-score with the foreground mean/std), so a stage sees at inference what it saw in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CTNormalizer:
    """Clip to [lower, upper] HU, subtract ``mean``, divide by ``std``."""

    mean: float
    std: float
    lower: float
    upper: float

    @classmethod
    def from_stats(cls, stats: dict) -> CTNormalizer:
        """Build from a manifest/plans statistics dict (mean, std, percentile_00_5, percentile_99_5)."""
        return cls(
            mean=float(stats["mean"]),
            std=max(float(stats["std"]), 1e-8),
            lower=float(stats["percentile_00_5"]),
            upper=float(stats["percentile_99_5"]),
        )

    def __call__(self, hu: torch.Tensor) -> torch.Tensor:
        """Normalised float32 copy of ``hu`` (the input is never modified)."""
        out = hu.to(torch.float32, copy=True)
        out.clamp_(self.lower, self.upper).sub_(self.mean).div_(self.std)
        return out

    def normalised(self, hu_value: float) -> float:
        """Normalised value of one HU number (e.g. to pad with air)."""
        return (min(max(hu_value, self.lower), self.upper) - self.mean) / self.std
