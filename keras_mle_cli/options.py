"""What the command's options take: the models `fit` trains, the optimizers and the defaults.

Standard library only, shared by the argument parser and by `keras_mle.cli`, which builds the
model and the optimizer from the same table.
"""

from __future__ import annotations

__all__ = [
    "MODELS",
    "OPTIMIZERS",
    "DEFAULT_LEARNING_RATE",
    "ADAPTIVE_LEARNING_RATE",
    "DEFAULT_EPOCHS",
    "SEED_MAX",
    "STREAM_BATCH_SIZE",
    "CONVENTIONS",
    "COV_TYPES",
    "learning_rate",
]

#: The models `keras-mle fit` trains, by command-line name: the class and the default optimizer.
#: After `adapt` the squared-error Hessian is 2 I, so SGD(0.5) solves `linear` in one step and
#: `gaussian` in a few; the Gaussian regression's curvature in the slopes is 1 / (1 - R^2), which
#: SGD at a fixed rate cannot follow for every R^2: it gets Nadam (about 130 to 180 full-batch
#: steps for R^2 from 0.5 to 0.99, where Adam(0.1) took 300 to over 3000). The heteroscedastic
#: regression couples the mean with the log-scale and gets Nadam too (about 180 steps on the
#: tests' file); on the Student-t regression's degrees of freedom Nadam(0.02 to 0.1) falls into
#: a cycle for some seeds, where Adam(0.1) converged in about 330 steps for each seed tried.
MODELS = {
    "linear": ("LinearRegression", "sgd"),
    "gaussian": ("GaussianMLE", "sgd"),
    "gaussian-regression": ("GaussianRegression", "nadam"),
    "heteroscedastic-regression": ("HeteroscedasticRegression", "nadam"),
    "student-t-regression": ("StudentTRegression", "adam"),
}
#: Optimizers `--optimizer` accepts (Keras names).
OPTIMIZERS = (
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "ftrl",
    "lion",
    "nadam",
    "rmsprop",
    "sgd",
)
#: Default learning rate of an optimizer: SGD on adapted (whitened) data, or an adaptive one.
DEFAULT_LEARNING_RATE = {"sgd": 0.5}
ADAPTIVE_LEARNING_RATE = 0.1
DEFAULT_EPOCHS = 5000
#: `--convention`: `keras_mle.inference`'s conventions (its default, `"auto"`, is the option left
#: out: OLS for squared-error models, MLE for likelihood models).
CONVENTIONS = ("mle", "ols")
#: `--cov-type`: `keras_mle.covariance.COV_TYPES` (`"cluster"` with `--groups COL`).
COV_TYPES = ("nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster")
SEED_MAX = 2**32 - 1
#: Rows a streamed fit (`--data` a glob) reads at a time when `--batch-size` is not given.
STREAM_BATCH_SIZE = 65536


def learning_rate(optimizer: str) -> float:
    """The default learning rate of `optimizer` (a name from `OPTIMIZERS`)."""
    return DEFAULT_LEARNING_RATE.get(optimizer, ADAPTIVE_LEARNING_RATE)
