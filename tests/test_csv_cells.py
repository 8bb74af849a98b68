"""One rule for CSV cells: a single file (the command line's front end, standard library) and a
glob (`keras_mle.data.csv_dataset`, tf.data) read the same cells as the same numbers, refuse
the same cells with the same message (file, line, column), and take the same missing values.

Also the files `csv_dataset` refuses before reading a row (UTF-16 or UTF-32, CR line ends, a
header with no line end) and the trailing blank lines it ignores.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_mle import data
from keras_mle.data import files
from keras_mle_cli import csv_files
from keras_mle_cli.errors import UsageError

#: cell: its value (the decimal written out by hand), read alike by both readers.
NUMBERS = {
    "1e3": 1000.0,
    " +.5 ": 0.5,
    "1.": 1.0,
    "-2E-1": -0.2,
    "\t7\r": 7.0,
    "00012": 12.0,
}
#: Cells neither reader takes as a number: Python's `float` reads the first, C's `strtod` the
#: second and third (as tf.data's own float parser did), Python the non-ASCII digits.
REFUSED = ["1_000", "0x10", "0X1p3", "١٢", "１２", "1e", "oops", "1.5.2"]
MISSING = ["", " ", "NA", "n/a", "NaN", "null", "#N/A"]


def test_the_two_readers_share_one_pattern_and_one_list_of_missing_cells():
    assert csv_files.NUMBER == files.NUMBER
    assert set(csv_files.MISSING_CELLS) == set(files.MISSING_CELLS)
    assert csv_files.HEADER_LIMIT == files.HEADER_LIMIT == 1 << 20


def single(path):
    values, dropped = csv_files.read_columns(str(path), ["a", "b"], sep=",", missing="drop")
    return values["b"], dropped


def glob_read(path):
    dataset = data.csv_dataset(str(path), x=["a"], y="b", batch_size=2, dtype="float64")
    return np.concatenate([y for _, y in dataset]).tolist()


@pytest.mark.parametrize("cell", sorted(NUMBERS))
def test_a_number_is_read_alike_from_a_file_and_a_glob(tmp_path, cell):
    path = tmp_path / "one.csv"
    path.write_text(f"a,b\n1,2\n3,{cell}\n", encoding="utf-8")
    expected = [2.0, NUMBERS[cell]]
    assert single(path) == (expected, [])
    np.testing.assert_allclose(glob_read(path), expected, rtol=1e-15)


@pytest.mark.parametrize("cell", REFUSED)
def test_a_cell_that_is_not_a_number_is_refused_alike_naming_file_line_column(tmp_path, cell):
    path = tmp_path / "one.csv"
    path.write_text(f"a,b\n1,2\n3,{cell}\n", encoding="utf-8")
    expected = f"{path} line 3, column 'b': {cell!r} is not a number"
    with pytest.raises(UsageError) as refused:
        single(path)
    assert str(refused.value) == expected
    with pytest.raises(tf.errors.InvalidArgumentError) as failed:
        glob_read(path)
    assert files.csv_cell_error(failed.value) == expected


@pytest.mark.parametrize("cell", MISSING)
def test_a_missing_value_is_dropped_alike(tmp_path, cell):
    path = tmp_path / "one.csv"
    path.write_text(f"a,b\n1,2\n3,{cell}\n4,5\n", encoding="utf-8")
    assert single(path) == ([2.0, 5.0], [3])
    dataset = data.csv_dataset(str(path), x=["a"], y="b", batch_size=2, missing="drop")
    assert [y.numpy().tolist() for _, y in dataset] == [[2.0, 5.0]]


def test_a_bad_cell_in_a_later_file_is_named_by_its_file_and_line(tmp_path):
    (tmp_path / "p-0.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    (tmp_path / "p-1.csv").write_text("a,b\n7,8\n9,10\n11,1_000\n13,14\n")
    # Batches of 2 run across the files: the bad cell is row 1 of the fourth batch.
    dataset = data.csv_dataset(str(tmp_path / "p-*.csv"), x=["a"], y="b", batch_size=2)
    with pytest.raises(tf.errors.InvalidArgumentError) as failed:
        list(dataset)
    assert files.csv_cell_error(failed.value) == (
        f"{tmp_path / 'p-1.csv'} line 4, column 'b': '1_000' is not a number"
    )
    assert files.csv_cell_error(ValueError("something else")) is None


def test_trailing_blank_lines_are_ignored(tmp_path):
    (tmp_path / "t-0.csv").write_text("a,b\n1,2\n3,4\n\n  \n")
    (tmp_path / "t-1.csv").write_text("a,b\r\n5,6\r\n\r\n")
    dataset = data.csv_dataset(str(tmp_path / "t-*.csv"), x=["a"], y="b", batch_size=2)
    assert dataset.cardinality() == 2  # 3 rows
    batches = [(x[:, 0].numpy().tolist(), y.numpy().tolist()) for x, y in dataset]
    assert batches == [([1.0, 3.0], [2.0, 4.0]), ([5.0], [6.0])]


@pytest.mark.parametrize(
    "content, match",
    [
        pytest.param(
            "a,b\n1,2\n".encode("utf-16"), r"the file is UTF-16 text \(its byte order mark\)",
            id="UTF-16",
        ),
        pytest.param(
            "a,b\n1,2\n".encode("utf-16-le"), r"the header has NUL bytes \(UTF-16 text without",
            id="UTF-16 without a mark",
        ),
        pytest.param("a,b\n1,2\n".encode("utf-32"), r"the file is UTF-32 text", id="UTF-32"),
        pytest.param(b"a,b\r1,2\r3,4\r", r"its lines end in CR alone", id="CR line ends"),
        pytest.param(b"a," + b"b" * (1 << 20), r"no line end in its first 1048576 bytes",
                     id="header with no line end"),
        pytest.param(b"a,\xe9\n1,2\n", r"the header is not UTF-8 text \(byte 2\)", id="latin-1"),
    ],
)  # fmt: skip
def test_csv_dataset_refuses_a_file_it_cannot_read_naming_it(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"^{tmp_path / 'bad.csv'}: {match}"):
        data.csv_dataset(str(path), x=["a"], y="b", batch_size=2)


def test_a_single_file_with_cr_line_ends_is_read(tmp_path):
    """The single-file reader (Python's csv) reads CR line ends; a glob refuses them, by name."""
    path = tmp_path / "mac.csv"
    path.write_bytes(b"a,b\r1,2\r3,4.5\r")
    assert csv_files.read_columns(str(path), ["a", "b"]) == ({"a": [1.0, 3.0], "b": [2.0, 4.5]}, [])
