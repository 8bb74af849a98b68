"""The fitting half's entry: `run(args, inputs)` answers the command the front end checked.

`keras_mle_cli.main` imports this module by name once the arguments and the data are valid
(importing it imports TensorFlow), and calls `run`. Nothing here imports the front end's
`main`: the errors, the model table and the records are the front end's lower modules.
"""

from __future__ import annotations

import absl.logging
import tensorflow as tf

from keras_mle import demo
from keras_mle.cli.fit import run_fit
from keras_mle.cli.show import run_show

__all__ = ["COMMANDS", "run", "run_demo"]


def run(args, inputs) -> int:
    """Runs `args.command` on the `inputs` its check returned; returns the exit code.

    Raises:
        keras_mle_cli.errors.UsageError: Bad input found once the data are read.
        keras_mle_cli.errors.FitError: No trustworthy answer.
    """
    # TensorFlow's Python log lines; the C++ ones are the front end's to silence.
    absl.logging.set_verbosity(absl.logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    return COMMANDS[args.command](args, inputs)


def run_demo(args, inputs) -> int:
    """`keras-mle demo`: the articles' two experiments, written under `--out`."""
    demo.run(args.out, quick=args.quick)
    return 0


#: The function answering each command, by name.
COMMANDS = {"demo": run_demo, "fit": run_fit, "show": run_show}
