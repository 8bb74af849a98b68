"""keras_mle: maximum-likelihood fitting with Keras models, `fit()` and custom loops."""

from keras_mle import (
    calibration,
    callbacks,
    checkpoint,
    closed_form,
    covariance,
    data,
    loops,
    losses,
    metrics,
)
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
    GaussianNetwork,
    GaussianRegression,
    HeteroscedasticRegression,
    LikelihoodDerivatives,
    LinearRegression,
    MaximumLikelihoodModel,
    StudentTRegression,
)
from keras_mle.refine import RefineReport, refine

__version__ = "0.1.0"

__all__ = [
    "BackupInUseError",
    "DivergenceWarning",
    "GaussianMLE",
    "GaussianNetwork",
    "GaussianRegression",
    "HeteroscedasticRegression",
    "StudentTRegression",
    "InferenceResult",
    "InferenceWarning",
    "LikelihoodDerivatives",
    "LinearRegression",
    "MaximumLikelihoodModel",
    "PrecisionWarning",
    "PredictionResult",
    "RefineReport",
    "WaldTestResult",
    "calibration",
    "callbacks",
    "checkpoint",
    "closed_form",
    "covariance",
    "data",
    "inference",
    "likelihood_ratio_test",
    "loops",
    "metrics",
    "refine",
    "losses",
    "__version__",
]
