"""The FastAPI side of p2: the same two operations on FastAPI + uvicorn (uvloop, httptools) + pydantic.

    .tools/bench-venv/bin/python -m bench.fastapi_server --port 8000

Runs from the bench venv (.tools/bench-venv, requirements-bench.txt), never from the project venv. JSON
as the gateway shapes it (lowerCamelCase, RFC 3339 times); no access log, like the gRPC servers measured.
"""

from __future__ import annotations

import argparse
from datetime import datetime

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from bench._rows import BY_ID, ROWS


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class User(_Model):
    user_id: str
    email: str
    display_name: str
    create_time: datetime
    update_time: datetime


class GetUserResponse(_Model):
    user: User


class ListUsersResponse(_Model):
    users: list[User]
    next_page_token: str


def build_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/v1/users/{user_id}", response_model=GetUserResponse)
    async def get_user(user_id: str) -> GetUserResponse:
        row = BY_ID.get(user_id)
        if row is None:
            raise HTTPException(status_code=404, detail=f"user {user_id} not found")
        return GetUserResponse(user=User.model_validate(row))

    @app.get("/v1/users", response_model=ListUsersResponse)
    async def list_users(page_size: int = 20, page_token: str = "") -> ListUsersResponse:
        rows = ROWS[: page_size or 20]
        return ListUsersResponse(users=[User.model_validate(row) for row in rows], next_page_token="")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
