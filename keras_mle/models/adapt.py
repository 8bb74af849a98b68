"""`adapt`: a float64 centring and whitening of the data, fixed before training.

`AdaptMixin` gives a `MaximumLikelihoodModel` its `adapt` (from arrays, optionally weighted,
or from one pass over a dataset) and the `adaptation` it keeps; the maps between the working
space and the user's units are `keras_mle.models.adaptation.Adaptation`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_mle.models.adaptation import DataMoments

__all__ = ["AdaptMixin"]


class AdaptMixin:
    """`adapt` and `adaptation` of `MaximumLikelihoodModel` (see the module docstring)."""

    # ---------------------------------------------------------------- adapt
    @property
    def adaptation(self):
        """The `keras_mle.models.adaptation.Adaptation` fixed by `adapt`, or `None`."""
        return self._adaptation

    def adapt(self, x, y=None, *, sample_weight=None, reset: bool = True):
        """Fixes a float64 centring and whitening of the data; training then runs in that space.

        As with `keras.layers.Normalization.adapt`, the statistics are computed once, here, and
        saved with the model. The features are centred and whitened (`x - mean`, times the
        inverse of the R factor of its QR decomposition); for a model whose likelihood is a
        location-scale family in `y` (`adapt_targets`, e.g. the Gaussian models) the targets are
        also centred and scaled by their standard deviation (for a model of a sample, the sample
        is). The variables then hold *working-space* parameters, on which the squared-error
        Hessian is `2 I`: plain SGD with learning rate 0.5 solves least squares in one step,
        whatever the units of `x`. `model.params`, `predict`, the reported loss and
        `keras_mle.inference` stay in the user's units (see `keras_mle.models.adaptation`).

        Call it before `fit`; datasets passed to `fit` are transformed inside the model, so any
        input path works. The data are checked and the statistics computed in float64 from what
        is passed: give float64 arrays when the data carry more digits than float32 (values
        near 1e6, say).

        Units are then no obstacle, but a likelihood can still be hard by nature: for a
        Gaussian regression the NLL's curvature in the slopes is `1 / (1 - R^2)` adapted units
        against 2 for `log(sigma)`, so SGD needs `learning_rate < 2 (1 - R^2)` and a nearly
        exact line (R^2 -> 1) is slow for any first-order optimizer. Least squares
        (`LinearRegression`, whose `inference` is the OLS one) has no such coupling.

        Args:
            x: Features (for a model of a sample: the samples); or a batched `tf.data.Dataset`
                of the elements `fit` reads, taken in one float64 pass that holds one batch at
                a time and gives the adaptation of the concatenated batches (to ~1e-14; weights
                in the elements are not used, as here).
            y: Targets, or `None` for a model of a sample (and for a dataset). Defaults to
                `None`.
            sample_weight: The frequency weights `fit` will be given: the centring and
                whitening are then the weighted ones, under which the weighted fit is as well
                conditioned as an unweighted one is (`SGD(0.5)` solves weighted least squares
                in one full-batch step). Defaults to `None` (ones).
            reset: Re-initialise the parameters in the working space, so that initializers and
                initial values are read in adapted units (as for a layer after a
                `Normalization`): e.g. `GaussianMLE(initial_mu=0, initial_sigma=1)` then starts
                at the sample's mean and standard deviation. `False` keeps `model.params`
                unchanged. Defaults to `True`.

        Returns:
            The model.
        """
        if self.parameter_roles is None:
            raise NotImplementedError(
                f"{type(self).__name__} does not support adapt(): set parameter_roles."
            )
        if not getattr(type(self).call, "feeds_mean", False):
            raise NotImplementedError(
                f"{type(self).__name__} overrides call(), which adapt() cannot see into: after "
                "adapt the variables hold working-space values, so a call() that reads them "
                "predicts wrongly. Write the mean prediction as mean(self, params, x) instead "
                "(the parameters in the user's units, as sample_loss gets them) and drop call()."
            )
        if not self.takes_targets and not self.adapt_targets:
            raise NotImplementedError(
                f"{type(self).__name__} does not support adapt(): its likelihood does not allow "
                "rescaling the sample (set adapt_targets for a location-scale family)."
            )
        if isinstance(x, tf.data.Dataset):
            if sample_weight is not None:
                raise ValueError(
                    "sample_weight: adapt(dataset) reads the dataset's elements, and weights "
                    "there are not used; adapt on the arrays to weight the statistics."
                )
            adaptation = self._adapt_dataset(x, y)
        else:
            x, y, weights = self.check_data(x, y, sample_weight, dtype=np.float64)
            self._build_from_shape(x.shape)
            fixed_columns, center = self._adapt_constraints()
            adaptation = self.adaptation_class.from_data(
                x,
                y if self.takes_targets else None,
                scale_targets=self.adapt_targets,
                fixed_columns=fixed_columns,
                center=center,
                weights=weights,
            )
        adaptation.check_roles(self.parameter_roles, self.parameter_names)
        if reset:
            self._adaptation = adaptation
            for parameter in self._parameters.values():
                parameter.reset()
        else:
            working = adaptation.to_working(self.user_params_tensors(), self.parameter_roles)
            self._adaptation = adaptation
            for name, value in working.items():
                self._parameters[name].assign(value)
        for parameter in self._parameters.values():
            if parameter.is_fixed:
                self._sync_fixed(parameter)
        # Compiled steps hold the old statistics as constants.
        self.reset_compiled_functions()
        return self

    def _adapt_dataset(self, dataset, y):
        """The `Adaptation` of `adapt(dataset)`: one float64 pass (`DataMoments`).

        As `adapt(x, y)` on the concatenated batches (which takes no weights), the rows count
        once each: weights in the elements are read but not used. Any fixed adaptation gives
        the same fit; this one is the change of coordinates of the rows themselves.
        """
        if y is not None:
            raise ValueError(
                "y: with a dataset, give the targets inside its elements ((x, y) batches)."
            )
        moments = DataMoments()
        for x, y_batch, _ in self.dataset_batches(dataset):
            if moments.rows == 0:
                self._build_from_shape(x.shape)
            if self.takes_targets:
                moments.update(x, y_batch)
            else:
                moments.update(None, x.reshape(-1))
        fixed_columns, center = self._adapt_constraints()
        return self.adaptation_class.from_moments(
            moments,
            scale_targets=self.adapt_targets,
            fixed_columns=fixed_columns,
            center=center,
        )

    def _adapt_constraints(self):
        """`(fixed_columns, center)` for `Adaptation.from_data`: what fixed components need.

        Fixed slopes are held out of the whitening (their columns are not mixed with the free
        ones), and a fixed intercept leaves the features uncentred, so that every fixed
        component stays a fixed working coordinate (see `keras_mle.models.adaptation`).
        """
        fixed_columns, center = None, True
        for name, role in (self.parameter_roles or {}).items():
            parameter = self._parameters.get(name)
            if parameter is None or not parameter.is_fixed:
                continue
            if role == "slope":
                fixed_columns = np.reshape(parameter.fixed_mask, -1)
            elif role == "intercept" and self.takes_targets:
                center = False
        return fixed_columns, center
