"""`keras-mle fit` and `keras-mle show` with a glob `--data`: CSV shards streamed, not loaded.

The streamed fit reads the shards a batch at a time and takes one optimizer step per pass on the
gradient of all rows, so it makes the full-batch steps of the single-file fit: the two are
compared on the same rows, written once as one file and once as three shards of uneven sizes.
As in `tests/test_cli.py`, the fits run in-process through `keras_mle.cli.main`; the errors the
front end answers before TensorFlow is imported run in one fresh process, as in
`tests/test_cli_errors.py`.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import cli_run as run
from helpers import front_end_probe, summary_rows

from keras_mle import checkpoint

ROOT = Path(__file__).resolve().parents[1]
ROWS = 150
#: Rows of each shard: batches of 32 then cross the files' boundaries, the last one short.
SHARDS = (70, 50, 30)
GLOB = "part-*.csv"
#: Agreement of the streamed and the single-file fit (parameters, standard errors). Both stop
#: once the whitened gradient norm is under 1e-6 / sqrt(n), so each is within about 1e-6
#: standard errors of the MLE; and both take the same full-batch steps from the same start, so
#: they differ only by the order of float64 additions (measured: ~1e-15). 1e-6 relative leaves
#: that margin and still fails a streamed fit that stopped elsewhere (mini-batch SGD at a fixed
#: rate ends near the last batch's optimum, 2% to 40% away from the MLE on these data).
RTOL = 1e-6


def _write(path, header, rows):
    path.write_text("\n".join([header] + [",".join(repr(v) for v in row) for row in rows]) + "\n")


@pytest.fixture
def shards(tmp_path, monkeypatch):
    """`all.csv` and its rows in three shards `part-0.csv`..., in the current folder."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=ROWS), rng.normal(size=ROWS)
    y = 1.0 + 2.0 * a - 1.0 * b + rng.normal(size=ROWS)
    sample = rng.normal(3.0, 1.0, size=ROWS)
    rows = [tuple(float(v) for v in row) for row in zip(a, b, y, sample, strict=True)]
    header = "a,b,y,sample"
    _write(tmp_path / "all.csv", header, rows)
    start = 0
    for index, size in enumerate(SHARDS):
        _write(tmp_path / f"part-{index}.csv", header, rows[start : start + size])
        start += size
    return tmp_path


def steps_of(out):
    return int(re.search(r"(\d+) optimizer step\(s\) in all", out).group(1))


def assert_same_table(streamed, single):
    """Estimates and standard errors of two summaries agree (the table prints 6 digits)."""
    streamed, single = summary_rows(streamed), summary_rows(single)
    assert streamed and set(streamed) == set(single)
    for label, (coef, stderr, *_) in single.items():
        assert streamed[label][0] == pytest.approx(coef, rel=RTOL), label
        assert streamed[label][1] == pytest.approx(stderr, rel=RTOL), label


@pytest.mark.parametrize(
    "model, columns, batches",
    [
        pytest.param("linear", ["--x", "a,b", "--y", "y"], [], id="linear-one batch"),
        pytest.param(
            "linear", ["--x", "a,b", "--y", "y"], ["--batch-size", "32"], id="linear-batches of 32"
        ),
        pytest.param("gaussian", ["--y", "sample"], ["--batch-size", "32"], id="gaussian-32"),
    ],
)
def test_streamed_fit_equals_the_single_file_fit(shards, capsys, model, columns, batches):
    code, single, err = run(capsys, "fit", model, "--data", "all.csv", *columns, "--out", "a.keras")
    assert (code, err) == (0, "")
    code, streamed, err = run(
        capsys, "fit", model, "--data", GLOB, *columns, *batches, "--out", "s.keras"
    )
    assert (code, err) == (0, "")
    assert f"on {ROWS} rows of '{GLOB}' (3 files): converged at epoch " in streamed
    # The same full-batch steps: the same number of them.
    assert steps_of(streamed) == steps_of(single)
    assert_same_table(streamed, single)
    fitted, reference = keras.models.load_model("s.keras"), keras.models.load_model("a.keras")
    for name, value in reference.params.items():
        np.testing.assert_allclose(fitted.params[name], value, rtol=RTOL, err_msg=name)
    record = json.loads(Path("s.keras.json").read_text())
    assert record["model"] == model


