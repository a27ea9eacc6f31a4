"""Overlay pictures: axial, coronal and sagittal CT slices with labels in colour and a legend.

Display follows radiological convention: the patient's right on the viewer's left, anterior at
the top of axial views, head at the top of coronal/sagittal views. Panels are drawn in mm, so
anisotropic voxels keep their true proportions. Uses matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from c2fseg.fileutil import atomic_target
from c2fseg.labels import LABELS, MAX_LABEL

#: One distinct colour per FLARE label (RGB 0-1); index = label id.
LABEL_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),
    (0.86, 0.37, 0.22),  # liver
    (0.95, 0.85, 0.15),  # right kidney
    (0.20, 0.45, 0.95),  # spleen
    (0.96, 0.55, 0.85),  # pancreas
    (0.90, 0.10, 0.10),  # aorta
    (0.25, 0.85, 0.95),  # IVC
    (0.55, 0.95, 0.30),  # right adrenal
    (0.10, 0.70, 0.25),  # left adrenal
    (0.40, 0.95, 0.75),  # gallbladder
    (0.65, 0.40, 0.90),  # esophagus
    (1.00, 0.60, 0.10),  # stomach
    (0.70, 0.55, 0.35),  # duodenum
    (0.95, 0.95, 0.55),  # left kidney
    (1.00, 0.00, 1.00),  # tumor
)


def parse_slices(value: str | Sequence[int] | None) -> tuple[int, int, int] | None:
    """'auto'/None -> None (choose from labels); 'k,j,i' or a sequence -> three ints."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        nums = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"slices {value!r}: expected 'auto' or three integers 'k,j,i'") from None
    if len(nums) != 3:
        raise ValueError(f"slices {value!r}: expected three integers 'k,j,i'")
    return nums  # type: ignore[return-value]


