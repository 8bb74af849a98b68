"""A model's parameters: the `Parameter` objects and their layout as one flat vector.

Every view of a fitted model (History and TensorBoard logs, the summary table, `inference`,
the command line) lists the parameters' components in one order and under one scheme of
labels, both defined here:

- the order is the parameters' order of declaration (`add_parameter`), each flattened in C
  order;
- a component is labelled `name` when its parameter has one component, `name[feature]` when
  the parameter has one component per feature and the features are named, and `name_i`
  otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

__all__ = [
    "Parameter",
    "as_value",
    "component_labels",
    "flatten",
    "size",
    "tf_flatten",
    "tf_unflatten",
    "unflatten",
]


class Parameter:
    """One named parameter of a model: its variable, initializer, link and fixed components.

    A positive parameter (a standard deviation, a rate) is stored as its log, so that it stays
    strictly positive under any optimizer step; `value()` is always the natural value.

    Fixed components (the model's `fixed=`) are read from `fixed_variable`, a non-trainable
    variable, through a mask: the optimizer never sees them (their gradient is exactly 0, and
    what any optimizer, weight decay included, does to those entries of `variable` is never
    read). A wholly fixed parameter's `variable` is not trainable at all.

    Attributes:
        fixed_mask: Boolean array of the parameter's shape, True where fixed; `None` if free.
        fixed_values: The fixed natural values in the user's units (float64; 0 where free).
        fixed_working: The same in the working space of `adapt` (float64).
        fixed_variable: Non-trainable variable of the stored (log for positive) working values.
    """

    def __init__(
        self,
        name: str,
        variable,
        initializer,
        positive: bool,
        fixed_mask=None,
        fixed_values=None,
        *,
        per_feature: bool = False,
    ):
        self.name = name
        #: One component per feature: labelled after the features when they are named.
        self.per_feature = per_feature
        self.variable = variable
        self.initializer = initializer
        self.positive = positive
        self.fixed_mask = fixed_mask
        self.fixed_values = fixed_values
        self.fixed_working = fixed_values
        self.fixed_variable = None

    @property
    def is_fixed(self) -> bool:
        """Whether any component is fixed."""
        return self.fixed_mask is not None

    def value(self):
        """The natural value, as a tensor differentiable with respect to the variable."""
        value = tf.convert_to_tensor(self.variable)
        if self.fixed_variable is not None:
            value = tf.where(self.fixed_mask, tf.convert_to_tensor(self.fixed_variable), value)
        return tf.exp(value) if self.positive else value

    def set_fixed_working(self, working) -> None:
        """Sets the fixed components' natural working values (after `adapt`)."""
        mask = self.fixed_mask
        self.fixed_working = np.where(mask, np.asarray(working, np.float64), 0.0)
        stored = np.log(np.where(mask, self.fixed_working, 1.0)) if self.positive else working
        stored = np.where(mask, stored, 0.0).astype(self.variable.dtype)
        self.fixed_variable.assign(stored)
        self.variable.assign(np.where(mask, stored, self.variable.numpy()))

    def with_fixed(self, value, *, working: bool):
        """`value` (a float64 natural tensor) with its fixed components set exactly."""
        if self.fixed_mask is None:
            return value
        exact = self.fixed_working if working else self.fixed_values
        return tf.where(self.fixed_mask, tf.constant(exact, value.dtype), value)

    def assign(self, natural_value) -> None:
        """Sets the variable from a natural value."""
        value = tf.convert_to_tensor(natural_value)
        if self.positive:
            value = tf.math.log(value)
        self.variable.assign(tf.cast(value, self.variable.dtype))

    def reset(self) -> None:
        """Sets the variable back to its initializer's value."""
        variable = self.variable
        variable.assign(self.initializer(shape=variable.shape, dtype=variable.dtype))


def component_labels(name: str, count: int, features: Sequence[str] | None = None) -> list:
    """Labels of the `count` flattened components of parameter `name`.

    Args:
        name: The parameter's name.
        count: Its number of components.
        features: The feature names, when the parameter has one component per feature (a
            slope); ignored when `None` or of another length. Defaults to `None`.
    """
    if features is not None and len(features) == count:
        return [f"{name}[{feature}]" for feature in features]
    return [name] if count == 1 else [f"{name}_{i}" for i in range(count)]


def as_value(value):
    """`value` in float64: a NumPy scalar for one component, else an array."""
    value = np.asarray(value, np.float64)
    return np.float64(value) if value.ndim == 0 else value


def size(shapes: Mapping[str, Sequence[int]]) -> int:
    """The number of components of parameters of these shapes."""
    return sum(math.prod(shape) for shape in shapes.values())


def flatten(tree: Mapping) -> np.ndarray:
    """The values of a dict of parameters, flattened in its order, as one float64 vector."""
    if not tree:
        return np.zeros(0, np.float64)
    return np.concatenate([np.reshape(np.asarray(v, np.float64), -1) for v in tree.values()])


def unflatten(flat, shapes: Mapping[str, Sequence[int]]) -> dict:
    """The inverse of `flatten`: a dict of float64 values of the given shapes."""
    flat = np.asarray(flat)
    if flat.shape[0] != size(shapes):
        raise ValueError(
            f"{flat.shape[0]} values for parameters of {size(shapes)} components {dict(shapes)}."
        )
    result, start = {}, 0
    for name, shape in shapes.items():
        count = math.prod(shape)
        result[name] = as_value(np.reshape(flat[start : start + count], shape))
        start += count
    return result


def tf_flatten(tree: Mapping, names: Sequence[str]) -> tf.Tensor:
    """`flatten` for tensors (differentiable): the parameters `names` of `tree` as one vector."""
    return tf.concat([tf.reshape(tree[name], [-1]) for name in names], 0)


def tf_unflatten(theta, names: Sequence[str], shapes: Sequence[Sequence[int]]) -> dict:
    """The inverse of `tf_flatten`: the vector `theta` as tensors of the given shapes."""
    pieces = tf.split(theta, [math.prod(shape) for shape in shapes])
    return {n: tf.reshape(v, s) for n, v, s in zip(names, pieces, shapes, strict=True)}
