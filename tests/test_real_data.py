"""The shared-data lookup of real_data.py: $C2FSEG_SHARED, then <repo>/../shared, then <repo>/shared."""

from __future__ import annotations

import real_data
from real_data import CT, LABELS, find_real, missing_reason, real_path


def _shared(root, *names):
    folder = root / "data" / "real"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"x")
    return root


def test_lookup_order_env_then_beside_then_inside(tmp_path, monkeypatch):
    repo = tmp_path / "clone"
    monkeypatch.setattr(real_data, "REPO", repo)
    monkeypatch.delenv(real_data.ENV_VAR, raising=False)
    assert find_real(CT) is None and real_path(CT) == tmp_path / "shared" / "data" / "real" / CT
    inside = _shared(repo / "shared", CT)
    assert find_real(CT) == inside / "data" / "real" / CT
    beside = _shared(tmp_path / "shared", CT)
    assert find_real(CT) == beside / "data" / "real" / CT
    env = _shared(tmp_path / "elsewhere", CT)
    monkeypatch.setenv(real_data.ENV_VAR, str(env))
    assert find_real(CT) == env / "data" / "real" / CT
    # a file the preferred folder lacks is taken from the next one that has it
    assert find_real(LABELS) is None
    (inside / "data" / "real" / LABELS).write_bytes(b"x")
    assert find_real(LABELS) == inside / "data" / "real" / LABELS


def test_missing_reason_names_the_file_the_places_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.setattr(real_data, "REPO", tmp_path / "clone")
    monkeypatch.setenv(real_data.ENV_VAR, str(tmp_path / "env"))
    _shared(tmp_path / "shared", CT)
    assert missing_reason([CT]) is None
    reason = missing_reason([CT, LABELS])
    assert LABELS in reason and CT not in reason.split(" not found")[0]
    for place in (tmp_path / "env", tmp_path / "shared", tmp_path / "clone" / "shared"):
        assert str(place) in reason
    assert real_data.ENV_VAR in reason
