"""Composition root of the users service: settings, storage and servicer wired for the protomesh runtime."""

from __future__ import annotations

import logging

from acme.users.v1 import users_service_pb2, users_service_pb2_grpc

from app.domain import Users
from app.handlers import UserHandlers
from app.repo import SqliteUserRepository
from app.settings import UsersSettings
from protomesh import Binding, Context, run

log = logging.getLogger(__name__)

SERVICE = "users"


def main() -> None:
    run(SERVICE, UsersSettings, build)


async def build(ctx: Context[UsersSettings]) -> list[Binding]:
    """Open the store (closed by the runtime on shutdown) and follow page-size changes from Consul KV."""
    database = ctx.settings.database_file()
    repo = await ctx.enter(SqliteUserRepository.open(database))
    users = Users(repo, limits=ctx.settings.page_limits)
    log.info("users stored in %s", database)

    def follow(current: UsersSettings) -> None:
        if current.page_limits != users.limits:
            users.limits = current.page_limits
            log.info("page sizes now default %d, max %d", current.default_page_size, current.max_page_size)
        if current.database_file() != database:
            log.warning("database_path changed to %s: restart the service to use it", current.database_path)

    ctx.config.subscribe(follow)
    return [binding(users)]


def binding(users: Users) -> Binding:
    """The UserService servicer over these use cases, ready for protomesh.Server (tests use it too)."""
    return Binding(
        users_service_pb2.DESCRIPTOR.services_by_name["UserService"],
        UserHandlers(users),
        users_service_pb2_grpc.add_UserServiceServicer_to_server,
    )
