"""CSV files checked and read without TensorFlow: one file into memory, or a glob scanned.

`read_columns` reads the used columns of one file (a UTF-8 byte order mark skipped, the
separator told from the header, missing cells an error or dropped); `scan_files` checks every
file of a glob, a block at a time, without holding their rows (same header, UTF-8 throughout,
LF or CRLF line ends, no blank line), for `keras_mle.cli` to stream. Only regular files are
opened, and a header line is at most `HEADER_LIMIT` bytes. A cell is a number if it matches
`NUMBER`, the pattern `keras_mle.data.csv_dataset` reads a glob's cells by. Every problem is a
one-line `UsageError` naming the file, the line and the column.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import math
import os
import re

from keras_mle_cli.errors import UsageError
from keras_mle_cli.paths import open_input_file

__all__ = [
    "HEADER_LIMIT",
    "MISSING_CELLS",
    "NUMBER",
    "SCAN_CHUNK",
    "read_columns",
    "scan_files",
    "is_glob",
]

#: Cells read as a missing value (compared in lower case, after stripping blanks).
MISSING_CELLS = frozenset({"", "na", "n/a", "nan", "null", "#n/a"})
#: Bytes of a streamed file the checks read at a time (whole lines: a longer line is read whole).
SCAN_CHUNK = 1 << 24
#: The longest header line read, in bytes: a file with no line end is refused, not read whole.
HEADER_LIMIT = 1 << 20
#: A number in a cell, blanks stripped: ASCII digits with an optional sign, decimal point and
#: exponent, or `inf`, `infinity`, `nan` in any case; not `1_000` (which Python's `float` reads),
#: `0x10` nor other scripts' digits. The same as `keras_mle.data.files.NUMBER` (a test checks).
NUMBER = r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))"
_NUMBER = re.compile(NUMBER)
#: The blanks stripped from a cell: ASCII whitespace, as `tf.strings.strip` strips.
_BLANKS = " \t\r\n\f\v"
#: A blank (or whitespace-only) line in a block of whole lines, each ending in `\n`.
_BLANK_LINE = re.compile(rb"(?:\A|\n)[ \t\r\f\v]*\n")
#: A CR not followed by LF: a line end of classic Mac OS, which a glob's reader does not take.
_LONE_CR = re.compile(rb"\r(?!\n)")
#: Byte order marks of the encodings a CSV file is most often saved in instead of UTF-8.
_OTHER_ENCODINGS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),  # before UTF-16: it begins with UTF-16's mark
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _not_utf8(path, head, byte):
    """The `UsageError` for a file that is not UTF-8, naming its encoding when its mark does."""
    encoding = next((name for bom, name in _OTHER_ENCODINGS if head.startswith(bom)), None)
    if encoding is not None:
        return UsageError(f"{path} is {encoding} text, not UTF-8: save it as CSV UTF-8")
    return UsageError(f"{path} is not UTF-8 text (byte {byte}): save it as CSV UTF-8")


def _open_regular(path, pattern=None):
    """`path` opened to read bytes; a path that is not a regular file is refused, unopened."""
    if pattern is None:
        return open_input_file(path, lambda kind: f"--data {path} is {kind}, not a regular file")
    return open_input_file(
        path, lambda kind: f"--data {pattern!r} matches {path}, which is {kind}, not a file"
    )


def _check_header_length(path, head, *, cr_ends_lines=True):
    """Refuses a file whose first `HEADER_LIMIT + 1` bytes `head` hold no line end.

    A CR ends a line where `cr_ends_lines` (Python's csv reader), else it is refused.
    """
    if len(head) <= HEADER_LIMIT or b"\n" in head or (cr_ends_lines and b"\r" in head):
        return
    if b"\r" in head:
        raise _lone_cr(path, 1)
    raise UsageError(
        f"{path}: no line end in its first {HEADER_LIMIT} bytes (a header line is at most "
        f"{HEADER_LIMIT} bytes)"
    )


def _lone_cr(path, line):
    return UsageError(
        f"{path} line {line} ends in a CR alone (classic Mac OS): save it with LF or CRLF "
        "line ends (a glob --data reads its lines at LF)"
    )


def _detect_separator(path, text):
    header = next((line for line in text.splitlines() if line.strip()), "")
    found = [sep for sep in (",", ";", "\t") if sep in header]
    if len(found) > 1:
        names = " and ".join(repr(s).replace("'\\t'", "tab") for s in found)
        raise UsageError(f"{path}: cannot tell the separator (the header has {names}): give --sep")
    return found[0] if found else ","


def read_columns(path, columns, *, sep=None, missing="error"):
    """Reads the numeric `columns` of a CSV file with a header row; `{name: [float, ...]}`.

    A UTF-8 byte order mark is skipped; the separator is `sep`, or the one of `,` `;` tab found
    in the header. A missing value (an empty cell, `NA`, `NaN`, `null`, `#N/A`) in a used column
    is an error naming its line and column, or with `missing="drop"` drops the row.

    Returns:
        `(values, dropped_lines)`.

    Raises:
        UsageError: an unreadable or non-UTF-8 file, no data rows, a duplicate or missing column
            name, a row with another number of fields than the header, a cell that is not a
            finite number, a field over csv's size limit.
    """
    try:
        with _open_regular(path) as file:
            head = file.read(HEADER_LIMIT + 1)
            _check_header_length(path, head)
            content = head + file.read()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _not_utf8(path, content, error.start) from None
    sep = sep or _detect_separator(path, text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise UsageError(f"{path} is empty")
        header = [name.strip() for name in header]
        positions = _column_positions(path, header, columns)
        values = {column: [] for column in columns}
        dropped = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            if len(row) != len(header) and not (
                len(row) > len(header) and not any(c.strip() for c in row[len(header) :])
            ):
                raise UsageError(
                    f"{path} line {line}: {len(row)} field(s), the header has {len(header)}"
                )
            parsed = _parse_row(path, line, row, positions, sep)
            if parsed is None:
                if missing == "error":
                    column = next(c for c, p in positions.items() if _is_missing(row[p]))
                    raise UsageError(
                        f"{path} line {line}, column {column!r}: missing value "
                        "(--missing drop skips such rows)"
                    )
                dropped.append(line)
                continue
            for column, value in parsed.items():
                values[column].append(value)
    except csv.Error as error:
        raise UsageError(f"{path} line {reader.line_num}: {error}") from None
    kept = len(values[columns[0]])
    if kept == 0:
        if dropped:
            raise UsageError(f"{path}: every row has a missing value in a used column")
        raise UsageError(f"{path} has a header but no data rows")
    return values, dropped


def _column_positions(path, header, columns):
    seen = {}
    for position, name in enumerate(header):
        if name and name in seen:
            raise UsageError(
                f"{path}: column {name!r} appears twice in the header "
                f"(fields {seen[name] + 1} and {position + 1})"
            )
        seen[name] = position
    positions = {}
    for column in columns:
        if column not in seen:
            raise UsageError(
                f"column {column!r} not found in {path} (columns: {', '.join(header)})"
            )
        positions[column] = seen[column]
    return positions


def _is_missing(cell):
    return cell.strip(_BLANKS).lower() in MISSING_CELLS


def _parse_row(path, line, row, positions, sep):
    """`{column: float}`, or `None` when a used cell is missing."""
    parsed = {}
    for column, position in positions.items():
        cell = row[position].strip(_BLANKS)
        if _is_missing(cell):
            return None
        if not _NUMBER.fullmatch(cell):
            hint = ""
            if "," in cell and sep != ",":
                hint = " (write decimals with '.', not ',')"
            raise UsageError(
                f"{path} line {line}, column {column!r}: {cell!r} is not a number{hint}"
            )
        value = float(cell)
        if not math.isfinite(value):
            raise UsageError(
                f"{path} line {line}, column {column!r}: {cell!r} is not a finite number"
            )
        parsed[column] = value
    return parsed


def is_glob(path) -> bool:
    """Whether `--data` is a glob to stream: wildcards (`*`, `?`, `[`) and no file of that name."""
    return any(c in path for c in "*?[") and not os.path.exists(path)


def _scan_file(path, pattern):
    """`(header_line, data_lines)` of a CSV file, read in blocks of whole lines.

    The whole file is checked, one block at a time: a regular file, UTF-8 throughout, LF or
    CRLF line ends, no blank line (the streamed reader takes every line after the header as a
    row), a header line of at most `HEADER_LIMIT` bytes.

    Raises:
        UsageError: an unreadable, empty or non-UTF-8 file, a blank line, a CR alone, a file
            that is not a regular file (of the glob `pattern`).
    """
    header, newlines, offset, rest = None, 0, 0, b""
    try:
        with _open_regular(path, pattern) as file:
            while True:
                chunk = file.read(SCAN_CHUNK)
                block = rest + chunk
                if header is None:
                    _check_header_length(path, block[: HEADER_LIMIT + 1], cr_ends_lines=False)
                if chunk:
                    cut = block.rfind(b"\n") + 1
                    block, rest = block[:cut], block[cut:]
                else:
                    rest = b""
                    if block and not block.endswith(b"\n"):
                        block += b"\n"  # the last line, unterminated
                try:
                    block.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise _not_utf8(path, block, offset + error.start) from None
                if header is None and block:
                    header = block.split(b"\n", 1)[0].removeprefix(codecs.BOM_UTF8)
                _check_lines(path, block, newlines)
                newlines += block.count(b"\n")
                offset += len(block)
                if not chunk:
                    break
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    if header is None:
        raise UsageError(f"{path} is empty")
    return header.decode("utf-8").rstrip("\r"), max(newlines - 1, 0)


def _check_lines(path, block, newlines):
    """Refuses a blank line or a CR alone in `block`, whole lines after line `newlines`."""
    blank = _BLANK_LINE.search(block)
    if blank is not None:
        # (A match past the block's start begins with the previous line's end.)
        start = blank.start() + (blank.start() > 0)
        line = newlines + block.count(b"\n", 0, start) + 1
        raise UsageError(
            f"{path} line {line} is blank: remove it (a glob --data reads every "
            "line after the header as a row)"
        )
    if block.count(b"\r") != block.count(b"\r\n"):
        raise _lone_cr(path, newlines + block.count(b"\n", 0, _LONE_CR.search(block).start()) + 1)


def scan_files(pattern, columns, *, sep=None):
    """Checks the CSV files matching `pattern` without holding their rows.

    Every file is read once, a block at a time, as `_scan_file` reads it. The separator is
    `sep`, or the one of `,` `;` tab found in the first file's header.

    Returns:
        `(files, sep, lines)`: the files (sorted), the separator, the data lines in all.

    Raises:
        UsageError: no file matches, a file `_scan_file` refuses (one that is not a regular
            file among them),
            a header that differs from the first file's, a duplicate or missing column name, no
            data rows.
    """
    files = sorted(glob.glob(pattern))
    if not files:
        raise UsageError(f"--data {pattern!r} matches no file")
    first, lines = None, 0
    for path in files:
        text, count = _scan_file(path, pattern)
        lines += count
        if first is None:
            sep = sep or _detect_separator(path, text)
        try:
            header = [name.strip() for name in next(csv.reader([text], delimiter=sep), [])]
        except csv.Error as error:
            raise UsageError(f"{path} line 1: {error}") from None
        if first is None:
            first = header
            _column_positions(path, header, columns)
        elif header != first:
            raise UsageError(
                f"{path}: its header ({', '.join(header)}) differs from that of {files[0]} "
                f"({', '.join(first)}); every file of --data {pattern!r} needs the same columns"
            )
    if lines == 0:
        raise UsageError(f"--data {pattern!r}: the files have a header but no data rows")
    return files, sep, lines