def choose_slices(shape: Sequence[int], labels: np.ndarray | None) -> tuple[int, int, int]:
    """Slices through the centre of the labelled organs (the volume centre without labels)."""
    if labels is not None and np.any(labels > 0):
        organs = (labels > 0) & (labels != 14) if np.any((labels > 0) & (labels != 14)) else labels > 0
        idx = np.argwhere(organs[::2, ::2, ::2]) * 2
        centre = np.median(idx, axis=0)
        return tuple(int(min(max(c, 0), s - 1)) for c, s in zip(centre, shape, strict=True))  # type: ignore
    return tuple(int(s // 2) for s in shape)  # type: ignore[return-value]


def _views(image, labels, spacing, slices):
    """(title, 2D image, 2D labels or None, extent in mm) for the three display planes."""
    k, j, i = slices
    sz, sy, sx = spacing
    nz, ny, nx = image.shape

    def lab(sel, flip=False):
        if labels is None:
            return None
        a = labels[sel]
        return a[::-1] if flip else a

    return [
        (f"axial k={k}", image[k], lab(np.s_[k]), (0, nx * sx, ny * sy, 0)),
        (f"coronal j={j}", image[:, j, :][::-1], lab(np.s_[:, j, :], True), (0, nx * sx, 0, nz * sz)),
        (f"sagittal i={i}", image[:, :, i][::-1], lab(np.s_[:, :, i], True), (0, ny * sy, 0, nz * sz)),
    ]


def render_overlay_arrays(
    image: np.ndarray,
    labels: np.ndarray | None,
    spacing: Sequence[float],
    out_png: str | os.PathLike,
    slices: str | Sequence[int] | None = "auto",
    window: tuple[float, float] = (400.0, 40.0),
    alpha: float = 0.45,
    title: str | None = None,
    dpi: int = 100,
) -> dict:
    """Render canonical arrays ([k, j, i] = S, P, L) to a PNG; returns what was drawn.

    ``window`` is (width, level) in HU; ``slices`` 'auto' picks the labelled organs' centre.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be 3D, got shape {image.shape}")
    if labels is not None and labels.shape != image.shape:
        raise ValueError(f"labels shape {labels.shape} differs from image shape {image.shape}")
    chosen = parse_slices(slices) if isinstance(slices, str) or slices is None else tuple(slices)
    if chosen is None:
        chosen = choose_slices(image.shape, labels)
    for c, n, name in zip(chosen, image.shape, "kji", strict=True):
        if not 0 <= c < n:
            raise ValueError(f"slice {name}={c} is outside the volume (0-{n - 1})")
    width, level = window
    lo, hi = level - width / 2, level + width / 2
    colors = np.zeros((MAX_LABEL + 1, 4), dtype=np.float32)
    colors[1:, :3] = LABEL_COLORS[1:]
    colors[1:, 3] = alpha

    views = _views(image, labels, spacing, chosen)
    widths = [v[3][1] for v in views]
    height = max(abs(v[3][2] - v[3][3]) for v in views)
    fig_w = 11.0
    fig_h = fig_w * 0.78 * height / sum(widths) + 1.3
    fig, axes = plt.subplots(1, 3, figsize=(fig_w, fig_h), dpi=dpi,
                             gridspec_kw={"width_ratios": widths}, facecolor="black")
    for ax, (name, img2d, lab2d, extent) in zip(axes, views, strict=True):
        ax.imshow(img2d, cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="bilinear")
        if lab2d is not None:
            ax.imshow(colors[np.clip(lab2d, 0, MAX_LABEL)], extent=extent, interpolation="nearest")
        ax.set_title(name, color="white", fontsize=9)
        ax.set_axis_off()
        ax.set_aspect("equal")
    present = sorted(int(v) for v in np.unique(labels) if 0 < v <= MAX_LABEL) if labels is not None else []
    if present:
        handles = [Patch(color=LABEL_COLORS[v], label=f"{v} {LABELS[v]}") for v in present]
        fig.legend(handles=handles, loc="lower center", ncol=min(5, len(handles)), fontsize=7,
                   frameon=False, labelcolor="white")
    fig.suptitle(title or f"W{width:g} L{level:g}  (patient right on the left)", color="white", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.02 + 0.05 * bool(present), wspace=0.03)
    out = save_figure(fig, out_png, dpi=dpi, facecolor="black")
    return {"png": str(out), "slices": [int(c) for c in chosen], "labels": present}


def save_figure(fig, out_png: str | os.PathLike, **savefig_kwargs) -> Path:
    """Save a matplotlib figure atomically (temporary file beside it, then rename) and close it.

    A failed write leaves no file behind and raises :class:`~c2fseg.fileutil.WriteError`.
    """
    import matplotlib.pyplot as plt

    out = Path(out_png)
    try:
        with atomic_target(out, suffix=".png") as tmp:
            fig.savefig(tmp, **savefig_kwargs)
    finally:
        plt.close(fig)
    return out


def save_roi_overlay(ct: np.ndarray, labels: np.ndarray, roi, path: str | os.PathLike) -> Path:
    """PNG of the middle coronal slice of ``roi`` with its box and the labels, for a quick check.

    ``ct`` and ``labels`` are canonical [z, y, x] arrays; ``roi`` has ``start``/``stop``/``shape``
    (an :class:`~c2fseg.infer.roi.RoiBox`) or is None (then the volume's middle slice, no box).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    path = Path(path)
    j = roi.start[1] + roi.shape[1] // 2 if roi else ct.shape[1] // 2
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(np.clip(ct[:, j, :], -200, 300), cmap="gray", origin="lower")
    ax.imshow(np.ma.masked_equal(labels[:, j, :], 0), cmap="tab20", origin="lower",
              alpha=0.4, vmin=0, vmax=14, interpolation="nearest")
    if roi:
        (z0, _, x0), (z1, _, x1) = roi.start, roi.stop
        ax.add_patch(Rectangle((x0 - 0.5, z0 - 0.5), x1 - x0, z1 - z0, fill=False, ec="yellow"))
    ax.set_title(f"{path.stem}: coronal slice {j}, ROI")
    ax.axis("off")
    return save_figure(fig, path, dpi=80, bbox_inches="tight")


def render_overlay(
    image_path: str | os.PathLike,
    labels_path: str | os.PathLike | None,
    out_png: str | os.PathLike,
    slices: str | Sequence[int] | None = "auto",
    window: tuple[float, float] = (400.0, 40.0),
    alpha: float = 0.45,
    dpi: int = 100,
) -> dict:
    """Read a CT (and optionally a label map) and render the three-plane overlay PNG."""
    from c2fseg.io import read_image, read_labels

    vol = read_image(image_path)
    labels = None
    if labels_path is not None:
        lab = read_labels(labels_path)
        if lab.shape != vol.shape:
            raise ValueError(
                f"{labels_path}: label map shape {lab.shape} does not match image {image_path} "
                f"shape {vol.shape}; pass the label file that belongs to this image"
            )
        labels = lab.array
    title = f"{Path(image_path).name}  spacing {tuple(round(s, 2) for s in vol.spacing)} mm  W{window[0]:g} L{window[1]:g}"
    return render_overlay_arrays(vol.array, labels, vol.spacing, out_png, slices, window, alpha,
                                 title, dpi)
