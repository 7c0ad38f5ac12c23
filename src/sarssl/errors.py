"""Errors a user can act on."""


class SarsslError(Exception):
    """Bad input or configuration: the message names the file or key and the problem.

    The CLI prints it without a traceback and exits with status 2.
    """


class InputError(SarsslError):
    """A product, raster or table that cannot be used as given."""


class Terminated(BaseException):
    """SIGTERM reached a ``sarssl`` command (Snakemake cancelling a job, a cluster's time
    limit): raised in the main thread so that every ``with`` block unwinds and removes its
    temporary files; the CLI then exits with 128 + 15. A ``BaseException``, like
    ``KeyboardInterrupt``, so that no ``except Exception`` swallows it."""
