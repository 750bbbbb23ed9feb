"""The exception family: every failure the API reports on bad input is a `VaecodecError`."""


class VaecodecError(Exception):
    """Base of every error vaecodec raises for bad input, a bad file or a refused operation."""


class InputError(VaecodecError):
    """An input image or argument cannot be used (missing, unreadable, not an image, bad value)."""


class FormatError(VaecodecError):
    """A `.vae` file is truncated, corrupt, or not a `.vae` file at all."""


class UnsupportedVersionError(FormatError):
    """A `.vae` file was written by a newer format version than this vaecodec reads."""


class ModelMismatchError(VaecodecError):
    """A `.vae` file names a model this vaecodec does not ship, or weights with another hash."""


class LimitError(VaecodecError):
    """An image or a file claims more pixels than the configured limit allows."""


class OutputError(VaecodecError):
    """An output cannot be written: it exists (and overwriting was not asked for) or the write failed."""
