"""Domain errors: raised by use cases (no grpc import), mapped to gRPC status codes by the runtime.

    from protomesh.errors import FieldViolation, InvalidArgument, NotFound

    if "@" not in email:
        raise InvalidArgument([FieldViolation("user.email", "must be an email address")])
    raise NotFound("user 42 does not exist")

The message is shown to clients, so it must be written for them: never put internal details in it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its path (`user.email`) and what is wrong with it."""

    field: str
    description: str


class DomainError(Exception):
    """Base of the errors a client may see; `code` names the grpc.StatusCode it maps to."""

    code: str = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """The request is malformed; carries one violation per bad field (google.rpc.BadRequest)."""

    code = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one FieldViolation")
        self.violations = tuple(violations)
        super().__init__(message or "; ".join(f"{v.field}: {v.description}" for v in violations))


class NotFound(DomainError):
    """The named resource does not exist."""

    code = "NOT_FOUND"


class AlreadyExists(DomainError):
    """The resource (or a unique value in it) exists already."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The system is not in a state where the request can run (e.g. the order's user is unknown)."""

    code = "FAILED_PRECONDITION"


class Unavailable(DomainError):
    """A dependency is down; the client may retry."""

    code = "UNAVAILABLE"


__all__ = [
    "AlreadyExists",
    "DomainError",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "Unavailable",
]
