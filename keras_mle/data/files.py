"""Training data read from files, a batch at a time, with tf.data's own readers.

Two formats, exported from `keras_mle.data`:

- CSV shards as users have them (`csv_dataset`), parsed by `tf.data.experimental.CsvDataset`;
- a binary shard format for data converted once (`write_shards`, `shard_dataset`): each row is
  its columns as little-endian floats, one after the other, so a block of rows is one fixed-length
  record that `tf.data.FixedLengthRecordDataset` reads and `tf.io.decode_raw` decodes with no
  parsing. A JSON manifest beside the shards holds the columns, the dtype and each shard's rows.

Both give batches `(x, y)` or `(x, y, sample_weight)` with `x` of shape `(B, features)`, a known
cardinality (Keras then makes exactly one step per batch, with no "ran out of data" warning), and
read their files in a fixed order; a multi-worker strategy shards them by file or by data, never
dropping rows. Values are not checked here: the training step checks every streamed batch.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import glob
import json
import math
import os
import re

import numpy as np
import tensorflow as tf

from keras_mle.checkpoint import atomic
from keras_mle.data import validation

__all__ = ["csv_dataset", "csv_cell_error", "write_shards", "shard_dataset"]

#: Name of the manifest `write_shards` writes beside its shards.
MANIFEST_SUFFIX = ".manifest.json"
#: The longest header line `csv_dataset` reads, in bytes: a file with no line end is refused.
HEADER_LIMIT = 1 << 20
#: A number in a CSV cell, blanks stripped: ASCII digits with an optional sign, decimal point and
#: exponent, or `inf`, `infinity`, `nan` in any case. Not `1_000` (Python's `float` reads it),
#: `0x10` (C's `strtod` reads it) nor other scripts' digits. The command line's front end reads
#: a single file by the same pattern (`keras_mle_cli.csv_files.NUMBER`; a test holds them equal).
NUMBER = r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))"
#: Cells read as a missing value (NaN), in lower case, blanks stripped: the command line's
#: `keras_mle_cli.csv_files.MISSING_CELLS` (a test holds them equal).
MISSING_CELLS = ("", "na", "n/a", "nan", "null", "#n/a")
_MISSING = ("error", "drop")
_BLANKS = b" \t\r\n\f\v"
_OTHER_ENCODINGS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),  # before UTF-16: it begins with UTF-16's mark
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _files(pattern, name="pattern") -> list[str]:
    """The files matching `pattern` (a glob or a list of paths), sorted; raises if none."""
    if isinstance(pattern, (str, os.PathLike)):
        files = sorted(glob.glob(os.fspath(pattern)))
    else:
        files = [os.fspath(p) for p in pattern]
    if not files:
        raise ValueError(f"{name}: no file matches {pattern!r}.")
    for path in files:
        if not os.path.isfile(path):
            raise ValueError(f"{name}: {path!r} is not a file.")
    return files


def _columns_wanted(x, y, sample_weight) -> tuple[list[str], list[str]]:
    if isinstance(x, str) or not x:
        raise ValueError(f"x must be a non-empty list of column names, got {x!r}.")
    roles = [("x", list(x)), ("y", [] if y is None else [y])]
    roles.append(("sample_weight", [] if sample_weight is None else [sample_weight]))
    wanted = [c for _, columns in roles for c in columns]
    for column in wanted:
        if not isinstance(column, str):
            raise TypeError(f"column names must be strings, got {column!r}.")
    repeated = sorted({c for c in wanted if wanted.count(c) > 1})
    if repeated:
        raise ValueError(f"columns {repeated} are named more than once in x, y, sample_weight.")
    return list(x), wanted


def _csv_header(path, sep) -> list[str]:
    """The header of a CSV file, read as bytes: at most `HEADER_LIMIT` of them."""
    with open(path, "rb") as file:
        start = file.read(HEADER_LIMIT + 1)
    for bom, encoding in _OTHER_ENCODINGS:
        if start.startswith(bom):
            raise ValueError(
                f"{path}: the file is {encoding} text (its byte order mark); save it as UTF-8."
            )
    end = start.find(b"\n")
    if end < 0 and len(start) > HEADER_LIMIT:
        raise ValueError(
            f"{path}: no line end in its first {HEADER_LIMIT} bytes; expected a header line."
        )
    line = (start if end < 0 else start[:end]).removesuffix(b"\r")
    if b"\r" in line:
        raise ValueError(
            f"{path}: its lines end in CR alone (classic Mac OS); save it with LF or CRLF "
            "line ends."
        )
    if b"\x00" in line:
        raise ValueError(
            f"{path}: the header has NUL bytes (UTF-16 text without a byte order mark?); "
            "save it as UTF-8."
        )
    try:
        header = next(csv.reader([line.decode("utf-8-sig")], delimiter=sep), None)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: the header is not UTF-8 text (byte {error.start}); save it as UTF-8."
        ) from None
    except csv.Error as error:
        raise ValueError(f"{path}: cannot read the header: {error}.") from None
    if not header:
        raise ValueError(f"{path}: empty file, expected a header line.")
    header = [h.strip() for h in header]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise ValueError(f"{path}: duplicate column name(s) {repeated} in the header.")
    return header


def _count_lines(path) -> int:
    """Data lines of a CSV file: the header excluded, and the blank lines at its end."""
    newlines, last = 0, 0  # `last`: the number of the last line that is not blank
    with open(path, "rb") as file:
        while chunk := file.read(1 << 24):
            content = chunk.rstrip(_BLANKS)
            if content:
                last = newlines + content.count(b"\n") + 1
            newlines += chunk.count(b"\n")
    return max(last - 1, 0)


def _lines(files, counts, batch_size):
    """Blocks of `batch_size` data lines of `files`, across files: `(block number, lines)`.

    Each file gives its `counts[i]` lines after its header (so not its trailing blank lines).
    """
    sources = tf.data.Dataset.from_tensor_slices((files, tf.constant(counts, tf.int64)))
    lines = sources.flat_map(lambda path, n: tf.data.TextLineDataset(path).skip(1).take(n))
    return lines.batch(batch_size).enumerate()


def csv_cell_error(error) -> str | None:
    """`'<file> line <n>, column '<c>': '<cell>' is not a number'` from an error reading a
    `csv_dataset`, or `None` when `error` is not that one.

    tf.data escapes the quotes of the message it raises (`column \\'c\\'`); this gives it as
    written, for a one-line report.
    """
    message = getattr(error, "message", None) or str(error)
    found = re.search(r"assertion failed: \[(.*? is not a number)\]", message)
    return found.group(1).replace("\\'", "'") if found else None


def _batches(columns, n_x, has_y, has_w):
    """`(x, y[, sample_weight])` from a batch of columns, `x` stacked as `(B, n_x)`."""
    parts = [tf.stack(columns[:n_x], axis=1)]
    if has_y:
        parts.append(columns[n_x])
    if has_w:
        parts.append(columns[n_x + has_y])
    return tuple(parts) if len(parts) > 1 else parts[0]


def _cell_parser(files, counts, batch_size, wanted, select, back, sep, dtype):
    """`parse(number, lines)`: the `wanted` columns of block `number` of lines, as `dtype`.

    A cell is read as a number only if it matches `NUMBER` once its blanks are stripped; one of
    `MISSING_CELLS` (any case) is NaN, a missing value. Any other cell stops reading with an
    error naming the file, the line and the column (`csv_cell_error` gives it as written).
    """
    paths, names = tf.constant(files), tf.constant(wanted)
    ends = tf.constant(np.cumsum(counts), tf.int64)  # the rows before each file's end
    defaults = [tf.constant([""])] * len(wanted)
    cast = dtype not in (tf.float32, tf.float64)  # what to_number parses; others through float64

    def located(number, row):
        """`<file> line <n>` of row `row` of block `number` (the header is line 1)."""
        index = number * batch_size + row  # among all the files' data lines
        file = tf.searchsorted(ends, [index], side="right")[0]
        line = index - tf.concat([[0], ends], 0)[file] + 2
        return [tf.gather(paths, file), " line ", tf.strings.as_string(line)]

    def parse(number, block):
        columns = tf.io.decode_csv(block, defaults, field_delim=sep, select_cols=select)
        cells = tf.strings.strip(tf.stack([columns[i] for i in back], axis=1))
        lower = tf.strings.lower(cells)
        empty = tf.reduce_any(tf.equal(lower[..., None], MISSING_CELLS), axis=-1)
        bad = tf.logical_not(empty | tf.strings.regex_full_match(cells, NUMBER))
        first = tf.argmax(tf.reshape(tf.cast(bad, tf.int32), [-1]))
        row, column = first // len(wanted), first % len(wanted)
        cell = tf.strings.substr(cells[row, column], 0, 60)
        message = [*located(number, row), ", column '", names[column], "': '", cell]
        message.append("' is not a number")
        check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [tf.strings.join(message)])
        with tf.control_dependencies([check]):  # else to_number may fail first, less clearly
            values = tf.strings.to_number(
                tf.where(empty, "nan", cells), "float64" if cast else dtype
            )
        return tf.unstack(tf.cast(values, dtype), num=len(wanted), axis=1)

    return parse


def _finish(dataset, batch_size, rows):
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(math.ceil(rows / batch_size)))
    options = tf.data.Options()
    # Shard by file where each worker can get whole files, else by data; never OFF.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.AUTO
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def csv_dataset(
    pattern,
    *,
    x,
    y: str | None = None,
    sample_weight: str | None = None,
    batch_size: int,
    sep: str = ",",
    missing: str = "error",
    dtype="float32",
):
    """Batches of named columns of CSV files, parsed a batch of lines at a time.

    The lines are read by `tf.data.TextLineDataset` and parsed by `tf.io.decode_csv`, several
    batches in parallel (in order): faster than `tf.data.experimental.CsvDataset`, which parses
    one row at a time (`benchmarks/bench_files.py`).

    Every file must have a header line, the same in all files (UTF-8; a byte order mark is
    accepted; LF or CRLF line ends), of at most `HEADER_LIMIT` bytes. Files are read in sorted
    order; rows in file order; blank lines at the end of a file are ignored.

    Args:
        pattern: A glob (`"data/part-*.csv"`) or a list of paths.
        x: Names of the feature columns.
        y: Name of the target column. Defaults to `None` (a model of a sample).
        sample_weight: Name of a weight column. Defaults to `None`.
        batch_size: Rows per batch (batches run across file boundaries).
        sep: The field separator. Defaults to `","`.
        missing: What to do with a missing value (a cell of `MISSING_CELLS`: empty, `NA`,
            `N/A`, `NaN`, `null`, `#N/A`, in any case): `"error"` (stop reading with an error
            naming the column; the default) or `"drop"` (skip the rows with one in a used
            column; the rows are then counted by a first pass over the files).
        dtype: Float dtype of the values. Defaults to `"float32"`.

    Returns:
        A `tf.data.Dataset` of `x` batches of shape `(B, len(x))`, with `y` and `sample_weight`
        of shape `(B,)` when named, of known cardinality.

    Raises:
        ValueError: for bad arguments, files or headers, here, before any row is read.

    The cells themselves are parsed while the dataset is read (by `fit`, `evaluate` or an
    iteration), and their errors come from tf.data then, as a
    `tf.errors.InvalidArgumentError` that stops reading before the batch holding the row is
    used. A cell is a number if it matches `NUMBER` (its blanks stripped), the rule of the
    command line's single-file reader too: `1_000`, `0x10` or `١٢` are not. Any other cell gives
    `<file> line <n>, column '<name>': '<cell>' is not a number` (quotes escaped by tf.data;
    `csv_cell_error(error)` gives the message as written), and an empty or NaN cell with
    `missing="error"` gives `column '<name>' has a missing or NaN value in <pattern>`.
    """
    validation.check_positive_int("batch_size", batch_size)
    if missing not in _MISSING:
        raise ValueError(f"missing must be one of {_MISSING}, got {missing!r}.")
    if not isinstance(sep, str) or len(sep) != 1:
        raise ValueError(f"sep must be one character, got {sep!r}.")
    dtype = tf.as_dtype(dtype)
    if not dtype.is_floating:
        raise ValueError(f"dtype must be a float dtype, got {dtype.name}.")
    features, wanted = _columns_wanted(x, y, sample_weight)
    files = _files(pattern)
    header = _csv_header(files[0], sep)
    for path in files[1:]:
        if _csv_header(path, sep) != header:
            raise ValueError(f"{path}: its header differs from that of {files[0]}.")
    absent = [c for c in wanted if c not in header]
    if absent:
        raise ValueError(f"column(s) {absent} not found in {files[0]} (columns: {header}).")
    order = sorted(range(len(wanted)), key=lambda i: header.index(wanted[i]))
    select = [header.index(wanted[i]) for i in order]
    # decode_csv gives the selected columns in file order; `back` puts them in `wanted` order.
    back = [order.index(i) for i in range(len(wanted))]
    counts = [_count_lines(path) for path in files]
    parse = _cell_parser(files, counts, batch_size, wanted, select, back, sep, dtype)
    # The files' lines in order (each header skipped), batched straight away; each batch of
    # lines is then parsed at once by `decode_csv`, several batches in parallel and in order.
    # Parsing is what sets the pace: `CsvDataset` parses one row at a time on one thread.
    blocks = _lines(files, counts, batch_size)
    n_x, has_y, has_w = len(features), y is not None, sample_weight is not None
    if missing == "drop":

        def complete(number, block):
            columns = parse(number, block)
            keep = tf.reduce_all([tf.logical_not(tf.math.is_nan(c)) for c in columns], axis=0)
            return tuple(tf.boolean_mask(c, keep) for c in columns)

        blocks = blocks.map(complete, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        blocks = blocks.rebatch(batch_size)
        count = int(blocks.reduce(np.int64(0), lambda n, c: n + tf.shape(c[0], tf.int64)[0]))
        dataset = blocks.map(lambda *columns: _batches(columns, n_x, has_y, has_w))
    else:
        names = tf.constant(wanted)

        def checked(number, block):
            columns = parse(number, block)
            missing_in = tf.reduce_any(tf.math.is_nan(tf.stack(columns, axis=1)), axis=0)
            tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(missing_in)),
                [
                    "column",
                    tf.boolean_mask(names, missing_in),
                    f"has a missing or NaN value in {pattern!s} (pass missing='drop' to skip "
                    "such rows)",
                ],
            )
            return _batches(columns, n_x, has_y, has_w)

        dataset = blocks.map(checked, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        count = sum(counts)
    if count == 0:
        raise ValueError(f"{pattern!s}: no data rows.")
    return _finish(dataset, batch_size, count)


def write_shards(
    prefix,
    x,
    y=None,
    sample_weight=None,
    *,
    rows_per_shard: int = 1_000_000,
    dtype="float32",
    overwrite: bool = False,
) -> str:
    """Writes arrays as binary shards for `shard_dataset`; returns the manifest's path.

    The shards are `{prefix}-g<G>-00000-of-0000N.bin`, each `rows_per_shard` rows (the last
    fewer), every row its x values, then y, then the weight, as little-endian floats of `dtype`.
    The manifest `{prefix}.manifest.json` lists them with their rows. Nothing is written if any
    argument fails its check, and existing files are only replaced with `overwrite=True`.

    Each write is a new generation `G` (one more than any of the prefix's shards on disk), so
    it never writes over a file that a manifest lists: its shards are written (each through
    `keras_mle.checkpoint.atomic`), then the manifest, atomically: the one step that moves a
    reader from the old rows to the new, never to a mixture. Only then are the old
    generation's shards removed. A write that fails removes the shards it wrote and leaves the
    old manifest and shards as they were.

    Args:
        prefix: Path prefix of the files (its folder must exist).
        x: Features, shape `(N,)` or `(N, k)`.
        y: Targets, shape `(N,)`. Defaults to `None`.
        sample_weight: Weights, shape `(N,)`, >= 0. Defaults to `None`.
        rows_per_shard: Rows per file. Defaults to `1_000_000`.
        dtype: `"float32"` (the default) or `"float64"`.
        overwrite: Replace existing shards of the same prefix. Defaults to `False`.
    """
    validation.check_positive_int("rows_per_shard", rows_per_shard)
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}.")
    x, y = validation.check_xy(x, y)
    sample_weight = validation.check_sample_weight(sample_weight, len(x))
    prefix = os.fspath(prefix)
    folder = os.path.dirname(os.path.abspath(prefix))
    if not os.path.isdir(folder):
        raise ValueError(f"prefix: folder {folder!r} does not exist.")
    manifest = prefix + MANIFEST_SUFFIX
    existing = _shards_on_disk(prefix)
    if not overwrite and (os.path.exists(manifest) or existing):
        raise ValueError(f"prefix: shards of {prefix!r} exist; pass overwrite=True to replace.")
    columns = [x.reshape(len(x), -1)]
    columns += [a[:, None] for a in (y, sample_weight) if a is not None]
    table = np.concatenate(columns, axis=1).astype(np.dtype(dtype).newbyteorder("<"))
    generation = 1 + max(existing.values(), default=0)
    count = math.ceil(len(table) / rows_per_shard)
    written, shards = [], []
    try:
        for i in range(count):
            path = f"{prefix}-g{generation}-{i:05d}-of-{count:05d}.bin"
            part = table[i * rows_per_shard : (i + 1) * rows_per_shard]
            atomic.write_file(path, part.tofile)
            written.append(path)
            shards.append({"file": os.path.basename(path), "rows": len(part)})
        description = {
            "format": "keras_mle shards 1",
            "generation": generation,
            "dtype": np.dtype(dtype).name,
            "features": columns[0].shape[1],
            "y": y is not None,
            "sample_weight": sample_weight is not None,
            "shards": shards,
        }
        atomic.write_json(manifest, description, indent=1)
    except BaseException:
        for path in written:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        raise
    for path in _shards_on_disk(prefix, stale=True):
        if path not in written:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    return manifest


def _shards_on_disk(prefix, *, stale=False) -> dict[str, int]:
    """`{path: generation}` of the shards of `prefix` on disk (0 for the unnumbered names).

    Only the names `write_shards` gives (`{prefix}-g<G>-<i>-of-<N>.bin`, and
    `{prefix}-<i>-of-<N>.bin` of earlier releases), so another prefix's shards (`{prefix}-x-...`)
    are never taken for these. With `stale=True`, also the `.tmp` files earlier releases left
    when interrupted.
    """
    base = re.escape(os.path.basename(prefix))
    tail = r"(?:\.tmp)?" if stale else ""
    name = re.compile(rf"{base}-(?:g(\d+)-)?\d{{5}}-of-\d{{5}}\.bin{tail}")
    found = {}
    for path in glob.glob(glob.escape(prefix) + "-*.bin*"):
        match = name.fullmatch(os.path.basename(path))
        if match:
            found[path] = int(match.group(1) or 0)
    if stale and os.path.exists(prefix + MANIFEST_SUFFIX + ".tmp"):
        found[prefix + MANIFEST_SUFFIX + ".tmp"] = 0
    return found


def shard_dataset(manifest, *, batch_size: int, block_rows: int | None = None):
    """Batches of the shards `write_shards` wrote, read as fixed-length blocks of rows.

    Args:
        manifest: The path `write_shards` returned (`{prefix}.manifest.json`).
        batch_size: Rows per batch (batches run across shard boundaries).
        block_rows: Rows per read. Defaults to `None` (`batch_size`).

    Returns:
        A `tf.data.Dataset` of `(x, y[, sample_weight])` batches (`x` of shape `(B, k)`), or of
        `x` alone when no `y` was written, of known cardinality.
    """
    validation.check_positive_int("batch_size", batch_size)
    block_rows = validation.check_optional_positive_int("block_rows", block_rows) or batch_size
    manifest = os.fspath(manifest)
    try:
        with open(manifest) as file:
            description = json.load(file)
        shards = description["shards"]
        dtype = tf.as_dtype(description["dtype"])
        width = description["features"] + description["y"] + description["sample_weight"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"manifest: {manifest!r} is not a shard manifest ({error}).") from None
    folder = os.path.dirname(os.path.abspath(manifest))
    row_bytes = width * dtype.size
    reads = []  # (path, header rows, rows per record): the full blocks, then each file's tail
    for shard in shards:
        path = os.path.join(folder, shard["file"])
        expected = shard["rows"] * row_bytes
        if not os.path.isfile(path) or os.path.getsize(path) != expected:
            raise ValueError(
                f"manifest: shard {path!r} is missing or not {expected} bytes long; "
                "write the shards again."
            )
        full, tail = divmod(shard["rows"], block_rows)
        if full:
            reads.append((path, 0, block_rows, tail * row_bytes))
        if tail:
            reads.append((path, full * block_rows, tail, 0))
    if not reads:
        raise ValueError(f"manifest: {manifest!r} lists no rows.")
    paths, skips, sizes, footers = (list(v) for v in zip(*reads, strict=True))

    def records(path, skip, size, footer):
        return tf.data.FixedLengthRecordDataset(
            path, record_bytes=size * row_bytes, header_bytes=skip * row_bytes,
            footer_bytes=footer, buffer_size=1 << 20,
        )  # fmt: skip

    blocks = tf.data.Dataset.from_tensor_slices(
        (paths, tf.constant(skips, tf.int64), tf.constant(sizes, tf.int64), footers)
    ).flat_map(lambda p, s, n, f: records(p, s, n, tf.cast(f, tf.int64)))

    def decode(record):
        return tf.reshape(tf.io.decode_raw(record, dtype, little_endian=True), [-1, width])

    table = blocks.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if block_rows != batch_size or any(size != batch_size for size in sizes[:-1]):
        table = table.rebatch(batch_size)
    n_x, has_y, has_w = description["features"], description["y"], description["sample_weight"]

    def split(block):
        parts = [block[:, :n_x]]
        if has_y:
            parts.append(block[:, n_x])
        if has_w:
            parts.append(block[:, n_x + has_y])
        return tuple(parts) if len(parts) > 1 else parts[0]

    dataset = table.map(split, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish(dataset, batch_size, sum(shard["rows"] for shard in shards))
