"""The data's user-error type: the CLI prints its message and exits with status 2."""


class DataError(ValueError):
    """The data the config names cannot be used (missing path, corrupt archive, bad image).

    The message names the file or key at fault and what would be valid.
    """
