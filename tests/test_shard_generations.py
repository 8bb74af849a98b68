"""`write_shards(overwrite=True)` writes a new generation: a reader sees the old rows or the new.

The shards of a write are new files (their names carry the generation); the manifest, written
last and atomically, is the one step that switches a reader from the old rows to the new, and
the old generation's files are removed only after it. An overwrite interrupted before the
manifest leaves the old manifest reading exactly the old rows, and no temporary file.
"""

import json
import os

import numpy as np
import pytest

from keras_mle import data

N = 250  # three shards of 100, 100 and 50 rows


def rows_of(manifest):
    """The rows a reader of `manifest` gets, as one `(N, 2)` array: x then y."""
    batches = list(data.shard_dataset(manifest, batch_size=64))
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    return np.column_stack([x[:, 0], y])


def table(offset):
    """Rows `(offset + i, -(offset + i))`: each write's values are told apart exactly."""
    x = np.arange(N, dtype=np.float32) + offset
    return x, -x


def test_an_interrupted_overwrite_leaves_the_old_rows_whole(tmp_path, monkeypatch):
    old_x, old_y = table(0.0)
    manifest = data.write_shards(tmp_path / "s", old_x, old_y, rows_per_shard=100)
    old_files = sorted(os.listdir(tmp_path))
    renames = []
    real_replace = os.replace

    def replace_then_fail(source, target):
        # The second shard's rename fails (a full disk, a kill): the first shard is in place.
        renames.append(target)
        if len(renames) == 2:
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    new_x, new_y = table(1000.0)
    with pytest.raises(OSError, match="No space left"):
        data.write_shards(tmp_path / "s", new_x, new_y, rows_per_shard=100, overwrite=True)
    monkeypatch.undo()
    # Exactly the old rows (values 0..249, none of 1000..1249), and the folder as it was: the
    # new generation's first shard and every temporary file removed.
    np.testing.assert_array_equal(rows_of(manifest), np.column_stack([old_x, old_y]))
    assert sorted(os.listdir(tmp_path)) == old_files


def test_an_overwrite_replaces_the_old_generation(tmp_path):
    old_x, old_y = table(0.0)
    manifest = data.write_shards(tmp_path / "s", old_x, old_y, rows_per_shard=100)
    old_shards = [s["file"] for s in json.loads(open(manifest).read())["shards"]]
    # What an interrupted write of an earlier release left behind.
    (tmp_path / "s-00001-of-00003.bin.tmp").write_bytes(b"half a shard")
    new_x, new_y = table(1000.0)
    assert data.write_shards(tmp_path / "s", new_x, new_y, rows_per_shard=60, overwrite=True) == (
        manifest
    )
    new_shards = [s["file"] for s in json.loads(open(manifest).read())["shards"]]
    assert len(new_shards) == 5 and not set(new_shards) & set(old_shards)
    np.testing.assert_array_equal(rows_of(manifest), np.column_stack([new_x, new_y]))
    # Only the new generation is left (the old shards and the stale temporary file removed
    # once the manifest switched).
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(manifest), *new_shards])


def test_an_overwrite_keeps_the_files_of_another_prefix(tmp_path):
    x, y = table(0.0)
    other = data.write_shards(tmp_path / "s-x", x, y, rows_per_shard=100)
    data.write_shards(tmp_path / "s", x, y, rows_per_shard=100)
    data.write_shards(tmp_path / "s", x + 1, y, rows_per_shard=100, overwrite=True)
    np.testing.assert_array_equal(rows_of(other), np.column_stack([x, y]))
