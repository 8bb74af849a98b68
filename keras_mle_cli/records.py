"""The records the command keeps beside its outputs: what a backup or a saved model is a fit of.

`--checkpoint-dir` holds `CHECKPOINT_RECORD` (written by `keras_mle.cli` once the run holds the
folder's lock), which `--resume` compares with the fit it is asked for; a saved model has
`MODEL.keras.json` beside it (its columns and the model file's hash), from which `show` takes
its default columns. Standard library only: the front end reads them before TensorFlow is
imported, `keras_mle.cli` writes them (through `keras_mle.checkpoint.atomic`).
"""

from __future__ import annotations

import json
import os

__all__ = [
    "CHECKPOINT_RECORD",
    "TRAINING_METADATA",
    "checkpoint_record",
    "checkpoint_record_path",
    "describe",
    "model_record_path",
    "read_json",
]

#: File in `--checkpoint-dir` recording what the backup is a fit of (checked by `--resume`).
CHECKPOINT_RECORD = "keras_mle_cli.json"
#: The file `keras_mle.checkpoint.write_backup` writes beside the weights (its `epoch`).
TRAINING_METADATA = "training_metadata.json"


def checkpoint_record(args, x, y) -> dict:
    """What `--checkpoint-dir` records of a run, for `--resume` to compare."""
    return {"model": args.model, "x": list(x), "y": y, "optimizer": args.optimizer}


def checkpoint_record_path(directory) -> str:
    """The record's file in the backup folder `directory`."""
    return os.path.join(directory, CHECKPOINT_RECORD)


def describe(record) -> str:
    """`linear --x a,b --y y with sgd`: a record as the command line that made it."""
    columns = f"--x {','.join(record.get('x') or [])}"
    if record.get("y"):
        columns += f" --y {record['y']}"
    return f"{record.get('model')} {columns} with {record.get('optimizer')}"


def model_record_path(model_path) -> str:
    """The JSON file beside a saved model that records its command and columns."""
    return f"{model_path}.json"


def read_json(path):
    """The JSON object in `path`, or `None` when the file does not exist or is not one."""
    try:
        with open(path, encoding="utf-8") as file:
            value = json.load(file)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
