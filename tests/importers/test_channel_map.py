"""dataset.json's explicit channel -> FLARE label map (imported models with other labels)."""

from __future__ import annotations

import pytest

from c2fseg.plans import CHANNEL_LABELS_KEY, PlansError, channel_labels_from_dataset

LABELS = {"background": 0, "vessel": 1, "bone": 2, "kidney": 3}


def test_explicit_map_wins_over_names():
    assert channel_labels_from_dataset({"labels": LABELS, CHANNEL_LABELS_KEY: [0, 5, 0, 13]}) == (0, 5, 0, 13)
    with pytest.raises(PlansError, match="not a FLARE23 label name"):  # without it: names rule
        channel_labels_from_dataset({"labels": LABELS})


@pytest.mark.parametrize(("value", "message"), [
    ([0, 5, 0], "one FLARE label id per"),
    ([1, 5, 0, 13], "channel 0 must be background"),
    ([0, 5, 0, 15], "FLARE23 label 0-14"),
    ([0, 5, 5, 13], "several channels"),
    ([0, "5", 0, 13], "one FLARE label id per"),
])
def test_bad_maps_are_refused(value, message):
    with pytest.raises(PlansError, match=message):
        channel_labels_from_dataset({"labels": LABELS, CHANNEL_LABELS_KEY: value})
