"""Self-verifying `.weights.h5` files: metadata and a SHA-256 of the content inside the file.

`seal` stores a JSON metadata attribute and a checksum of every group, dataset and attribute
(but the checksum itself) as HDF5 root attributes, so that the weights file is the single,
self-verifying commit point of a backup. `verify_file` checks one: a file with a checksum must
match it; one without (written by Keras' own `BackupAndRestore`) must only be readable, its
metadata then coming from Keras' JSON file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import h5py
import numpy as np

__all__ = [
    "METADATA_ATTR",
    "CHECKSUM_ATTR",
    "BadBackupFile",
    "seal",
    "verify_file",
    "check_metadata",
    "file_identity",
]

#: HDF5 root attributes of a backup: its metadata (JSON), and the SHA-256 of everything else.
METADATA_ATTR = "keras_mle_training_metadata"
CHECKSUM_ATTR = "keras_mle_checksum"


class BadBackupFile(Exception):
    """A backup file that fails verification; the message is the reason."""


def seal(path, metadata: dict) -> None:
    """Stores `metadata` and the checksum of the whole content in the `.weights.h5` at `path`."""
    with h5py.File(path, "a") as file:
        file.attrs[METADATA_ATTR] = json.dumps(metadata)
        file.attrs[CHECKSUM_ATTR] = _content_digest(file)[0]


def verify_file(path, metadata_path, copy_to=None) -> tuple[dict, tuple]:
    """`(metadata, identity)` of a backup file that verifies, else raises `BadBackupFile`.

    Args:
        path: The `.weights.h5` file.
        metadata_path: Keras' JSON metadata file, read for a file without a checksum.
        copy_to: Where to copy the very bytes verified (read through the same descriptor, so
            a file replaced meanwhile is not mixed in). Defaults to `None`: no copy.

    Returns:
        The metadata and `file_identity` of the file verified.
    """
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise BadBackupFile("missing") from None
    with handle:
        identity = file_identity(os.fstat(handle.fileno()))
        if identity[2] == 0:
            raise BadBackupFile("empty file (0 bytes)")
        try:
            with h5py.File(handle, "r") as file:
                stored = file.attrs.get(CHECKSUM_ATTR)
                text = file.attrs.get(METADATA_ATTR)
                content, datasets = _content_digest(file)
        except Exception as error:  # h5py's errors for a damaged file vary
            raise BadBackupFile(
                f"not a readable HDF5 file ({type(error).__name__}: {error})"
            ) from None
        if datasets == 0:
            raise BadBackupFile("an HDF5 file that holds no weights")
        metadata = _stored_metadata(stored, text, content, metadata_path)
        try:
            check_metadata(metadata, "the stored metadata")
        except ValueError as error:
            raise BadBackupFile(str(error)) from None
        if copy_to is not None:
            handle.seek(0)
            with open(copy_to, "wb") as copy:
                shutil.copyfileobj(handle, copy)
    return metadata, identity


def check_metadata(metadata, name: str) -> None:
    """Raises `ValueError` naming `name` unless `metadata` is a dict of valid epoch/batch."""
    if not isinstance(metadata, dict):
        raise ValueError(f"{name} must be a dict, got {metadata!r}.")
    for key in ("epoch", "batch"):
        value = metadata.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}: {key!r} must be an integer >= 0, got {value!r}.")


def file_identity(status: os.stat_result) -> tuple:
    """`(device, inode, size, mtime_ns)`: a file's identity, changed by any rewrite of it."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _stored_metadata(stored, text, content, metadata_path):
    """The metadata of a file whose checksum attribute is `stored` and content digest `content`."""
    if stored is None and text is None:
        return _keras_metadata(metadata_path)
    if stored is None or text is None:
        missing = "checksum" if stored is None else "metadata"
        raise BadBackupFile(f"a keras_mle backup without its {missing} attribute (damaged)")
    if stored != content:
        raise BadBackupFile(
            "checksum mismatch: its content changed after it was written (a damaged file)"
        )
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        raise BadBackupFile("metadata attribute is not JSON") from None


def _keras_metadata(path):
    """The metadata of a backup without checksum: Keras' JSON file, or epoch 0 without one."""
    if not os.path.exists(path):
        return {"epoch": 0, "batch": 0}
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        raise BadBackupFile(f"its metadata file {path!r} cannot be read ({error})") from None


def _content_digest(file):
    """SHA-256 of every group, dataset and attribute of an HDF5 file but the checksum itself.

    Each object contributes its path, kind and sorted attributes; each dataset its dtype, shape
    and bytes, every field length-prefixed. Returns `("sha256:<hex>", number of datasets)`.
    """
    digest = hashlib.sha256()

    def feed(*parts):
        for part in parts:
            data = part if isinstance(part, bytes) else str(part).encode()
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)

    objects = [("", file)]
    file.visititems(lambda name, item: objects.append((name, item)))
    datasets = 0
    for name, item in sorted(objects, key=lambda entry: entry[0]):
        is_dataset = isinstance(item, h5py.Dataset)
        feed("dataset" if is_dataset else "group", name)
        for key in sorted(item.attrs):
            if not (name == "" and key == CHECKSUM_ATTR):
                feed("attribute", key, *_value_parts(item.attrs[key]))
        if is_dataset:
            datasets += 1
            feed(*_value_parts(item[()]))
    return f"sha256:{digest.hexdigest()}", datasets


def _value_parts(value):
    if isinstance(value, h5py.Empty):
        return ("empty", value.dtype.str)
    if isinstance(value, (str, bytes)):
        return (type(value).__name__, value)
    array = np.asarray(value)
    if array.dtype.kind == "O":
        return ("object", repr(array.tolist()))
    return (array.dtype.str, repr(array.shape), array.tobytes())
