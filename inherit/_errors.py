"""Exceptions shared by the runtime and the backends (a leaf module: it imports nothing)."""


class BackendUnavailable(RuntimeError):
    """The requested backend does not work here; ``reason`` says why."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"backend {backend!r} is unavailable: {reason}")
        self.backend = backend
        self.reason = reason
