"""The phantom's anatomy: a template adult abdomen, randomised per case, and how to draw it.

Patient frame in mm (= world LPS): x toward the patient's left, y posterior, z superior; the
centre of the L1 vertebral body is at z = 0 and vertebrae are ~32 mm apart (one vertebra + disc),
so the template's z values read as vertebral levels (T12 = +32, L2 = -32, L4 = -96 ...).
Positions, sizes and attenuation follow ../shared/reference/anatomy.md (portal-venous phase).
Per case, the template is scaled (habitus), every organ gets its own size factor (about
+-20%) and position jitter, and one smooth random displacement field bends everything together.

Thin structures (adrenal glands, esophagus, gallbladder) get a minimum radius tied to the voxel
size (``thin_mm``): at ``--size small`` (4-6 mm voxels) they are drawn 2-3x thicker than life so
that each still covers several hundred voxels and stays learnable; at ``--size full`` they keep
their real thickness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from c2fseg.data.phantom_shapes import (
    SmoothField,
    Window,
    ellipsoid_box,
    ellipsoid_level,
    rotation,
    tube_box,
    tube_level,
)

#: Attenuation ranges (HU, portal-venous phase) from anatomy.md; one value is drawn per case.
HU_RANGES: dict[str, tuple[float, float]] = {
    "fat": (-115, -85), "lung": (-880, -820), "water": (0, 20), "muscle": (40, 60),
    "liver": (100, 130), "spleen": (110, 130), "pancreas": (90, 110),
    "kidney_cortex": (175, 200), "kidney_medulla": (135, 160), "aorta": (170, 240),
    "ivc": (115, 150), "gi_wall": (80, 100), "adrenal": (45, 60), "esophagus": (40, 60),
    "trabecular": (170, 280), "cortical": (700, 950), "disc": (70, 100), "blood_pool": (140, 190),
    "bowel": (35, 60), "marrow_fat": (-60, 0), "table_shell": (250, 400), "table_core": (-950, -850),
    "tumor_hypo": (30, 70), "tumor_kidney": (50, 120),
}

#: Template organ geometry (mm, patient frame). Tubes: centre-line points and radii.
TEMPLATE: dict[str, dict] = {
    "liver_right": {"center": (-68, -12, 68), "radii": (78, 82, 86)},
    "liver_tip": {"center": (-92, 5, 5), "radii": (42, 50, 58)},
    "liver_left": {"center": (0, -52, 95), "radii": (62, 34, 40)},
    "spleen": {"center": (92, 48, 84), "radii": (24, 44, 56), "rot": (25, 0, -35)},
    "kidney_left": {"center": (72, 52, -5), "radii": (30, 22, 55), "rot": (0, -12, 28)},
    "kidney_right": {"center": (-72, 52, -25), "radii": (30, 22, 55), "rot": (0, 12, -28)},
    "adrenal_right": {"points": [(-38, 22, 48), (-44, 42, 24)], "branch": (-30, 44, 26),
                      "radius": 4.0},
    "adrenal_left": {"points": [(40, 18, 50), (50, 40, 30)], "branch": (36, 42, 28),
                     "radius": 4.0},
    "aorta": {"points": [(24, 22, 420), (22, 16, 150), (15, 5, 60), (12, 3, -40), (8, 2, -100)],
              "radius": 12.0},
    "iliac_arteries": {"split": (8, 2, -100), "ends": [(-48, 12, -190), (48, 12, -190)],
                       "radius": 7.5},
    "ivc": {"points": [(-22, 6, -115), (-22, 2, -40), (-24, 0, 40), (-20, -8, 110),
                       (-12, -18, 150)], "radius": 11.0},
    "pancreas": {"points": [(-35, -18, -28), (-38, -22, -8), (-8, -27, 2), (30, -21, 12),
                            (60, 4, 24), (78, 28, 40)],
                 "radii": (13, 17, 12, 12, 11, 10)},
    "duodenum": {"points": [(-5, -48, 24), (-30, -42, 20), (-55, -28, 12), (-68, -20, -5),
                            (-66, -16, -35), (-50, -22, -55), (-15, -25, -62), (20, -24, -55),
                            (32, -26, -35)], "radius": 13.0},
    "stomach": {"points": [(55, 15, 112), (62, -15, 85), (55, -40, 55), (35, -55, 32),
                           (12, -55, 25), (-5, -48, 24)], "radii": (34, 36, 32, 25, 18, 12)},
    "gallbladder": {"points": [(-62, -66, 8), (-58, -52, 28), (-48, -38, 46)],
                    "radii": (16, 14, 8)},
    "esophagus": {"points": [(3, 8, 420), (4, 6, 150), (18, -4, 118), (40, 4, 104)],
                  "radius": 10.0},
    "heart": {"center": (18, -35, 195), "radii": (68, 52, 55)},
    "bladder": {"center": (0, -45, -250), "radii": (50, 40, 38)},
}

#: Tumour hosts and how often each is chosen.
TUMOR_HOSTS: dict[int, float] = {1: 0.5, 2: 0.15, 13: 0.15, 4: 0.2}


@dataclass
class Structure:
    """One thing to draw: its world bounding box and a painter for a slab window."""

    name: str
    lo: np.ndarray
    hi: np.ndarray
    paint: Callable[[Window], None]


@dataclass
class Anatomy:
    """Everything random about one phantom's body (not its grid): sizes, positions, HU values."""

    hu: dict[str, float]
    body: dict[str, float]
    spine: dict[str, float]
    deform: list[SmoothField]
    texture: SmoothField
    structures: list[Structure] = field(default_factory=list)
    organs: dict[str, dict] = field(default_factory=dict)  # final organ geometry (for tumours)

    # ---- body outline --------------------------------------------------------------------
    def outline(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Half-width, anterior and posterior half-depth of the body at height z (mm)."""
        chest = 0.5 * (1 + np.tanh((z - 170.0) / 40.0))
        pelvis = 0.5 * (1 + np.tanh((-z - 170.0) / 40.0))
        b = self.body
        a = b["a"] * (1 + 0.03 * chest + 0.08 * pelvis)
        ant = b["b_ant"] * (1 + 0.04 * chest - 0.06 * pelvis)
        post = b["b_post"] * (1 - 0.03 * pelvis)
        return a, ant, post

    def body_level(self, x, y, z) -> np.ndarray:
        """Superellipse level of the body outline (< 1 inside the skin)."""
        a, ant, post = self.outline(z)
        back = y >= 0  # the back lies flattened on the table: squarer outline behind
        half_depth = np.where(back, post, ant)
        p = np.where(back, np.float32(3.0), np.float32(2.3))
        s = (np.abs(x) / a) ** p + (np.abs(y) / half_depth) ** p
        return (s ** (1 / p)).astype(np.float32, copy=False)

    def wall_levels(self) -> tuple[float, float]:
        """Body levels of the fat/muscle boundary and of the inner wall (start of the cavity)."""
        b = self.body
        r = np.sqrt(b["a"] * 0.5 * (b["b_ant"] + b["b_post"]))
        return 1 - b["fat"] / r, 1 - (b["fat"] + b["muscle"]) / r

    def diaphragm(self, x, y) -> np.ndarray:
        """Height (mm) of the diaphragm: right dome higher, lower posteriorly (lung recesses)."""
        d = self.body
        gy = np.exp(-0.5 * (y / 75.0) ** 2)
        right = d["dome_r"] * np.exp(-0.5 * ((x + 65.0) / 62.0) ** 2) * gy
        left = d["dome_l"] * np.exp(-0.5 * ((x - 70.0) / 55.0) ** 2) * gy
        return d["dia_base"] + right + left - 0.3 * np.maximum(y, 0)

    def spine_y(self, z) -> np.ndarray:
        """Antero-posterior centre of the vertebral bodies (lumbar lordosis brings it forward)."""
        return self.spine["y"] - 8.0 * np.exp(-(((z + 60.0) / 80.0) ** 2))


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_anatomy(rng: np.random.Generator, thin_mm: float) -> Anatomy:
    """Draw one case's anatomy. ``thin_mm``: minimum radius of thin structures (voxel-size bound)."""
    hu = {k: _u(rng, *v) for k, v in HU_RANGES.items()}
    sxy, sz = _u(rng, 0.92, 1.08), _u(rng, 0.93, 1.07)
    fat = _u(rng, 8, 30)  # subcutaneous fat widens the body, not squeezes the organs
    body = {
        "a": 150 * sxy * _u(rng, 0.94, 1.06) + fat, "b_ant": 103 * sxy * _u(rng, 0.92, 1.08) + fat,
        "b_post": 100 * sxy + fat, "fat": fat, "muscle": _u(rng, 8, 13),
        "dia_base": 98 * sz, "dome_r": _u(rng, 48, 58) * sz, "dome_l": _u(rng, 36, 46) * sz,
        "sxy": sxy, "sz": sz,
    }
    spine = {"y": 36 * sxy, "pitch": 32 * sz, "rx": 21 * sxy, "ry": 16 * sxy}
    lo, hi = (-300, -300, -600), (300, 300, 600)
    amp = _u(rng, 3.5, 6.0)
    deform = [SmoothField(rng, lo, hi, 55.0, amp) for _ in range(3)]
    texture = SmoothField(rng, lo, hi, 18.0, 1.0)
    anat = Anatomy(hu=hu, body=body, spine=spine, deform=deform, texture=texture)
    anat.body["deform_margin"] = 4.0 * amp
    _place_organs(anat, rng, thin_mm)
    anat.structures = _structures(anat, rng, thin_mm)
    return anat


def _place_organs(anat: Anatomy, rng: np.random.Generator, thin_mm: float) -> None:
    """Scale and jitter the template organs into this case's geometry (``anat.organs``)."""
    sxy, sz = anat.body["sxy"], anat.body["sz"]
    lordosis = anat.spine_y

    def place(points, jitter=4.0, along_spine=False):
        pts = np.array(points, dtype=float) * [sxy, sxy, sz]
        pts = pts + rng.normal(0.0, jitter, size=3)
        if along_spine:  # vessels follow the lumbar lordosis of the spine behind them
            pts[:, 1] += lordosis(pts[:, 2]) - anat.spine["y"]
        return pts

    def size(lo=0.82, hi=1.2):
        return _u(rng, lo, hi)

    organs: dict[str, dict] = {}
    for name in ("liver_right", "liver_tip", "liver_left"):
        t = TEMPLATE[name]
        f = size(0.88, 1.12) if name == "liver_right" else size()
        organs[name] = {"center": place([t["center"]], 3.0)[0],
                        "radii": np.array(t["radii"]) * sxy * f}
    for name in ("spleen", "kidney_left", "kidney_right"):
        t = TEMPLATE[name]
        f = size()
        rot = rotation(*(np.array(t["rot"]) + rng.normal(0, 5, 3)))
        organs[name] = {"center": place([t["center"]], 4.0)[0],
                        "radii": np.array(t["radii"]) * sxy * f * rng.uniform(0.92, 1.08, 3),
                        "rot": rot}
    # the right kidney sits 1-2 cm lower than the left one (keep that whatever the jitter)
    dz = organs["kidney_left"]["center"][2] - organs["kidney_right"]["center"][2]
    organs["kidney_right"]["center"][2] -= max(0.0, _u(rng, 10, 22) - dz)

    for name in ("pancreas", "stomach", "gallbladder"):
        t = TEMPLATE[name]
        f = size()
        organs[name] = {"points": place(t["points"], 3.0),
                        "radii": np.array(t["radii"], dtype=float) * sxy * f}
    organs["gallbladder"]["radii"] = np.maximum(organs["gallbladder"]["radii"],
                                                [3.0 * thin_mm, 2.7 * thin_mm, 1.8 * thin_mm])
    for name in ("aorta", "ivc", "duodenum", "esophagus"):
        t = TEMPLATE[name]
        r = t["radius"] * sxy * size(0.85, 1.15)
        if name == "esophagus":
            r = max(r, 2.6 * thin_mm)
        organs[name] = {"points": place(t["points"], 2.5, along_spine=name in ("aorta", "ivc")),
                        "radius": r}
    # the stomach's pylorus and the duodenum's first point are the same junction
    organs["duodenum"]["points"][0] = organs["stomach"]["points"][-1]
    for name, kidney in (("adrenal_right", "kidney_right"), ("adrenal_left", "kidney_left")):
        t = TEMPLATE[name]
        # hang the gland just above its kidney's upper pole, wherever the kidney went
        k_template = np.array(TEMPLATE[kidney]["center"]) * [sxy, sxy, sz]
        shift = organs[kidney]["center"] - k_template
        shift[2] += organs[kidney]["radii"][2] - TEMPLATE[kidney]["radii"][2] * sxy
        pts = np.array(t["points"] + [t["branch"]], dtype=float) * [sxy, sxy, sz] + shift
        pts[1:] = pts[0] + (pts[1:] - pts[0]) * (1 + 0.05 * thin_mm)  # longer limbs when thick
        organs[name] = {"points": pts, "radius": max(t["radius"], 2.7 * thin_mm) * size(0.9, 1.1)}
    for name in ("heart", "bladder"):
        t = TEMPLATE[name]
        organs[name] = {"center": place([t["center"]], 5.0)[0],
                        "radii": np.array(t["radii"]) * sxy * size(0.85, 1.15)}
    anat.organs = organs


def _structures(anat: Anatomy, rng: np.random.Generator, thin_mm: float) -> list[Structure]:
    """Everything drawn after the body wall, in painting order (later structures win)."""
    o, h = anat.organs, anat.hu
    below_dia = 2.0  # abdominal organs stay this far under the diaphragm
    out: list[Structure] = []

    def add(name, box, paint):
        out.append(Structure(name, np.asarray(box[0]), np.asarray(box[1]), paint))

    # --- background anatomy: heart, psoas, bowel, colon, bladder ----------------------------
    heart = o["heart"]

    def paint_heart(w):
        m = (ellipsoid_level(w.x, w.y, w.z, heart["center"], heart["radii"]) < 1) & (w.zdia > 0)
        w.put(m & w.cavity, h["blood_pool"])
        m2 = (ellipsoid_level(w.x, w.y, w.z, heart["center"], heart["radii"] * 0.8) < 1)
        w.put(m & ~m2 & w.cavity & (w.x > heart["center"][0]), h["muscle"] + 10)

    add("heart", ellipsoid_box(heart["center"], heart["radii"]), paint_heart)
    for side in (-1, 1):
        pts = [(side * 30, anat.spine["y"] + 2, 10), (side * 42, anat.spine["y"] + 4, -60),
               (side * 55, anat.spine["y"] - 5, -140), (side * 70, anat.spine["y"] - 20, -210)]
        rad = [6, 16, 24, 22]
        add(f"psoas_{side}", tube_box(pts, rad),
            lambda w, p=pts, r=rad: w.put(tube_level(w.x, w.y, w.z, p, r) < 1, h["muscle"]))
    out.extend(_bowel(anat, rng))
    bl = o["bladder"]
    add("bladder", ellipsoid_box(bl["center"], bl["radii"]),
        lambda w: w.put((ellipsoid_level(w.x, w.y, w.z, bl["center"], bl["radii"]) < 1)
                        & w.cavity, h["water"]))

    # --- labelled organs ---------------------------------------------------------------------
    def paint_liver(w):
        m = ellipsoid_level(w.x, w.y, w.z, o["liver_right"]["center"], o["liver_right"]["radii"]) < 1
        m |= ellipsoid_level(w.x, w.y, w.z, o["liver_tip"]["center"], o["liver_tip"]["radii"]) < 1
        m |= ellipsoid_level(w.x, w.y, w.z, o["liver_left"]["center"], o["liver_left"]["radii"]) < 1
        m &= w.cavity & (w.zdia < -below_dia)
        spine_zone = (w.x / 55.0) ** 2 + ((w.y - anat.spine["y"] - 10) / 42.0) ** 2
        m &= spine_zone > 1  # retroperitoneum around the spine stays free
        m &= ~((w.x > 30) & (w.y > -20))  # the left lobe does not reach the spleen
        w.put(m, h["liver"], 1)

    lo = np.minimum.reduce([ellipsoid_box(o[n]["center"], o[n]["radii"])[0]
                            for n in ("liver_right", "liver_tip", "liver_left")])
    hi = np.maximum.reduce([ellipsoid_box(o[n]["center"], o[n]["radii"])[1]
                            for n in ("liver_right", "liver_tip", "liver_left")])
    add("liver", (lo, hi), paint_liver)

    sp = o["spleen"]

    def paint_spleen(w):
        m = ellipsoid_level(w.x, w.y, w.z, sp["center"], sp["radii"], sp["rot"]) < 1
        hilum = np.asarray(sp["center"]) + sp["rot"] @ np.array([-1.35 * sp["radii"][0], 0, 0])
        m &= ellipsoid_level(w.x, w.y, w.z, hilum, sp["radii"] * [0.7, 0.6, 0.6], sp["rot"]) > 1
        w.put(m & w.cavity & (w.zdia < -below_dia), h["spleen"], 3)

    add("spleen", ellipsoid_box(sp["center"], sp["radii"]), paint_spleen)

    for name, label, side in (("kidney_right", 2, -1), ("kidney_left", 13, 1)):
        k = o[name]

        def paint_kidney(w, k=k, label=label, side=side):
            lev = ellipsoid_level(w.x, w.y, w.z, k["center"], k["radii"], k["rot"])
            hilum_c = np.asarray(k["center"]) + k["rot"] @ np.array([-side * k["radii"][0], -6, 0])
            hil = ellipsoid_level(w.x, w.y, w.z, hilum_c, k["radii"] * [0.55, 0.45, 0.4], k["rot"])
            inside = lev < 1  # retroperitoneal: may press into the posterior wall muscles
            w.put(inside & (hil < 1), h["fat"] + 40)  # renal sinus fat and pelvis, not kidney
            m = inside & (hil >= 1)
            hu = np.where(lev > 0.72, np.float32(h["kidney_cortex"]), np.float32(h["kidney_medulla"]))
            w.put(m, hu, label)

        add(name, ellipsoid_box(k["center"], k["radii"]), paint_kidney)

    for name, label in (("adrenal_right", 7), ("adrenal_left", 8)):
        ad = o[name]
        apex, limb1, limb2 = ad["points"]

        def paint_adrenal(w, apex=apex, l1=limb1, l2=limb2, r=ad["radius"], label=label):
            lev = np.minimum(tube_level(w.x, w.y, w.z, [apex, l1], [r, r * 0.9]),
                             tube_level(w.x, w.y, w.z, [apex, l2], [r, r * 0.9]))
            w.put((lev < 1) & w.cavity & (w.zdia < -below_dia), h["adrenal"], label)

        add(name, tube_box(ad["points"], [ad["radius"]]), paint_adrenal)

    pa = o["pancreas"]

    def paint_pancreas(w):
        m = (tube_level(w.x, w.y, w.z, pa["points"], pa["radii"]) < 1) & w.cavity
        w.put(m & (w.zdia < -below_dia), h["pancreas"], 4)

    add("pancreas", tube_box(pa["points"], pa["radii"]), paint_pancreas)

    st = o["stomach"]
    gas_level = _u(rng, -60, -20)  # supine: gas collects anteriorly (low y)

    def paint_stomach(w):
        lev = tube_level(w.x, w.y, w.z, st["points"], st["radii"])
        m = (lev < 1) & w.cavity & (w.zdia < -below_dia)
        lumen = lev < 0.82
        hu = np.where(lumen, np.where(w.y < gas_level, np.float32(-1000), np.float32(h["water"])),
                      np.float32(h["gi_wall"]))
        w.put(m, hu, 11)

    add("stomach", tube_box(st["points"], st["radii"]), paint_stomach)

    du = o["duodenum"]

    def paint_duodenum(w):
        lev = tube_level(w.x, w.y, w.z, du["points"], [du["radius"]] * len(du["points"]))
        m = (lev < 1) & w.cavity & (w.zdia < -below_dia)
        hu = np.where(lev < 0.55, np.float32(h["water"] + 10), np.float32(h["gi_wall"]))
        w.put(m, hu, 12)

    add("duodenum", tube_box(du["points"], [du["radius"]]), paint_duodenum)

    gb = o["gallbladder"]
    add("gallbladder", tube_box(gb["points"], gb["radii"]),
        lambda w: w.put((tube_level(w.x, w.y, w.z, gb["points"], gb["radii"]) < 1) & w.cavity
                        & (w.zdia < -below_dia), h["water"], 9))

    es = o["esophagus"]

    def paint_esophagus(w):
        lev = tube_level(w.x, w.y, w.z, es["points"], [es["radius"]] * len(es["points"]))
        w.put((lev < 1) & w.cavity, h["esophagus"], 10)

    add("esophagus", tube_box(es["points"], [es["radius"]]), paint_esophagus)
    # the stomach is drawn again over the junction so the esophagus ends where the stomach starts
    out.append(Structure("stomach_junction", *tube_box(st["points"][:2], st["radii"][:2]),
                         paint_stomach))

    iv = o["ivc"]
    add("ivc", tube_box(iv["points"], [iv["radius"]]),
        lambda w: w.put((tube_level(w.x, w.y, w.z, iv["points"], [iv["radius"]] * len(iv["points"]))
                         < 1) & w.cavity, h["ivc"], 6))
    ao = o["aorta"]
    add("aorta", tube_box(ao["points"], [ao["radius"]]),
        lambda w: w.put((tube_level(w.x, w.y, w.z, ao["points"], [ao["radius"]] * len(ao["points"]))
                         < 1) & w.cavity, h["aorta"], 5))
    il = TEMPLATE["iliac_arteries"]
    split = ao["points"][-1]
    for end in il["ends"]:
        pts = [split, np.array(end) * [anat.body["sxy"], anat.body["sxy"], anat.body["sz"]]]
        r = il["radius"] * anat.body["sxy"]
        add("iliac", tube_box(pts, [r]),
            lambda w, p=pts, r=r: w.put((tube_level(w.x, w.y, w.z, p, [ao["radius"] * 0.8, r]) < 1)
                                        & w.cavity & (w.lab != 5), h["aorta"], 0))
    out.extend(_bones(anat))
    return out


def _bowel(anat: Anatomy, rng: np.random.Generator) -> list[Structure]:
    """Colon (with gas) and small-bowel loops: unlabelled texture of the lower abdomen."""
    h, sxy, sz = anat.hu, anat.body["sxy"], anat.body["sz"]
    out = []
    colon = np.array([(-95, 5, -170), (-98, 0, -60), (-92, -25, -15), (-40, -75, -45),
                      (30, -72, -40), (88, -25, 30), (100, 15, -40), (95, 20, -150),
                      (40, 10, -200), (5, 55, -205), (0, 60, -280)], dtype=float)
    colon = colon * [sxy, sxy, sz] + rng.normal(0, 6, colon.shape)
    r_colon = _u(rng, 17, 24)
    gas = _u(rng, 0.35, 0.7)

    def paint_colon(w):
        lev = tube_level(w.x, w.y, w.z, colon, [r_colon] * len(colon))
        lumen = np.where(lev < gas, np.float32(-900), np.float32(h["bowel"] - 10))
        w.put((lev < 1) & w.cavity & (w.zdia < -3), np.where(lev < 0.8, lumen, np.float32(h["gi_wall"])))

    out.append(Structure("colon", *tube_box(colon, [r_colon]), paint_colon))
    for n in range(int(rng.integers(12, 20))):
        upper = n % 3 == 0  # a third of the loops fill the anterior mid-abdomen
        c = np.array([rng.uniform(-80, 80) * sxy,
                      (rng.uniform(-90, -55) if upper else rng.uniform(-85, 10)) * sxy,
                      (rng.uniform(-90, -20) if upper else rng.uniform(-210, -85)) * sz])
        pts = [c, c + rng.normal(0, 25, 3), c + rng.normal(0, 35, 3)]
        r = _u(rng, 11, 17)
        fill = h["bowel"] if rng.random() < 0.7 else _u(rng, 120, 220)  # oral contrast
        out.append(Structure(
            "small_bowel", *tube_box(pts, [r]),
            lambda w, p=pts, r=r, f=fill: w.put(
                (tube_level(w.x, w.y, w.z, p, [r] * 3) < 1) & w.cavity & (w.zdia < -3), f)))
    return out


def _bones(anat: Anatomy) -> list[Structure]:
    """Spine (vertebral bodies, discs, posterior arches), ribs, pelvis and femoral heads."""
    h, sp, sxy, sz = anat.hu, anat.spine, anat.body["sxy"], anat.body["sz"]
    pitch = sp["pitch"]
    out = []

    def paint_spine(w):
        yc = anat.spine_y(w.z)
        above_sacrum = w.z > -4.5 * pitch
        u = np.mod(w.z + 0.5 * pitch, pitch) - 0.5 * pitch  # position within the vertebra
        disc = np.abs(u) > 0.5 * pitch - 3.5
        rx = sp["rx"] * (1.1 - 0.15 * np.clip(w.z / 300.0, -0.3, 1.0))
        body = ((w.x / rx) ** 2 + ((w.y - yc) / sp["ry"]) ** 2)
        vb = (body < 1) & above_sacrum
        _bone(w, vb & disc, h["disc"])
        _bone(w, vb & ~disc, np.where(body > 0.75, np.float32(h["cortical"] * 0.6),
                                   np.float32(h["trabecular"])))
        cy = yc + sp["ry"] + 11
        canal = np.sqrt(w.x ** 2 + (w.y - cy) ** 2)
        arch = (canal < 16) & (canal >= 9) & (np.abs(u) < 0.5 * pitch - 5) & above_sacrum
        _bone(w, above_sacrum & (canal < 9), h["water"] + 15)
        spinous = (np.abs(w.x) < 5) & (w.y > cy + 10) & (w.y < cy + 42) & (np.abs(u - 5) < 0.28 * pitch)
        lumbar = (w.z < 0.5 * pitch) & (w.z > -4.5 * pitch)
        transverse = lumbar & (np.abs(w.x) > 12) & (np.abs(w.x) < 38) & (np.abs(w.y - cy + 8) < 4) \
            & (np.abs(u) < 3.5)
        _bone(w, (arch | spinous | transverse) & above_sacrum, h["cortical"] * 0.5)

    y0 = sp["y"] - 30
    out.append(Structure("spine", np.array([-60, y0 - 20, -5 * pitch]), np.array([60, y0 + 110, 700]),
                         paint_spine))

    def paint_ribs(w):
        lev = anat.body_level(w.x, w.y, w.z)
        f_in, c_in = anat.wall_levels()
        band = np.abs(lev - 0.5 * (f_in + c_in)) < 0.5 * (f_in - c_in) + 0.01
        if not band.any():
            return
        theta = np.arctan2(np.abs(w.x[band]), w.y[band])  # 0 at the back, pi at the front
        t0 = 0.16 * np.pi
        drop = 55.0 * sz * np.clip((theta - t0) / (np.pi - t0), 0, 1) ** 1.2
        v = (w.z[band] + drop) / pitch
        n = np.rint(v)
        reach = np.array([0, 0.42, 0.58, 0.72, 0.76, 0.8, 0.82, 0.84, 0.84, 0.84, 0.82, 0.8, 0.78])
        idx = np.clip(n, 0, 12).astype(int)
        half = max(4.5, 0.45 * anat.body.get("voxel_z", 0.0))
        rib = (n >= 1) & (n <= 12) & (np.abs(v - n) * pitch < half) & (theta > t0) \
            & (theta < reach[idx] * np.pi)
        m = np.zeros_like(band)
        m[band] = rib
        _bone(w, m, h["cortical"] * 0.5)

    out.append(Structure("ribs", np.array([-250, -200, 0.5 * pitch]), np.array([250, 200, 700]),
                         paint_ribs))
    for side in (-1, 1):  # iliac wings, femoral heads, pubic rami
        wing_c = np.array([side * 92 * sxy, 40 * sxy, -185 * sz])
        wing_r = np.array([8, 62, 50]) * sxy
        wing_rot = rotation(0, 0, side * 28)
        head_c = np.array([side * 88 * sxy, -8 * sxy, -268 * sz])
        pubis_c = np.array([side * 30 * sxy, -68 * sxy, -290 * sz])
        femur = [head_c, head_c + [side * 18, 0, -150]]

        pubis_rot = rotation(0, 0, -side * 35)

        def paint_pelvis(w, wc=wing_c, wr=wing_r, rot=wing_rot, hc=head_c, pc=pubis_c, fe=femur,
                         prot=pubis_rot):
            wing = ellipsoid_level(w.x, w.y, w.z, wc, wr, rot)
            _bone(w, wing < 1, np.where(wing > 0.7, np.float32(h["cortical"] * 0.6),
                                     np.float32(h["trabecular"])))
            head = ellipsoid_level(w.x, w.y, w.z, hc, (24, 24, 24))
            _bone(w, head < 1, np.where(head > 0.8, np.float32(h["cortical"] * 0.8),
                                     np.float32(h["trabecular"])))
            shaft = tube_level(w.x, w.y, w.z, fe, [15, 15])
            _bone(w, shaft < 1, np.where(shaft > 0.6, np.float32(h["cortical"]),
                                      np.float32(h["marrow_fat"])))
            _bone(w, ellipsoid_level(w.x, w.y, w.z, pc, (32, 10, 12), prot) < 1,
                  h["cortical"] * 0.7)

        lo = np.minimum.reduce([wing_c - 70, head_c - 30, pubis_c - 35, np.array(femur[1]) - 20])
        hi = np.maximum.reduce([wing_c + 70, head_c + 30, pubis_c + 35])
        out.append(Structure("pelvis", lo, hi, paint_pelvis))
    sac_c = np.array([0, 58 * sxy, -200 * sz])
    sac_r = np.array([42, 16, 55]) * sxy
    sac_rot = rotation(-30, 0, 0)

    def paint_sacrum(w):
        lev = ellipsoid_level(w.x, w.y, w.z, sac_c, sac_r, sac_rot)
        _bone(w, lev < 1, np.where(lev > 0.75, np.float32(h["cortical"] * 0.7), np.float32(h["trabecular"])))

    out.append(Structure("sacrum", *ellipsoid_box(sac_c, sac_r), paint_sacrum))
    return out


def _bone(w: Window, mask: np.ndarray, hu) -> None:
    """Bone replaces whatever was drawn there, organ labels included."""
    w.put(mask, hu, 0)
