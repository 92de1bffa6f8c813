"""Exceptions that reach the user as one clear line (the CLI prints `str(err)` and exits 1)."""


class BladeError(Exception):
    """Base class: a problem the user can fix; the message must say what and where."""


class BladeInputError(BladeError):
    """Bad user input: a file, line or field that cannot be used."""

    def __init__(self, path: object, message: str, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = str(path), line, field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")


class LLMError(BladeError):
    """The black-box LLM endpoint failed after all retries."""


class LLMSetupError(BladeError):
    """The endpoint refuses the configuration itself (the API key, the model, the URL): no request can
    succeed, so the run stops at once instead of charging every item an error. Not an LLMError on purpose:
    per-item error handling must not catch it."""
