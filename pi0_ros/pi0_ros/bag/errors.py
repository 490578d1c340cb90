"""The one error the bag tools raise for anything wrong with a bag or a request."""


class BagError(Exception):
    """A bag cannot be read, written or played as asked; the message says why and where."""
