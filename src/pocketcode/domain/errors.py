"""Errors the services raise. The web layer maps each to one HTTP status and the CLI to a
message and a non-zero exit, so no layer above the services needs to know why a thing failed."""

from __future__ import annotations


class PocketcodeError(Exception):
    """Base of every error a user can be shown. `code` is stable, `str(self)` is readable."""

    code = "ERROR"
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(PocketcodeError):
    code = "INVALID_INPUT"
    status_code = 400


class NotFound(PocketcodeError):
    code = "NOT_FOUND"
    status_code = 404


class Conflict(PocketcodeError):
    code = "CONFLICT"
    status_code = 409


class InvalidTransition(Conflict):
    code = "INVALID_TRANSITION"


class ConfigurationError(PocketcodeError):
    """The server cannot start or a command cannot run with the configuration it was given."""

    code = "CONFIGURATION_ERROR"
    status_code = 500


class SecretKeyMismatch(ConfigurationError):
    code = "SECRET_KEY_MISMATCH"


class OperationFailed(PocketcodeError):
    """An operation on the outside world (a backup tool, the database server) failed."""

    code = "OPERATION_FAILED"
    status_code = 500
