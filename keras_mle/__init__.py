"""keras_mle: maximum-likelihood fitting with Keras models, `fit()` and custom loops."""

from keras_mle import callbacks, checkpoint, closed_form, covariance, data, loops, losses
from keras_mle.checkpoint import BackupInUseError
from keras_mle.data import PrecisionWarning
from keras_mle.errors import DivergenceWarning
from keras_mle.inference import (
    InferenceResult,
    InferenceWarning,
    PredictionResult,
    WaldTestResult,
    inference,
    likelihood_ratio_test,
)
from keras_mle.models import (
    GaussianMLE,
    GaussianRegression,
    LikelihoodDerivatives,
    LinearRegression,
    MaximumLikelihoodModel,
)
from keras_mle.refine import RefineReport, refine

__version__ = "0.1.0"

__all__ = [
    "BackupInUseError",
    "DivergenceWarning",
    "GaussianMLE",
    "GaussianRegression",
    "InferenceResult",
    "InferenceWarning",
    "LikelihoodDerivatives",
    "LinearRegression",
    "MaximumLikelihoodModel",
    "PrecisionWarning",
    "PredictionResult",
    "RefineReport",
    "WaldTestResult",
    "callbacks",
    "checkpoint",
    "closed_form",
    "covariance",
    "data",
    "inference",
    "likelihood_ratio_test",
    "loops",
    "refine",
    "losses",
    "__version__",
]
