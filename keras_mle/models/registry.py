"""A model's registry of named parameters: declaration, names, values and `fixed=`.

`ParameterRegistry` gives a `MaximumLikelihoodModel` its parameters: `add_parameter`, the
natural values (`params`, `params_tensors`, `user_params_tensors`), `set_params`, the labels of
their components (`param_names`, `component_names`, one scheme from `keras_mle.parameters`),
the feature names and the fixed components.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_mle import data as data_lib
from keras_mle import parameters as parameters_lib
from keras_mle.parameters import Parameter

__all__ = ["ParameterRegistry", "checked_feature_names", "checked_fixed"]


# ---------------------------------------------------------------- parameters
class ParameterRegistry:
    """The named parameters of `MaximumLikelihoodModel` (see the module docstring)."""

    def add_parameter(
        self,
        name: str,
        shape=(),
        initializer="zeros",
        *,
        positive: bool = False,
        per_feature: bool = False,
    ):
        """Creates a trainable parameter, reported under `name` in `params` and the logs.

        Args:
            name: Parameter name (a key of `model.params`).
            shape: Shape of the parameter. Defaults to `()` (a scalar).
            initializer: Keras initializer, or a number used as the initial *natural* value.
                Defaults to `"zeros"`.
            positive: Store `log(value)` so that the value stays > 0. A numeric initializer must
                then be > 0. Defaults to `False`.
            per_feature: The parameter has one component per feature (a vector of slopes): its
                components are labelled after the features, `name[income]`, when the model
                knows their names (as for a parameter of role `"slope"`). Defaults to `False`.

        Returns:
            The underlying `keras.Variable` (holding `log(value)` when `positive`). When the
            model's `fixed` names this parameter, its fixed components are read from a second,
            non-trainable variable (see `Parameter`); wholly fixed, the variable is not
            trainable.

        Raises:
            ValueError: naming `fixed` if its entry for `name` has the wrong number of
                components, or is <= 0 for a `positive` parameter.
        """
        if name in self._parameters:
            raise ValueError(f"{type(self).__name__} already has a parameter {name!r}.")
        if isinstance(initializer, (int, float, np.number)) and not isinstance(initializer, bool):
            if positive:
                value = math.log(data_lib.check_positive_scalar(name, initializer))
            else:
                value = data_lib.check_finite_scalar(name, initializer)
            # A NumPy float64: Keras casts a Python float through float32 on its way to float64.
            initializer = keras.initializers.Constant(np.float64(value))
        initializer = keras.initializers.get(initializer)
        mask = values = None
        if name in self._fixed:
            mask, values = _fixed_arrays(name, self._fixed[name], shape, positive)
        stored_name = f"log_{name}" if positive else name
        variable = self.add_weight(
            name=stored_name,
            shape=shape,
            initializer=initializer,
            trainable=mask is None or not bool(np.all(mask)),
        )
        parameter = Parameter(
            name, variable, initializer, positive, mask, values, per_feature=bool(per_feature)
        )
        if mask is not None:
            parameter.fixed_variable = self.add_weight(
                name=f"fixed_{stored_name}", shape=shape, initializer="zeros", trainable=False
            )
            self._sync_fixed(parameter)
        self._parameters[name] = parameter
        return variable

    def _sync_fixed(self, parameter) -> None:
        """Writes a parameter's fixed values, mapped to the working space of `adapt`."""
        working = parameter.fixed_values
        if self._adaptation is not None:
            role = (self.parameter_roles or {}).get(parameter.name)
            if role is None:
                raise ValueError(f"fixed: {parameter.name!r} has no role in parameter_roles.")
            working = self._adaptation.fixed_to_working(role, working, parameter.fixed_mask)
        parameter.set_fixed_working(working)

    @property
    def fixed(self) -> dict:
        """The `fixed` argument, normalised: `{name: value or [value or None, ...]}`."""
        return {name: (list(v) if isinstance(v, list) else v) for name, v in self._fixed.items()}

    @property
    def feature_names(self) -> list | None:
        """Names of the features (a DataFrame's columns, or `feature_names=`), or `None`."""
        return None if self._feature_names is None else list(self._feature_names)

    def parameter(self, name: str) -> Parameter:
        """The `Parameter` object of parameter `name` (its variable, link and fixed mask)."""
        if name not in self._parameters:
            raise KeyError(
                f"{type(self).__name__} has no parameter {name!r}: {list(self._parameters)}."
            )
        return self._parameters[name]

    def component_names(self, name: str) -> list:
        """Names of the flattened components of parameter `name`, as in `param_names`.

        A parameter with one component per feature (declared `per_feature=True`, or of role
        `"slope"`) is labelled by the features, `m[income]`, when the model has
        `feature_names`; otherwise a one-component parameter is `name` and the components of a
        vector are `name_0`, `name_1`, ... (`keras_mle.parameters.component_labels`).
        """
        parameter = self._parameters[name]
        size = int(np.prod(parameter.variable.shape))
        by_feature = parameter.per_feature or (self.parameter_roles or {}).get(name) == "slope"
        features = self._feature_names if by_feature else None
        return parameters_lib.component_labels(name, size, features)

    @property
    def param_names(self) -> list:
        """Names of every parameter component, flattened in `parameter_names` order.

        E.g. `["m[income]", "m[age]", "b"]` with feature names, `["m_0", "m_1", "b"]` without.
        """
        return [label for name in self._parameters for label in self.component_names(name)]

    @property
    def fixed_mask(self) -> np.ndarray:
        """Boolean array over `param_names`: True for a fixed component."""
        masks = [
            np.zeros(int(np.prod(p.variable.shape)), bool)
            if p.fixed_mask is None
            else np.reshape(p.fixed_mask, -1)
            for p in self._parameters.values()
        ]
        return np.concatenate(masks) if masks else np.zeros(0, bool)

    def _check_fixed_names(self) -> None:
        unknown = sorted(set(self._fixed) - set(self._parameters))
        if unknown:
            raise ValueError(
                f"fixed: unknown parameter(s) {unknown}; {type(self).__name__} has "
                f"{self.parameter_names}."
            )

    @property
    def parameter_names(self) -> list:
        """Names of the parameters, in the order they were added (empty until built)."""
        return list(self._parameters)

    def params_tensors(self) -> dict:
        """Natural parameter values as tensors (differentiable w.r.t. the variables).

        In the working space of `adapt` when the model is adapted (see `user_params_tensors`).
        """
        if self._fixed and self.built:
            self._check_fixed_names()
        return {name: parameter.value() for name, parameter in self._parameters.items()}

    def user_params_tensors(self, dtype=None) -> dict:
        """Natural parameter values in the user's units, as tensors (of `dtype` if given).

        Without `adapt` these are `params_tensors()`. After it, the variables hold working-space
        values and this maps them back, in float64 (see `keras_mle.models.adaptation`).
        """
        params = self.params_tensors()
        if self._adaptation is not None:
            params = self._adaptation.to_user(params, self.parameter_roles)
            # Exactly the fixed values, not their round trip through the working space.
            params = {
                name: self._parameters[name].with_fixed(value, working=False)
                for name, value in params.items()
            }
        if dtype is not None:
            params = {name: tf.cast(value, dtype) for name, value in params.items()}
        return params

    @property
    def params(self) -> dict:
        """Natural parameter values as NumPy arrays, e.g. `{"mu": array(2.02), "sigma": ...}`.

        In the user's units; float64 after `adapt`, else the model's dtype.
        """
        return {name: np.asarray(value) for name, value in self.user_params_tensors().items()}

    def set_params(self, params: dict) -> None:
        """Sets parameters from natural values in the user's units (any subset of `params`).

        A fixed component must be given its fixed value (up to rounding): it cannot be set.

        Raises:
            TypeError: naming `params` if it is not a dict, or a value is not numeric.
            ValueError: naming `params` if the model is not built yet, a name is unknown, a
                value has another size than its parameter, is NaN or Inf, or is <= 0 for a
                positive parameter (a standard deviation); nothing is changed then.
        """
        if not isinstance(params, dict):
            raise TypeError(
                f"params must be a dict {{parameter name: value}}, got {type(params).__name__} "
                f"{params!r}."
            )
        if not self._parameters:
            raise ValueError(
                f"params: {type(self).__name__} is not built yet, so it has no parameters to "
                "set: fit it, call model.build(input_shape), or call it on a batch "
                "(model(x[:2])) first."
            )
        unknown = sorted(set(params) - set(self._parameters), key=str)
        if unknown:
            raise ValueError(
                f"params: unknown parameter(s) {unknown}; have {self.parameter_names}."
            )
        params = {name: self._checked_param_value(name, value) for name, value in params.items()}
        for name, value in params.items():
            self._check_fixed_value(name, value)
        for name, value in self._working_values(params).items():
            if name in params:
                self._parameters[name].assign(value)
                if self._parameters[name].is_fixed:
                    self._sync_fixed(self._parameters[name])

    def _checked_param_value(self, name, value) -> np.ndarray:
        """A `set_params` value as a float64 array of the parameter's shape, or raises."""
        parameter = self._parameters[name]
        shape = tuple(parameter.variable.shape)
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            array = np.asarray(None)
        if array.dtype.kind not in "iuf":
            raise TypeError(
                f"params[{name!r}] must be a number or an array of numbers, got {value!r}."
            )
        if array.size != math.prod(shape):
            raise ValueError(
                f"params[{name!r}] has shape {array.shape}, but {name!r} has shape {shape}."
            )
        array = array.astype(np.float64).reshape(shape)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"params[{name!r}] must be finite, got {value!r}.")
        if parameter.positive and np.any(array <= 0):
            raise ValueError(
                f"params[{name!r}] must be > 0 ({name!r} is positive, stored as its log), "
                f"got {value!r}."
            )
        return array

    def _check_fixed_value(self, name, value) -> None:
        parameter = self._parameters[name]
        if not parameter.is_fixed:
            return
        mask, exact = parameter.fixed_mask, parameter.fixed_values
        try:
            given = np.broadcast_to(np.asarray(value, np.float64), mask.shape)
        except ValueError:
            return  # the shape error is raised by _working_values
        rounded = given.astype(parameter.variable.dtype) == exact.astype(parameter.variable.dtype)
        close = np.isclose(given, exact, rtol=1e-12, atol=1e-12) | rounded
        wrong = np.reshape(mask & ~close, -1)
        if np.any(wrong):
            labels = [n for n, bad in zip(self.component_names(name), wrong, strict=True) if bad]
            raise ValueError(
                f"params: {labels} are fixed (fixed={self.fixed}); give their fixed values "
                f"{np.reshape(exact, -1)[wrong].tolist()}, or build a model without fixed."
            )

    def parameter_logs(self) -> dict:
        """Parameters as scalar log entries, under the names of `param_names`.

        `name` for a scalar, `name_i` for vector components, or `m[income]` for the slopes of
        named features (`feature_names`).
        """
        logs = {}
        for name, value in self.user_params_tensors(self.likelihood_dtype).items():
            flat = tf.reshape(value, [-1])
            names = self.component_names(name)
            logs.update({label: flat[i] for i, label in enumerate(names)})
        return logs

    def check_feature_names(self, x):
        """The names of a DataFrame's columns, checked against `feature_names`.

        Returns:
            The column names as a tuple when `x` is a pandas DataFrame whose columns are all
            strings (they become `feature_names` at the first `adapt`/`fit`/`check_data` of a
            model without names), else `None`.

        Raises:
            ValueError: naming `x` if `x` is a DataFrame whose columns differ, in names or
                order, from the model's `feature_names` (the values would be read in the wrong
                order), or repeat a name.
        """
        if not (hasattr(x, "columns") and hasattr(x, "iloc")):
            return None
        columns = tuple(x.columns)
        names = self._feature_names
        if names is not None and columns != names:
            raise ValueError(
                f"{self.x_name}: the DataFrame's columns {list(columns)} differ from the "
                f"model's feature_names {list(names)} (names or order); select them in that "
                f"order, e.g. {self.x_name}[model.feature_names]."
            )
        if not columns or not all(isinstance(c, str) for c in columns):
            return None
        if len(set(columns)) != len(columns):
            repeated = sorted({c for c in columns if columns.count(c) > 1})
            raise ValueError(f"{self.x_name}: the DataFrame repeats column(s) {repeated}.")
        return columns

    def _check_feature_count(self, shape) -> None:
        names = self._feature_names
        if isinstance(shape, dict):  # named inputs: their names are the dict's keys
            return
        features = 1 if len(shape) == 1 else shape[-1]
        if names is not None and features is not None and features != len(names):
            raise ValueError(
                f"feature_names has {len(names)} name(s) {list(names)}, but {self.x_name} has "
                f"{features} feature(s)."
            )


