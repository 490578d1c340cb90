"""Exceptions raised by pi0_client.

`InputError` is the base of "the data handed in is unusable", shared with the
model: pi0_model's `Pi0InputError` derives from it, so a caller holding only
pi0_client can catch bad-input errors from either side.
"""


class InputError(ValueError):
    """An observation, prompt or argument is unusable (the caller's data, not the deployment)."""
