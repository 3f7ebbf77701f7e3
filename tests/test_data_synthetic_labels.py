"""Label vectors of the synthetic study: whole real patients, MIMIC labels derived from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qcxr.data.synthetic_labels import (
    EXTRA_DECAY,
    EXTRA_RATE,
    MAX_IMAGES_PER_PATIENT,
    MIMIC_26,
    draw_patients,
    mimic_findings,
    mimic_labels,
    nih_findings,
    real_label_rows,
    study_labels,
)
from qcxr.labels import CXR19, NIH20


@pytest.fixture(scope="module")
def pool() -> pd.DataFrame:
    return real_label_rows()


def test_patients_are_disjoint_whole_and_capped(pool):
    drawn = draw_patients(pool, [30, 20], np.random.default_rng(0))
    assert [sum(len(p) for p in split) for split in drawn] == [30, 20]
    subjects = [{pool["subj_id"].iloc[p[0]] for p in split} for split in drawn]
    assert subjects[0].isdisjoint(subjects[1])
    for split in drawn:
        for patient in split:
            assert len(patient) <= MAX_IMAGES_PER_PATIENT
            assert pool["subj_id"].iloc[patient].nunique() == 1


def test_asking_for_more_than_the_pool_is_an_error(pool):
    with pytest.raises(ValueError, match="more images than the real label pool"):
        draw_patients(pool, [len(pool) + 1], np.random.default_rng(0))


def test_study_labels_extra_rates_are_a_long_tail():
    nih = study_labels("nih20")
    assert nih.labels == NIH20 and not nih.mimic_training and nih.textured == ()
    extra = study_labels("cxr8", 3)
    assert extra.labels[-3:] == ("Finding 1", "Finding 2", "Finding 3") and extra.mimic_training
    assert extra.textured == extra.labels
    assert list(extra.extra_rates.values()) == [EXTRA_RATE * EXTRA_DECAY**k for k in range(3)]


def test_mimic_labels_keep_the_nih_row_and_name_every_class(pool):
    source = pool.iloc[int(np.flatnonzero(pool["Effusion"].to_numpy())[0])]
    labels = mimic_labels(source, np.random.default_rng(0), {"Finding 1": 1.0})
    assert list(labels) == [*(n for n in labels if n not in ("Finding 1", "No Finding")),
                            "Finding 1", "No Finding"]  # fmt: skip
    assert set(MIMIC_26) <= set(labels) and labels["Pleural Effusion"] == 1
    assert labels["Finding 1"] == 1 and labels["No Finding"] == 0
    assert all(labels[n] == int(source[n]) for n in CXR19 if n != "Effusion")


def test_findings_render_only_labels_of_the_set(pool):
    source = pool.iloc[int(np.flatnonzero(pool["Effusion"].to_numpy())[0])]
    labels = {**dict.fromkeys(MIMIC_26, 0), "Pleural Effusion": 1, "Lung Opacity": 1}
    labels.update({n: int(source[n]) for n in CXR19 if n != "Effusion"})
    nih = nih_findings(source)
    assert "Effusion" in nih
    assert mimic_findings(labels, source) == nih  # NIH-only study: no other textures
    assert mimic_findings(labels, source, NIH20) == nih  # Lung Opacity is not in the set
    assert mimic_findings(labels, source, (*NIH20, "Lung Opacity")) == [*nih, "Lung Opacity"]
