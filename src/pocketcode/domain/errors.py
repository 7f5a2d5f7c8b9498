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


# -- access ------------------------------------------------------------------------------


class Unauthenticated(PocketcodeError):
    """No valid credentials. The message never says which part was wrong."""

    code = "UNAUTHENTICATED"
    status_code = 401


class TotpRequired(Unauthenticated):
    """The password was right and the account has two-factor auth: send a code too."""

    code = "TOTP_REQUIRED"


class Forbidden(PocketcodeError):
    code = "FORBIDDEN"
    status_code = 403


class TooManyAttempts(PocketcodeError):
    code = "TOO_MANY_ATTEMPTS"
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed attempts; try again in {retry_after} s")
        self.retry_after = retry_after


class AccessDenied(PocketcodeError):
    code = "ACCESS_DENIED"
    status_code = 403


class FileTooLarge(PocketcodeError):
    code = "FILE_TOO_LARGE"
    status_code = 413


class NotATextFile(PocketcodeError):
    code = "NOT_A_TEXT_FILE"
    status_code = 415


class Unprocessable(PocketcodeError):
    """Well-formed but unusable input (an empty upload): the validation handler's status."""

    code = "VALIDATION_ERROR"
    status_code = 422


# -- voice input ---------------------------------------------------------------------------


class TranscriptionNotConfigured(Conflict):
    code = "TRANSCRIPTION_NOT_CONFIGURED"


class TranscriptionFailed(PocketcodeError):
    """The transcription endpoint could not be reached or refused the recording."""

    code = "TRANSCRIPTION_FAILED"
    status_code = 502


# -- PokéCode's error codes for the project routes ---------------------------------------


class GitError(PocketcodeError):
    code = "GIT_ERROR"
    status_code = 400

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class GitStatusError(GitError):
    code = "GIT_STATUS_ERROR"


class GitDiffError(GitError):
    code = "GIT_DIFF_ERROR"


class GitFileError(GitError):
    code = "GIT_FILE_ERROR"


class RepositoryListError(PocketcodeError):
    code = "REPOSITORY_LIST_ERROR"
    status_code = 500
