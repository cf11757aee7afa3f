"""A tiny service the shutdown tests run as a child process through protomesh's run() (no tests here).

    PROTOMESH_CONFIG_DIR=/empty CONSUL_HTTP_ADDR=127.0.0.1:8500 python tests/runtime/test_app_slow_service.py

GetUser takes SLOW_CALL_S for any user id except "in-flight", which answers at once with the number of
slow calls being served (in display_name), so a test can wait until its calls really are in flight, and
"process", which answers how the process runs: its loop's module and whether start-up's heap is frozen.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from acme.users.v1 import users_pb2, users_service_pb2, users_service_pb2_grpc

from protomesh._app import Context, run
from protomesh._server import Binding
from protomesh._settings import ServiceSettings

SERVICE = "slowsvc"
SLOW_CALL_S = 1.0


class SlowUsers(users_service_pb2_grpc.UserServiceServicer):
    def __init__(self) -> None:
        self.in_flight = 0

    async def GetUser(self, request: Any, context: Any) -> Any:
        if request.user_id == "process":
            loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
            frozen = "frozen" if gc.get_freeze_count() else "not frozen"
            return users_service_pb2.GetUserResponse(user=users_pb2.User(display_name=f"{loop} {frozen}"))
        if request.user_id == "in-flight":
            return users_service_pb2.GetUserResponse(user=users_pb2.User(display_name=str(self.in_flight)))
        self.in_flight += 1
        try:
            await asyncio.sleep(SLOW_CALL_S)
        finally:
            self.in_flight -= 1
        return users_service_pb2.GetUserResponse(user=users_pb2.User(user_id=request.user_id))


async def build(ctx: Context[ServiceSettings]) -> list[Binding]:
    return [Binding(users_service_pb2.DESCRIPTOR.services_by_name["UserService"], SlowUsers(),
                    users_service_pb2_grpc.add_UserServiceServicer_to_server)]


if __name__ == "__main__":
    run(SERVICE, ServiceSettings, build)
