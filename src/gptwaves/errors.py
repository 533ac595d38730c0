"""The one exception type the CLI turns into a one-line error message."""


class GptwavesError(Exception):
    """A problem with user input or files, reported as a single line with a non-zero exit."""

    exit_code = 2
