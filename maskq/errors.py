"""One exception tree with stable codes, the same in the CLI, in failed jobs and in HTTP bodies.

A code never changes once shipped: clients branch on it. ``http_status`` is the single place
where an error meets HTTP. Which errors are worth a retry is the worker's policy (``JobTask``:
:class:`StorageUnavailableError`), not a property of the error. The process exit codes of the
command-line tools live here too.
"""

from __future__ import annotations

from typing import Any, ClassVar

# exit codes of `maskq` and `maskq up`: done; some input failed; bad usage; the setup is broken
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SETUP = 0, 1, 2, 3


def first_error(errors: list[Any], skip_loc: tuple[str, ...] = ()) -> tuple[str | None, str]:
    """``(field path, message)`` of the first of pydantic's ``ValidationError.errors()``: the one
    error a user is told about. ``skip_loc``: leading location parts that are no field's name."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid value"}
    parts = [str(p) for p in first.get("loc", ())]
    while parts and parts[0] in skip_loc:
        parts = parts[1:]
    return ".".join(parts) or None, str(first.get("msg", "invalid value")).removeprefix("Value error, ")


class MaskqError(Exception):
    """Base of every error maskq reports on purpose."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body

    def __str__(self) -> str:
        return self.message


class InputError(MaskqError):
    """The caller's input is at fault: retrying the same input gives the same answer."""

    http_status = 400


class InvalidImageError(InputError):
    code = "invalid_image"
    http_status = 422


class UnsupportedFormatError(InputError):
    code = "unsupported_format"
    http_status = 415


class ImageTooLargeError(InputError):
    code = "image_too_large"
    http_status = 413


class IncompleteBodyError(InputError):
    """The request body ended, or its client left, before it was whole: a multipart body without its
    closing boundary, or fewer bytes than its ``Content-Length`` (HTTP only)."""

    code = "incomplete_body"
    http_status = 400


class BodyTimeoutError(InputError):
    """The request body did not arrive within ``MASKQ_BODY_TIMEOUT_SECONDS`` (HTTP only)."""

    code = "request_timeout"
    http_status = 408


class InvalidParameterError(InputError):
    code = "invalid_parameter"
    http_status = 422

    def __init__(self, message: str, field: str | None = None, **details: Any) -> None:
        if field is not None:
            details["field"] = field
        super().__init__(message, **details)
        self.field = field


class NotFoundError(MaskqError):
    code = "not_found"
    http_status = 404


class ConflictError(MaskqError):
    code = "conflict"
    http_status = 409


class StorageUnavailableError(MaskqError):
    """S3 or Redis cannot be reached: worth a retry with backoff."""

    code = "storage_unavailable"
    http_status = 503


class JobTimeoutError(MaskqError):
    code = "timeout"
    http_status = 504


class ModelUnavailableError(MaskqError):
    """The model file is missing or cannot be loaded: an operator's problem, not the caller's."""

    code = "model_unavailable"
    http_status = 503


class ConfigurationError(MaskqError):
    code = "configuration"


class InternalError(MaskqError):
    code = "internal"


class UnauthorizedError(MaskqError):
    """No API key, or one the deployment does not know (HTTP only)."""

    code = "unauthorized"
    http_status = 401


class BacklogFullError(MaskqError):
    """The queue's backlog is past its limit: come back after ``retry_after`` seconds (HTTP only)."""

    code = "backlog_full"
    http_status = 429


class UploadBudgetFullError(MaskqError):
    """This API process is receiving as many request body bytes as ``MASKQ_UPLOAD_BUDGET_BYTES``
    allows: come back after ``retry_after`` seconds (HTTP only)."""

    code = "upload_budget_full"
    http_status = 429


ERROR_CODES: dict[str, type[MaskqError]] = {
    cls.code: cls
    for cls in (
        InvalidImageError,
        UnsupportedFormatError,
        ImageTooLargeError,
        IncompleteBodyError,
        BodyTimeoutError,
        InvalidParameterError,
        NotFoundError,
        ConflictError,
        StorageUnavailableError,
        JobTimeoutError,
        ModelUnavailableError,
        ConfigurationError,
        InternalError,
        UnauthorizedError,
        BacklogFullError,
        UploadBudgetFullError,
    )
}
