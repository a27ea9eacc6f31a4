"""Exit codes: one module for every command; failed writes end in one line and exit 2."""

from __future__ import annotations

import errno
import os
import pkgutil
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from c2fseg import cli, commands, exitcodes, fileutil

REPO = Path(__file__).resolve().parents[1]


def test_codes_are_those_the_design_documents():
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(n) for n in re.findall(r"\b(\d+) (?:ok|unexpected|usage|some|interrupted)", section)}
    codes = (exitcodes.EXIT_OK, exitcodes.EXIT_ERROR, exitcodes.EXIT_USAGE,
             exitcodes.EXIT_SOME_FAILED, exitcodes.EXIT_INTERRUPTED)
    assert codes == (0, 1, 2, 3, 130) and set(codes) == documented
    assert cli.UsageError is exitcodes.UsageError and cli.EXIT_USAGE == 2


def test_commands_do_not_import_the_cli():
    names = [m.name for m in pkgutil.iter_modules(commands.__path__)]
    assert "predict" in names and "evaluate" in names
    for name in names:
        source = (Path(commands.__path__[0]) / f"{name}.py").read_text(encoding="utf-8")
        assert "c2fseg.cli" not in source, name


def write_labels_file(path: Path, ct: bool = False) -> None:
    arr = np.zeros((4, 5, 6), np.int16)
    arr[1:3, 1:4, 1:5] = 1
    arr = arr * 1040 - 1000 if ct else arr.astype(np.uint8)  # a CT: air and soft tissue
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))


@pytest.mark.parametrize("which", ["json", "csv"])
def test_evaluate_with_a_full_disk_ends_in_one_line_exit_2(tmp_path, monkeypatch, capsys, which):
    write_labels_file(tmp_path / "gt" / "a.nii.gz")
    write_labels_file(tmp_path / "pred" / "a.nii.gz")
    out = tmp_path / "out"
    target = out / f"metrics.{which}"
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst) == target:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(fileutil.os, "replace", replace)
    code = cli.main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                     "-o", str(out / "metrics.json"), "--csv", str(out / "metrics.csv"),
                     "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.splitlines() == [f"c2fseg evaluate: error: cannot write {target}: no space left "
                                f"on the disk holding {out} (or the disk quota is used up). Free "
                                "some space there or choose another output folder, then run the "
                                "same command again."]
    left = sorted(p.name for p in out.iterdir())
    assert left == ([] if which == "json" else ["metrics.json"])  # no temporary file


def test_view_png_on_a_full_disk_ends_in_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from matplotlib.figure import Figure

    write_labels_file(tmp_path / "ct.nii.gz", ct=True)

    def savefig(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", savefig)
    out = tmp_path / "png" / "view.png"
    code = cli.main(["view", str(tmp_path / "ct.nii.gz"), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"c2fseg view: error: cannot write {out}: no space left")
    assert list(out.parent.iterdir()) == []


def test_raw_os_errors_only_when_the_disk_is_full(tmp_path, monkeypatch, capsys):
    from c2fseg.commands import view

    raised = [OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.png"))]
    monkeypatch.setattr(view, "run", lambda args: (_ for _ in ()).throw(raised[0]))
    argv = ["view", str(tmp_path), "-o", str(tmp_path / "x.png")]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith(f"c2fseg view: error: cannot write {tmp_path / 'x.png'}: no space")
    raised[0] = PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(PermissionError):  # not ours to explain: a bug or an unexpected problem
        cli.main(argv)
