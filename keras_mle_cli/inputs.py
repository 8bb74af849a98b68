"""The data the front end hands to `keras_mle.cli`: columns read into memory, or a checked stream.

Standard library only. `--data` naming one CSV file gives `Columns` (its used columns, read and
checked by `keras_mle_cli.csv_files.read_columns`); a glob gives a `Stream` (the files checked by
`scan_files`, never held whole), which `keras_mle.cli` reads a batch at a time
(`keras_mle.data.csv_dataset`).
"""

from __future__ import annotations

__all__ = ["Columns", "Stream"]


class Columns:
    """Numeric columns read from a CSV file: `values[name]` is a list of floats per used column.

    Attributes:
        path: The file.
        x: Feature column names (for a model of a sample: the one sample column).
        y: Target column name, or `None`.
        values: `{name: [float, ...]}`, one entry per row kept.
        dropped_lines: Line numbers of the rows dropped by `--missing drop`.
    """

    def __init__(self, path, x, y, values, dropped_lines):
        self.path = path
        self.x = list(x)
        self.y = y
        self.values = values
        self.dropped_lines = dropped_lines

    @property
    def rows(self) -> int:
        return len(self.values[self.x[0]])

    def describe(self) -> str:
        """The file's name, for messages."""
        return str(self.path)


class Stream:
    """CSV files named by a glob `--data`, checked but not read into memory.

    Attributes:
        pattern: The glob as given (`path`, as `Columns.path`, for messages).
        files: The files it matches, sorted: the order they are read in.
        sep: The field separator.
        x: Feature column names (for a model of a sample: the one sample column).
        y: Target column name, or `None`.
        missing: `"error"` or `"drop"` (`--missing`).
        lines: Data lines in all the files: the rows, before `--missing drop`.
    """

    def __init__(self, pattern, files, sep, x, y, missing, lines):
        self.pattern = pattern
        self.files = list(files)
        self.sep = sep
        self.x = list(x)
        self.y = y
        self.missing = missing
        self.lines = lines

    @property
    def path(self) -> str:
        return self.pattern

    def describe(self) -> str:
        """`'shards/*.csv' (3 files)`, for messages."""
        count = len(self.files)
        return f"{self.pattern!r} ({count} file{'s' if count > 1 else ''})"