def test_show_reads_a_glob(shards, capsys):
    code, _, err = run(
        capsys, "fit", "linear", "--data", GLOB, "--x", "a,b", "--y", "y", "--out", "m.keras"
    )
    assert (code, err) == (0, "")
    # HC3 reads the stream twice (leverages need the whole inverse Hessian first).
    code, streamed, err = run(capsys, "show", "m.keras", "--data", GLOB, "--cov-type", "HC3")
    assert (code, err) == (0, "")
    code, single, err = run(capsys, "show", "m.keras", "--data", "all.csv", "--cov-type", "HC3")
    assert (code, err) == (0, "")
    assert "Covariance:                        HC3" in streamed
    assert_same_table(streamed, single)


def _with_a_blank_cell(shards, line):
    """Blanks column `b` of data line `line` (from 1) in `all.csv` and in the shards."""
    text = (shards / "all.csv").read_text().splitlines()
    cells = text[line].split(",")
    cells[1] = ""
    text[line] = ",".join(cells)
    (shards / "all.csv").write_text("\n".join(text) + "\n")
    start = 1
    for index, size in enumerate(SHARDS):
        part = [text[0], *text[start : start + size]]
        (shards / f"part-{index}.csv").write_text("\n".join(part) + "\n")
        start += size


def test_missing_cell_in_a_shard_is_an_error_and_nothing_is_written(shards, capsys):
    _with_a_blank_cell(shards, 80)  # in part-1.csv
    outputs = shards / "outputs"
    code, out, err = run(
        capsys, "fit", "linear", "--data", GLOB, "--x", "a,b", "--y", "y",
        "--out", "m.keras", "--logdir", outputs / "logs", "--checkpoint-dir", outputs / "backup",
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"keras-mle fit: error: --data '{GLOB}': a row has a missing value (an empty, NA or NaN "
        "cell) in column 'b' (--missing drop skips such rows)"
    ]
    assert not outputs.exists() and not Path("m.keras").exists()


def test_missing_drop_skips_the_row_as_the_single_file_fit_does(shards, capsys):
    _with_a_blank_cell(shards, 80)
    common = ["linear", "--x", "a,b", "--y", "y", "--missing", "drop"]
    code, single, err = run(capsys, "fit", "--data", "all.csv", *common)
    assert (code, err) == (0, "")
    assert single.startswith("dropped 1 row(s) with a missing value (lines 81)\n")
    code, streamed, err = run(capsys, "fit", "--data", GLOB, *common)
    assert (code, err) == (0, "")
    assert streamed.startswith("dropped 1 row(s) with a missing value\n")
    assert f"on {ROWS - 1} rows of '{GLOB}' (3 files)" in streamed
    assert_same_table(streamed, single)


def test_missing_drop_with_several_batches(shards, capsys):
    _with_a_blank_cell(shards, 80)
    common = ["linear", "--x", "a,b", "--y", "y", "--missing", "drop"]
    code, single, err = run(capsys, "fit", "--data", "all.csv", *common)
    assert (code, err) == (0, "")
    code, streamed, err = run(capsys, "fit", "--data", GLOB, *common, "--batch-size", "32")
    assert (code, err) == (0, "")
    assert_same_table(streamed, single)


def test_every_row_dropped_is_an_error(shards, capsys):
    for index in range(len(SHARDS)):
        Path(f"part-{index}.csv").write_text("a,b,y,sample\n1,,3,4\n,2,3,4\n")
    code, out, err = run(
        capsys, "fit", "linear", "--data", GLOB, "--x", "a,b", "--y", "y", "--missing", "drop"
    )
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"keras-mle fit: error: --data '{GLOB}': every row has a missing value in a used column"
    ]


