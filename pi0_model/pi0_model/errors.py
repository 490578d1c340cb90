"""Exceptions raised by pi0_model.

Callers (the ROS node in particular) catch these to tell a bad observation,
which should be reported and skipped, from a broken deployment, which should
stop the node.
"""

from pi0_client.errors import InputError


class Pi0Error(Exception):
    """Base class of every error this package raises on purpose."""


class Pi0InputError(Pi0Error, InputError):
    """An observation, prompt or argument handed to the policy is unusable (an `InputError`, so a `ValueError`)."""


class ConfigError(Pi0Error, ValueError):
    """A configuration value is out of range or inconsistent."""


class CheckpointError(Pi0Error):
    """A checkpoint directory is missing, malformed, unsafe or does not fit the model."""
