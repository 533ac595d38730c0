"""The exception types the CLI turns into a one-line error message."""


class GptwavesError(Exception):
    """A problem with user input or files, reported as a single line with a non-zero exit."""

    exit_code = 2


class SettingsError(GptwavesError, ValueError):
    """An invalid setting (out of range, not finite, wrong type), raised before anything is written.

    Also a ``ValueError``, so callers that validated settings with ``except ValueError`` keep working.
    """


class WriteError(GptwavesError):
    """Writing a file failed (disk full, file-size limit, read-only folder, no permission).

    The message names the path and the cause; temporary files are removed and the previous
    version of the file (if any) is left intact.
    """

    exit_code = 1


class CorruptArtefactError(GptwavesError):
    """A file gptwaves wrote earlier is damaged, tampered with or inconsistent."""
