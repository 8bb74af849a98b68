"""keras_mle: maximum-likelihood fitting with Keras models, `fit()` and custom loops."""

from keras_mle import closed_form, data, loops, losses
from keras_mle.models import (
    GaussianMLE,
    GaussianRegression,
    LinearRegression,
    MaximumLikelihoodModel,
)

__version__ = "0.1.0"

__all__ = [
    "GaussianMLE",
    "GaussianRegression",
    "LinearRegression",
    "MaximumLikelihoodModel",
    "closed_form",
    "data",
    "loops",
    "losses",
    "__version__",
]
