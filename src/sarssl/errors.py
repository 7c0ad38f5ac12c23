"""Errors a user can act on."""


class SarsslError(Exception):
    """Bad input or configuration: the message names the file or key and the problem.

    The CLI prints it without a traceback and exits with status 2.
    """


class InputError(SarsslError):
    """A product, raster or table that cannot be used as given."""
