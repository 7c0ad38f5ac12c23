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


class OutputError(SarsslError, OSError):
    """An output could not be written (disk full, I/O error reported by GDAL or the OS).

    Both an ``OSError`` (``errno`` is ``ENOSPC`` when the file system is full, ``filename``
    the output) and a :class:`SarsslError`, so the CLI prints the message, which names the
    file and the cause, as one line and exits with status 2.
    """

    def __init__(self, message: str, *, filename: object = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.strerror = message
        self.filename = None if filename is None else str(filename)

    def __str__(self) -> str:
        return str(self.args[0])
