"""The request checks every service makes: ids and texts that are required or bounded, as FieldViolations that
are raised together as one InvalidArgument (google.rpc.BadRequest for the client).

    raise_if([*id_problems(request.user_id, "user_id"),
              *text_problems(request.reason, "reason", max_length=200)])
"""

from __future__ import annotations

from collections.abc import Iterable

from protomesh.errors import FieldViolation, InvalidArgument

# Ids are server-made (32 hex digits or similar); anything much longer is garbage that should not reach
# storage or messages.
DEFAULT_MAX_ID_LENGTH = 64


def text_problems(value: str, path: str, *, max_length: int, required: bool = False) -> list[FieldViolation]:
    """`is required` for an empty required value, `must be at most N characters` for a long one."""
    if not value:
        return [FieldViolation(path, "is required")] if required else []
    if len(value) > max_length:
        return [FieldViolation(path, f"must be at most {max_length} characters")]
    return []


def id_problems(value: str, path: str, *, required: bool = True,
                max_length: int = DEFAULT_MAX_ID_LENGTH) -> list[FieldViolation]:
    """An id field: required unless told otherwise, and at most max_length characters."""
    return text_problems(value, path, max_length=max_length, required=required)


def raise_if(violations: Iterable[FieldViolation]) -> None:
    """Raise InvalidArgument carrying every violation, if there is any."""
    found = list(violations)
    if found:
        raise InvalidArgument(found)


__all__ = ["DEFAULT_MAX_ID_LENGTH", "id_problems", "raise_if", "text_problems"]
