"""Label files that cannot be read as one label per column and one row per image (issue 13,
item 6): duplicated label columns and empty files, each an error naming the file."""

from __future__ import annotations

import re

import pytest

from qcxr.data.datasets import MIMICCXRLT, NIHCXRLT, file_labels, label_stats
from qcxr.labels import TASKS

HEADER = ["id", *TASKS["cxr8"]]


def write_csv(tmp_path, text: str):
    path = tmp_path / "miccai2023_nih-cxr-lt_labels_test.csv"
    path.write_text(text)
    return path


def nih_rows(header: list[str], rows: list[list[str]]) -> str:
    return "".join(",".join(r) + "\n" for r in [header, *rows])


def test_a_duplicated_label_column_with_contradicting_values_is_an_error(tmp_path):
    header = [*HEADER, "Effusion"]  # Effusion is column 4 and again column 10
    rows = [["a.png", *"00100000", "1"], ["b.png", *"00000000", "1"]]
    path = write_csv(tmp_path, nih_rows(header, rows))
    with pytest.raises(ValueError) as err:
        NIHCXRLT(path, tmp_path, "cxr8", check_files=False)
    assert str(err.value) == (
        f"{path}: duplicated column(s): 'Effusion' (column 4) and 'Effusion' (column 10) both "
        "name 'Effusion': their values contradict each other on 1 row(s), first on line 3; "
        "keep one"
    )


def test_an_alias_of_a_label_column_counts_as_a_duplicate(tmp_path):
    header = [*HEADER, "Pleural Effusion"]
    rows = [["a.png", *"00100000", "0"]]
    path = write_csv(tmp_path, nih_rows(header, rows))
    with pytest.raises(ValueError, match=re.escape(
        f"{path}: duplicated column(s): 'Effusion' (column 4) and 'Pleural Effusion' (column 10)"
        " both name 'Effusion': their values contradict each other on 1 row(s), first on line 2"
    )):  # fmt: skip
        NIHCXRLT(path, tmp_path, "cxr8", check_files=False)


def test_duplicated_columns_that_agree_are_an_error_too(tmp_path):
    """Which column is meant cannot be told from the file; agreement today is no guarantee."""
    header = [*HEADER, "Mass"]
    rows = [["a.png", *"00001000", "1"], ["b.png", *"00000000", "0"]]
    path = write_csv(tmp_path, nih_rows(header, rows))
    for read in (
        lambda: NIHCXRLT(path, tmp_path, "cxr8", check_files=False),
        lambda: label_stats([path], "cxr8"),
    ):
        with pytest.raises(ValueError, match=re.escape(
            f"{path}: duplicated column(s): 'Mass' (column 6) and 'Mass' (column 10) both name "
            "'Mass': their values agree, but one column per label is required; keep one"
        )):  # fmt: skip
            read()
    # The header alone (data.source auto reads only headers) names the duplicate as well.
    with pytest.raises(ValueError, match=re.escape(f"{path}: duplicated column(s): 'Mass'")):
        file_labels(path)


def test_a_duplicated_column_of_a_mimic_file_is_an_error(tmp_path):
    header = ["dicom_id", "path", "Pleural Effusion", *TASKS["cxr8"]]
    rows = [["d1", "files/d1.jpg", "1", *"00100000"]]
    path = tmp_path / "mimic.csv"
    path.write_text(nih_rows(header, rows))
    with pytest.raises(ValueError, match=re.escape(
        f"{path}: duplicated column(s): 'Pleural Effusion' (column 3) and 'Effusion' (column 6)"
        " both name 'Effusion': their values agree"
    )):  # fmt: skip
        MIMICCXRLT(path, tmp_path, "cxr8", check_files=False)


@pytest.mark.parametrize("text", ["", "\n\n"], ids=["0 bytes", "blank lines"])
def test_an_empty_file_is_named(tmp_path, text):
    path = write_csv(tmp_path, text)
    message = f"{path}: the file is empty (no header line)"
    with pytest.raises(ValueError, match=re.escape(message)):
        NIHCXRLT(path, tmp_path, "cxr8", check_files=False)
    with pytest.raises(ValueError, match=re.escape(message)):
        file_labels(path)


def test_a_header_only_file_is_named(tmp_path):
    path = write_csv(tmp_path, ",".join(HEADER) + "\n")
    with pytest.raises(ValueError, match=re.escape(
        f"{path}: the file is empty (a header line and no data rows)"
    )):  # fmt: skip
        NIHCXRLT(path, tmp_path, "cxr8", check_files=False)
    mimic = tmp_path / "mimic.csv"
    mimic.write_text("dicom_id,path," + ",".join(TASKS["cxr8"]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{mimic}: the file is empty")):
        MIMICCXRLT(mimic, tmp_path, "cxr8", check_files=False)
