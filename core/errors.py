"""The base of every user-facing error: one line that names the file, row or field."""


class PipelineError(RuntimeError):
    """A failure caused by input or environment, reported without a traceback."""
