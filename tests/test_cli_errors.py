"""`keras-mle` answers help, version, argument, path and CSV errors without importing TensorFlow.

Every case runs through `keras_mle_cli.main` in one fresh Python process (the front end of the
console script), which then reports whether `tensorflow` or `keras_mle` was imported. Each
error is compared line by line with the exact expected stderr.
"""

import json
import os

import pytest
from helpers import front_end_probe

import keras_mle

GOOD = "a,b,y\n1,2,3\n2,1,5\n3,5,4\n"
FILES = {
    "good.csv": GOOD,
    "bom.csv": "\ufeff" + GOOD,
    "dup.csv": "a,b,a,y\n1,2,3,4\n",
    "missing.csv": "a,b,y\n1,2,3\n2,,5\n",
    "na.csv": "a,b,y\n1,2,3\n2,NA,5\n",
    "text.csv": "a,b,y\n1,2,3\n2,oops,5\n",
    "inf.csv": "a,b,y\n1,2,3\n2,inf,5\n",
    "short.csv": "a,b,y\n1,2,3\n2,1\n",
    "ambiguous.csv": "a,b;y\n1,2;3\n",
    "decimal.csv": "a;b;y\n1;2,5;3\n",
    "header.csv": "a,b,y\n",
    "dropped.csv": "a,b,y\n1,,3\n,2,5\n",
    "big.csv": "a,b,y\n1,2," + "9" * 140_000 + "\n",
    "latin1.bin": b"a,b,y\n1,2,caf\xe9\n",
    "not_a_folder": "a file",
    "underscore.csv": "a,b,y\n1,2,3\n2,1_000,5\n",
    "hex.csv": "a,b,y\n1,2,3\n2,0x10,5\n",
    "utf16.csv": GOOD.encode("utf-16"),
    "long.csv": "a," + "b" * (1 << 20),
}
FIT = ["fit", "linear", "--x", "a,b", "--y", "y"]
DONE = "backup_done"
OTHER = "backup_other"
#: name: (argv, exit code, exact stderr lines)
CASES = {
    "seed -1": (
        [*FIT, "--data", "good.csv", "--seed", "-1"],
        2,
        [
            "keras-mle fit: error: argument --seed: must be in [0, 4294967295], got -1 "
            "(see keras-mle fit --help)"
        ],
    ),
    "seed 2**32": (
        [*FIT, "--data", "good.csv", "--seed", str(2**32)],
        2,
        [
            "keras-mle fit: error: argument --seed: must be in [0, 4294967295], got 4294967296 "
            "(see keras-mle fit --help)"
        ],
    ),
    "bad optimizer": (
        [*FIT, "--data", "good.csv", "--optimizer", "nope"],
        2,
        [
            "keras-mle fit: error: argument --optimizer: invalid choice: 'nope' (choose from "
            "'adadelta', 'adagrad', 'adam', 'adamax', 'adamw', 'ftrl', 'lion', 'nadam', 'rmsprop', "
            "'sgd') (see keras-mle fit --help)"
        ],
    ),
    "out folder missing": (
        [*FIT, "--data", "good.csv", "--out", "nowhere/m.keras", "--logdir", "logs"],
        2,
        ["keras-mle fit: error: --out nowhere/m.keras: the folder {cwd}/nowhere does not exist"],
    ),
    "out is a folder": (
        [*FIT, "--data", "good.csv", "--out", "folder.keras", "--logdir", "logs"],
        2,
        ["keras-mle fit: error: --out folder.keras is a folder, not a file"],
    ),
    "out suffix": (
        [*FIT, "--data", "good.csv", "--out", "m.h5"],
        2,
        ["keras-mle fit: error: --out must end in .keras, got 'm.h5'"],
    ),
    "logdir is a file": (
        [*FIT, "--data", "good.csv", "--logdir", "good.csv"],
        2,
        ["keras-mle fit: error: --logdir good.csv is a file, not a folder"],
    ),
    "checkpoint-dir under a file": (
        [*FIT, "--data", "good.csv", "--checkpoint-dir", "not_a_folder/backup", "--logdir", "logs"],
        2,
        [
            "keras-mle fit: error: --checkpoint-dir not_a_folder/backup: {cwd}/not_a_folder is a "
            "file, not a folder"
        ],
    ),
    "bom, column not found": (
        [*FIT[:2], "--x", "a,c", "--y", "y", "--data", "bom.csv"],
        2,
        ["keras-mle fit: error: column 'c' not found in bom.csv (columns: a, b, y)"],
    ),
    "duplicate column": (
        [*FIT, "--data", "dup.csv"],
        2,
        ["keras-mle fit: error: dup.csv: column 'a' appears twice in the header (fields 1 and 3)"],
    ),
    "empty cell": (
        [*FIT, "--data", "missing.csv"],
        2,
        [
            "keras-mle fit: error: missing.csv line 3, column 'b': missing value "
            "(--missing drop skips such rows)"
        ],
    ),
    "NA cell": (
        [*FIT, "--data", "na.csv", "--missing", "error"],
        2,
        [
            "keras-mle fit: error: na.csv line 3, column 'b': missing value "
            "(--missing drop skips such rows)"
        ],
    ),
    "text cell, even with drop": (
        [*FIT, "--data", "text.csv", "--missing", "drop"],
        2,
        ["keras-mle fit: error: text.csv line 3, column 'b': 'oops' is not a number"],
    ),
    "inf cell": (
        [*FIT, "--data", "inf.csv"],
        2,
        ["keras-mle fit: error: inf.csv line 3, column 'b': 'inf' is not a finite number"],
    ),
    "short row": (
        [*FIT, "--data", "short.csv"],
        2,
        ["keras-mle fit: error: short.csv line 3: 2 field(s), the header has 3"],
    ),
    "ambiguous separator": (
        [*FIT, "--data", "ambiguous.csv"],
        2,
        [
            "keras-mle fit: error: ambiguous.csv: cannot tell the separator "
            "(the header has ',' and ';'): give --sep"
        ],
    ),
    "decimal comma": (
        [*FIT, "--data", "decimal.csv"],
        2,
        [
            "keras-mle fit: error: decimal.csv line 2, column 'b': '2,5' is not a number "
            "(write decimals with '.', not ',')"
        ],
    ),
    "header only": (
        [*FIT, "--data", "header.csv"],
        2,
        ["keras-mle fit: error: header.csv has a header but no data rows"],
    ),
    "every row dropped": (
        [*FIT, "--data", "dropped.csv", "--missing", "drop"],
        2,
        ["keras-mle fit: error: dropped.csv: every row has a missing value in a used column"],
    ),
    "oversized field": (
        [*FIT, "--data", "big.csv"],
        2,
        ["keras-mle fit: error: big.csv line 2: field larger than field limit (131072)"],
    ),
    "not UTF-8": (
        [*FIT, "--data", "latin1.bin"],
        2,
        ["keras-mle fit: error: latin1.bin is not UTF-8 text (byte 13): save it as CSV UTF-8"],
    ),
    "no such file": (
        [*FIT, "--data", "absent.csv"],
        2,
        ["keras-mle fit: error: cannot read absent.csv: No such file or directory"],
    ),
    "same column twice": (
        [*FIT[:2], "--x", "a,y", "--y", "y", "--data", "good.csv"],
        2,
        ["keras-mle fit: error: column 'y' is given twice in --x/--y"],
    ),
    "resume another model": (
        [
            "fit",
            "gaussian-regression",
            "--x",
            "a,b",
            "--y",
            "y",
            "--data",
            "good.csv",
            "--checkpoint-dir",
            OTHER,
            "--resume",
            "--epochs",
            "50",
        ],
        2,
        [
            f"keras-mle fit: error: --resume: the backup in {OTHER} is a fit of linear --x a,b "
            "--y y with sgd, not gaussian-regression --x a,b --y y with nadam"
        ],
    ),
    "resume other columns": (
        [
            "fit",
            "linear",
            "--x",
            "a",
            "--y",
            "y",
            "--data",
            "good.csv",
            "--checkpoint-dir",
            OTHER,
            "--resume",
            "--epochs",
            "50",
        ],
        2,
        [
            f"keras-mle fit: error: --resume: the backup in {OTHER} is a fit of linear --x a,b "
            "--y y with sgd, not linear --x a --y y with sgd"
        ],
    ),
    "resume fewer epochs": (
        [*FIT, "--data", "good.csv", "--checkpoint-dir", DONE, "--resume", "--epochs", "20"],
        2,
        [
            f"keras-mle fit: error: --resume: the backup in {DONE} has already run 30 epoch(s); "
            "ask for --epochs > 30 to continue"
        ],
    ),
    "underscore cell": (
        [*FIT, "--data", "underscore.csv"],
        2,
        ["keras-mle fit: error: underscore.csv line 3, column 'b': '1_000' is not a number"],
    ),
    "hexadecimal cell": (
        [*FIT, "--data", "hex.csv"],
        2,
        ["keras-mle fit: error: hex.csv line 3, column 'b': '0x10' is not a number"],
    ),
    "UTF-16": (
        [*FIT, "--data", "utf16.csv"],
        2,
        ["keras-mle fit: error: utf16.csv is UTF-16 text, not UTF-8: save it as CSV UTF-8"],
    ),
    "header with no line end": (
        [*FIT, "--data", "long.csv"],
        2,
        [
            "keras-mle fit: error: long.csv: no line end in its first 1048576 bytes (a header "
            "line is at most 1048576 bytes)"
        ],
    ),
    # A device or a named pipe is refused unopened: /dev/zero never ends, and opening a pipe
    # with no writer blocks for ever. (/dev/null is the device of this test: on a regression
    # it reads as an empty file instead of filling the memory as /dev/zero would.)
    "character device": (
        [*FIT, "--data", "/dev/null"],
        2,
        ["keras-mle fit: error: --data /dev/null is a character device, not a regular file"],
    ),
    "named pipe": (
        [*FIT, "--data", "pipe.csv"],
        2,
        ["keras-mle fit: error: --data pipe.csv is a named pipe, not a regular file"],
    ),
    "folder": (
        [*FIT, "--data", "folder.keras"],
        2,
        ["keras-mle fit: error: --data folder.keras is a folder, not a regular file"],
    ),
    "show, named pipe": (
        ["show", "good.csv", "--data", "pipe.csv", "--x", "a,b", "--y", "y"],
        2,
        ["keras-mle show: error: --data pipe.csv is a named pipe, not a regular file"],
    ),
    "show missing model": (
        ["show", "absent.keras"],
        2,
        ["keras-mle show: error: no such file: absent.keras"],
    ),
}


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """`{case: (code, stdout, stderr)}` and the modules imported, from one fresh process."""
    cwd = tmp_path_factory.mktemp("cli")
    for name, text in FILES.items():
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(cwd / name, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as file:
            file.write(text)
    (cwd / "folder.keras").mkdir()
    os.mkfifo(cwd / "pipe.csv")
    record = {"model": "linear", "x": ["a", "b"], "y": "y", "optimizer": "sgd"}
    for folder in (DONE, OTHER):
        (cwd / folder).mkdir()
        (cwd / folder / "keras_mle_cli.json").write_text(json.dumps(record))
    (cwd / DONE / "training_metadata.json").write_text(json.dumps({"epoch": 30, "batch": 0}))
    argvs = {
        "help": ["--help"],
        "fit help": ["fit", "--help"],
        "version": ["--version"],
        **{name: argv for name, (argv, _, _) in CASES.items()},
    }
    return (cwd, *front_end_probe(cwd, argvs))


def test_nothing_heavy_is_imported(probe):
    _, _, imported = probe
    assert imported == {"tensorflow": False, "keras": False, "keras_mle": False, "numpy": False}


def test_help_and_version(probe):
    _, results, _ = probe
    code, out, err = results["help"]
    assert (code, err) == (0, "")
    assert out.startswith("usage: keras-mle [-h] [--version] COMMAND ...")
    assert "Exit codes: 0 answer, 1 no trustworthy answer" in " ".join(out.split())
    code, out, err = results["fit help"]
    assert (code, err) == (0, "") and "--missing {error,drop}" in out and "--sep CHAR" in out
    assert results["version"] == [0, f"keras-mle {keras_mle.__version__}\n", ""]


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_is_one_exact_line_and_nothing_is_written(probe, case):
    cwd, results, _ = probe
    code, out, err = results[case]
    _, expected_code, expected_lines = CASES[case]
    assert code == expected_code
    assert out == ""
    assert err.splitlines() == [line.format(cwd=cwd) for line in expected_lines]
    # Every error is raised before training: no log folder, backup or model appears.
    assert not (cwd / "logs").exists()
    assert not (cwd / "nowhere").exists()
    assert sorted(os.listdir(cwd / OTHER)) == ["keras_mle_cli.json"]