BAD_CELLS = {
    # The missing values of a single file (NA, null, #N/A...) are missing values in a glob too.
    "NA cell": (
        "4,NA,2,3",
        [],
        "a row has a missing value (an empty, NA or NaN cell) in column 'b' (--missing drop skips "
        "such rows)",
    ),
    "inf cell": ("4,inf,2,3", [], "x (a dataset), batch 0: x contains 1 NaN or Inf value(s)."),
}
#: Cells a glob refuses as a single file does (`1_000`: Python's `float` reads it, `0x10`: C's
#: `strtod` does), naming the file, the line (part-2.csv: 30 rows, the cell on line 32) and
#: the column.
NOT_NUMBERS = {"text cell": "oops", "underscore cell": "1_000", "hexadecimal cell": "0x10"}


def run_with_a_bad_line(capsys, shards, line, options=()):
    with open(shards / "part-2.csv", "a") as file:
        file.write(line + "\n")
    return run(
        capsys, "fit", "linear", "--data", GLOB, "--x", "a,b", "--y", "y", *options,
        "--out", "m.keras", "--checkpoint-dir", "backup",
    )  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_CELLS))
def test_bad_cell_in_a_shard_is_one_line_and_nothing_is_written(shards, capsys, case):
    line, options, message = BAD_CELLS[case]
    code, out, err = run_with_a_bad_line(capsys, shards, line, options)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"keras-mle fit: error: --data '{GLOB}': {message}"]
    assert not Path("m.keras").exists() and not Path("backup").exists()


@pytest.mark.parametrize("case", sorted(NOT_NUMBERS))
def test_a_cell_that_is_not_a_number_names_its_file_line_and_column(shards, capsys, case):
    cell = NOT_NUMBERS[case]
    code, out, err = run_with_a_bad_line(capsys, shards, f"4,{cell},2,3")
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith(f"keras-mle fit: error: --data '{GLOB}': ")
    # (tf.data escapes the quotes of the message: see the exact line below.)
    assert f"part-2.csv line 32, column 'b': '{cell}' is not a number" in line.replace("\\'", "'")
    assert not Path("m.keras").exists() and not Path("backup").exists()


def test_a_cell_that_is_not_a_number_is_the_single_files_exact_line(shards, capsys):
    code, _, err = run_with_a_bad_line(capsys, shards, "4,1_000,2,3")
    assert code == 2
    assert err.splitlines() == [
        f"keras-mle fit: error: --data '{GLOB}': part-2.csv line 32, column 'b': '1_000' is not "
        "a number"
    ]


def test_missing_values_in_shards_are_dropped_as_in_a_single_file(shards, capsys):
    for name in ("all.csv", "part-1.csv"):
        with open(shards / name, "a") as file:
            file.write("4,NA,2,3\n0.5,1,#N/A,3\n")
    common = ["linear", "--x", "a,b", "--y", "y", "--missing", "drop"]
    code, single, err = run(capsys, "fit", "--data", "all.csv", *common)
    assert (code, err) == (0, "")
    code, streamed, err = run(capsys, "fit", "--data", GLOB, *common, "--batch-size", "32")
    assert (code, err) == (0, "")
    assert "dropped 2 row(s) with a missing value" in streamed
    assert f"on {ROWS} rows" in streamed
    assert_same_table(streamed, single)


def test_a_capped_streamed_run_resumes_exactly(shards, capsys):
    # SGD(0.3) shrinks the whitened error 0.4 times a step: it converges in about 20 epochs,
    # so a run stopped after 5 resumes long before its convergence test could start.
    common = ["fit", "linear", "--data", GLOB, "--x", "a,b", "--y", "y", "--batch-size", "32"]
    common += ["--learning-rate", "0.3"]
    code, out, err = run(capsys, *common, "--epochs", "5", "--checkpoint-dir", "backup")
    assert (code, out) == (1, "")
    assert err.startswith("keras-mle fit: error: did not converge within --epochs 5: ")
    assert checkpoint.read_backup("backup")["epoch"] == 5
    code, out, err = run(
        capsys, *common, "--checkpoint-dir", "backup", "--resume", "--out", "r.keras"
    )
    assert (code, err) == (0, "")
    code, straight, err = run(capsys, *common, "--out", "s.keras")
    assert (code, err) == (0, "")
    assert steps_of(out) == steps_of(straight) > 5
    resumed, fitted = keras.models.load_model("r.keras"), keras.models.load_model("s.keras")
    for name, value in fitted.params.items():
        np.testing.assert_array_equal(resumed.params[name], value, err_msg=name)


