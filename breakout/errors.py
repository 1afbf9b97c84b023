"""Every error Breakout raises on purpose derives from ``BreakoutError``.

BreakoutError
├── ConfigError        a setting or CLI argument is invalid; start-up stops with one line
├── InvalidCDR         an event breaks the CDR contract; it goes to the dead-letter topic
└── QueryError         a read-API parameter is invalid; the client gets 422 and the message
"""


class BreakoutError(Exception):
    """Root of the errors Breakout raises on purpose."""


class ConfigError(BreakoutError):
    """A setting or argument is invalid. ``str()`` is the one line shown to the operator."""


class InvalidCDR(BreakoutError):
    """An event breaks the CDR contract.

    ``reason`` is a stable machine-readable code (``missing_field``, ``too_late``, …)
    counted per reason; ``detail`` says what exactly was wrong, for a person.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class QueryError(BreakoutError):
    """A read-API request cannot be answered as asked. ``str()`` tells the person what to change."""
