"""What a client is told when a call fails: DomainError messages as they are, anything else as INTERNAL."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from protomesh.errors import DomainError, InvalidArgument

_LOG = logging.getLogger("protomesh.server")

_CODE_NUMBERS: dict[str, int] = {code.name: code.value[0] for code in grpc.StatusCode}
_UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]
_INTERNAL = grpc.StatusCode.INTERNAL.value[0]


def status_for(error: Exception, method: str, cid: str) -> grpc.Status:
    """The status a client gets for an exception; only DomainError messages are ever shown to it."""
    if isinstance(error, DomainError):
        status = status_pb2.Status(code=_CODE_NUMBERS.get(error.code, _UNKNOWN), message=error.message)
        if isinstance(error, InvalidArgument):
            violations = [error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                          for v in error.violations]
            _pack(status, error_details_pb2.BadRequest(field_violations=violations))
    else:
        _LOG.error("%s failed (correlation id: %s)", method, cid, exc_info=error)
        status = status_pb2.Status(code=_INTERNAL, message=f"internal error (correlation id: {cid})")
        _pack(status, error_details_pb2.RequestInfo(request_id=cid))
    result: grpc.Status = rpc_status.to_status(status)
    return result


def plain_status(code: grpc.StatusCode, message: str) -> grpc.Status:
    result: grpc.Status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message))
    return result


def _pack(status: Any, detail: Message) -> None:
    packed = any_pb2.Any()
    packed.Pack(detail)
    status.details.append(packed)