def checked_feature_names(names):
    """`feature_names` as a tuple of unique strings, or `None`; a `ValueError` if bad."""
    if names is None:
        return None
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise ValueError(f"feature_names must be a list of strings, got {names!r}.")
    names = tuple(names)
    bad = [name for name in names if not isinstance(name, str) or not name]
    if not names or bad:
        raise ValueError(
            f"feature_names must be a non-empty list of non-empty strings, got {list(names)}."
        )
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"feature_names must be unique; {repeated} repeat.")
    return names


def checked_fixed(fixed, roles):
    """`fixed` as `{name: float or [float or None, ...]}`; a `ValueError` naming it if bad."""
    if fixed is None:
        return {}
    if not isinstance(fixed, dict):
        raise ValueError(f"fixed must be a dict {{parameter name: value}}, got {fixed!r}.")
    result = {}
    for name, value in fixed.items():
        if roles is not None and name not in roles:
            raise ValueError(
                f"fixed: unknown parameter {name!r}; the parameters are {list(roles)}."
            )
        if isinstance(value, (list, tuple, np.ndarray)):
            items = [None if v is None else _fixed_number(name, v) for v in np.ravel(value)]
            if not items or all(v is None for v in items):
                raise ValueError(f"fixed[{name!r}] fixes no component: leave {name!r} out.")
            value = items
        else:
            value = _fixed_number(name, value)
        numbers = value if isinstance(value, list) else [value]
        if (roles or {}).get(name) == "scale" and any(v is not None and v <= 0 for v in numbers):
            raise ValueError(f"fixed[{name!r}] must be > 0 (a scale), got {value!r}.")
        result[name] = value
    return result


def _fixed_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(
            f"fixed[{name!r}] must be a number or a list of numbers and None (a free "
            f"component), got {value!r}."
        )
    if not math.isfinite(float(value)):
        raise ValueError(f"fixed[{name!r}] must be finite, got {value!r}.")
    return float(value)


def _fixed_arrays(name, value, shape, positive):
    """`(mask, values)` of a fixed parameter: which components are fixed, and at what."""
    shape = tuple(shape)
    size = int(np.prod(shape))
    if isinstance(value, list):
        if len(value) != size:
            raise ValueError(
                f"fixed[{name!r}] has {len(value)} component(s), but {name!r} has {size} "
                f"(shape {shape}); give one value (or None, free) per component."
            )
        items = value
    else:
        items = [value] * size
    mask = np.reshape([v is not None for v in items], shape)
    values = np.reshape([0.0 if v is None else v for v in items], shape).astype(np.float64)
    if positive and np.any(values[mask] <= 0):
        raise ValueError(f"fixed[{name!r}] must be > 0 ({name!r} is positive), got {value!r}.")
    return mask, values
