"""keras_mle models: one base class with the training maths, one file per model."""

from keras_mle.models.base import LikelihoodDerivatives, MaximumLikelihoodModel, Parameter
from keras_mle.models.gaussian_mle import GaussianMLE
from keras_mle.models.gaussian_network import GaussianNetwork
from keras_mle.models.gaussian_regression import GaussianRegression
from keras_mle.models.heteroscedastic_regression import HeteroscedasticRegression
from keras_mle.models.linear_regression import LinearRegression
from keras_mle.models.student_t_regression import StudentTRegression

__all__ = [
    "LikelihoodDerivatives",
    "MaximumLikelihoodModel",
    "Parameter",
    "LinearRegression",
    "GaussianMLE",
    "GaussianRegression",
    "GaussianNetwork",
    "HeteroscedasticRegression",
    "StudentTRegression",
]
