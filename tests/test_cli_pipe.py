"""`keras-mle ... | head`: a reader that goes away ends the command quietly, with no traceback.

The command runs in a fresh process whose standard output is a pipe with no reader left (as
after `head` has read its lines), so that every write fails with `EPIPE`, as it does then.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Runs `keras_mle_cli.main(argv)` with stdout a pipe whose reading end is closed.
_NO_READER = """
import os, sys
import keras_mle_cli
read, write = os.pipe()
os.close(read)
os.dup2(write, 1)
sys.exit(keras_mle_cli.main(sys.argv[1:]))
"""


def test_a_reader_gone_ends_show_quietly(tmp_path):
    # (`--help` needs no test: argparse itself ignores an OSError while it prints.)
    argv = ["show", os.path.join(ROOT, "tests", "data", "linear_regression.keras")]
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _NO_READER, *argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Error" not in done.stderr, done.stderr
    assert done.returncode == 141  # 128 + SIGPIPE, as a shell shows a process that SIGPIPE ended
