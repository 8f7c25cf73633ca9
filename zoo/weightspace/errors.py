"""The error of `zoo.weightspace`."""


class WeightSpaceError(ValueError):
    """A request `zoo.weightspace` cannot serve: a bad argument, an empty selection, a checkpoint that does not fit."""