def test_streamed_divergence_exits_1_and_keeps_the_saved_model(shards, capsys):
    Path("m.keras").write_bytes(b"the previous model")
    code, out, err = run(
        capsys, "fit", "linear", "--data", GLOB, "--x", "a,b", "--y", "y",
        "--learning-rate", "1e6", "--out", "m.keras",
    )  # fmt: skip
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-mle fit: error: the fit diverged (")
    assert lines[0].endswith("try a smaller --learning-rate (now 1e+06); nothing saved to --out")
    assert Path("m.keras").read_bytes() == b"the previous model"


# ------------------------------------------------------- errors answered without TensorFlow
FILES = {
    "ok-0.csv": "a,b,y\n1,2,3\n2,1,5\n",
    "ok-1.csv": "a,b,y\n3,5,4\n",
    "other-0.csv": "a,b,y\n1,2,3\n",
    "other-1.csv": "a,b,z\n1,2,3\n",
    "blank-0.csv": "a,b,y\n1,2,3\n",
    "blank-1.csv": "a,b,y\n1,2,3\n\n2,1,5\n",
    "header-0.csv": "a,b,y\n",
    "header-1.csv": "a,b,y\n",
    "latin-0.bin": b"a,b,y\n1,2,caf\xe9\n",
    "model.keras": "not read: show checks its --data first",
    "cr-0.csv": "a,b,y\r1,2,3\r2,1,5\r",
    "crlf-0.csv": "a,b,y\r\n1,2,3\r\n",
    "crlf-1.csv": "a,b,y\r\n2,1,5\r3,5,4\r\n",
    "u16-0.csv": "a,b,y\n1,2,3\n".encode("utf-16"),
    "long-0.csv": "a,b,y\n1,2,3\n",
    "long-1.csv": "a," + "b" * (1 << 20),
    "longcr-0.csv": "a,b,y" + "\r1,2,3" * (1 << 18),
    "pipe-0.csv": "a,b,y\n1,2,3\n",
}
#: Named pipes the fixture makes (opening one with no writer would block for ever).
PIPES = ["pipe-1.csv"]
FIT = ["fit", "linear", "--x", "a,b", "--y", "y"]
OUT = ["--out", "m.keras", "--logdir", "logs"]
#: name: (argv, exact stderr lines); every one exits 2.
CASES = {
    "glob matches nothing": (
        [*FIT, "--data", "nothing-*.csv", *OUT],
        ["keras-mle fit: error: --data 'nothing-*.csv' matches no file"],
    ),
    "headers differ": (
        [*FIT, "--data", "other-*.csv", *OUT],
        [
            "keras-mle fit: error: other-1.csv: its header (a, b, z) differs from that of "
            "other-0.csv (a, b, y); every file of --data 'other-*.csv' needs the same columns"
        ],
    ),
    "column not found": (
        ["fit", "linear", "--x", "a,c", "--y", "y", "--data", "ok-*.csv", *OUT],
        ["keras-mle fit: error: column 'c' not found in ok-0.csv (columns: a, b, y)"],
    ),
    "blank line": (
        [*FIT, "--data", "blank-*.csv", *OUT],
        [
            "keras-mle fit: error: blank-1.csv line 3 is blank: remove it (a glob --data reads "
            "every line after the header as a row)"
        ],
    ),
    "no data rows": (
        [*FIT, "--data", "header-*.csv", *OUT],
        ["keras-mle fit: error: --data 'header-*.csv': the files have a header but no data rows"],
    ),
    "not UTF-8": (
        [*FIT, "--data", "latin-*.bin", *OUT],
        ["keras-mle fit: error: latin-0.bin is not UTF-8 text (byte 13): save it as CSV UTF-8"],
    ),
    "unquoted glob": (
        [*FIT, "--data", "ok-0.csv", "ok-1.csv", *OUT],
        [
            "keras-mle: error: unrecognized arguments: ok-1.csv (quote a glob given as --data: "
            "--data 'shards/part-*.csv') (see keras-mle --help)"
        ],
    ),
    # The glob's reader (tf.data) ends lines at LF only: a CR alone is refused, not read.
    "CR line ends": (
        [*FIT, "--data", "cr-*.csv", *OUT],
        [
            "keras-mle fit: error: cr-0.csv line 1 ends in a CR alone (classic Mac OS): save it "
            "with LF or CRLF line ends (a glob --data reads its lines at LF)"
        ],
    ),
    "a CR alone in a CRLF file": (
        [*FIT, "--data", "crlf-*.csv", *OUT],
        [
            "keras-mle fit: error: crlf-1.csv line 2 ends in a CR alone (classic Mac OS): save "
            "it with LF or CRLF line ends (a glob --data reads its lines at LF)"
        ],
    ),
    "CR line ends, over the header's limit": (
        [*FIT, "--data", "longcr-*.csv", *OUT],
        [
            "keras-mle fit: error: longcr-0.csv line 1 ends in a CR alone (classic Mac OS): save "
            "it with LF or CRLF line ends (a glob --data reads its lines at LF)"
        ],
    ),
    "UTF-16": (
        [*FIT, "--data", "u16-*.csv", *OUT],
        ["keras-mle fit: error: u16-0.csv is UTF-16 text, not UTF-8: save it as CSV UTF-8"],
    ),
    "header with no line end": (
        [*FIT, "--data", "long-*.csv", *OUT],
        [
            "keras-mle fit: error: long-1.csv: no line end in its first 1048576 bytes (a header "
            "line is at most 1048576 bytes)"
        ],
    ),
    "a named pipe among the files": (
        [*FIT, "--data", "pipe-*.csv", *OUT],
        [
            "keras-mle fit: error: --data 'pipe-*.csv' matches pipe-1.csv, which is a named "
            "pipe, not a file"
        ],
    ),
    "show, glob matches nothing": (
        ["show", "model.keras", "--data", "nothing-*.csv", "--x", "a,b", "--y", "y"],
        ["keras-mle show: error: --data 'nothing-*.csv' matches no file"],
    ),
}


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("stream")
    for name, text in FILES.items():
        if isinstance(text, bytes):
            (cwd / name).write_bytes(text)
        else:
            (cwd / name).write_text(text, encoding="utf-8")
    for name in PIPES:
        os.mkfifo(cwd / name)
    argvs = {name: argv for name, (argv, _) in CASES.items()}
    return (cwd, *front_end_probe(cwd, argvs))


def test_glob_errors_need_no_tensorflow(probe):
    _, _, imported = probe
    assert imported == {"tensorflow": False, "keras": False, "keras_mle": False, "numpy": False}


@pytest.mark.parametrize("case", sorted(CASES))
def test_glob_error_is_one_exact_line_and_nothing_is_written(probe, case):
    cwd, results, _ = probe
    code, out, err = results[case]
    assert (code, out) == (2, "")
    assert err.splitlines() == CASES[case][1]
    assert not (cwd / "logs").exists()
    assert not (cwd / "m.keras").exists()


# A console-script subprocess (about 13 s): the in-process tests cover the same fit.
@pytest.mark.slow
def test_console_streamed_fit_is_quiet(shards):
    """A fresh `keras-mle fit` process on the shards: no stderr at all (no TensorFlow lines)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, "-m", "keras_mle_cli", "fit", "gaussian", "--data", GLOB,
         "--y", "sample", "--batch-size", "64"],
        cwd=shards, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert f"GaussianMLE on {ROWS} rows of '{GLOB}' (3 files): converged" in done.stdout


def test_streamed_divergence_is_reported_as_the_single_file_one(shards, capsys):
    """The same full-batch steps, refused by the same input check: the same epoch, the same line."""
    common = ["linear", "--x", "a,b", "--y", "y", "--learning-rate", "1e6"]
    code, out, single = run(capsys, "fit", "--data", "all.csv", *common)
    assert (code, out) == (1, "")
    code, out, streamed = run(capsys, "fit", "--data", GLOB, *common, "--batch-size", "32")
    assert (code, out) == (1, "")
    # (lr 1e6: the full-batch loss rises epoch after epoch, which is divergence before a NaN.)
    assert re.match(
        r"keras-mle fit: error: the fit diverged \(in epoch \d+: the full-batch ", streamed
    )
    assert streamed == single
