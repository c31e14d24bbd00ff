class ApplicationError(Exception):
    """A business rule refused the operation. The message is safe to show to the user."""

    def __init__(self, message: str, *, code: str = "refused", extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.extra = extra or {}
