"""The acme.orders.v1.OrderService servicer: maps messages to use cases and their results back to messages."""

from __future__ import annotations

from typing import Any

import grpc.aio
from acme.orders.v1 import orders_service_pb2 as pb

from app.domain import Orders
from app.mapping import draft_from_proto, order_to_proto

# Domain errors raised below become gRPC statuses (with BadRequest field violations) in the runtime's
# interceptor, so no handler catches anything.
_Context = grpc.aio.ServicerContext[Any, Any]


class OrderHandlers:
    """Servicer of acme.orders.v1.OrderService; register it with add_OrderServiceServicer_to_server."""

    def __init__(self, orders: Orders) -> None:
        self._orders = orders

    async def CreateOrder(self, request: pb.CreateOrderRequest, context: _Context) -> pb.CreateOrderResponse:
        order = await self._orders.create(draft_from_proto(request.order))
        return pb.CreateOrderResponse(order=order_to_proto(order))

    async def GetOrder(self, request: pb.GetOrderRequest, context: _Context) -> pb.GetOrderResponse:
        order = await self._orders.get(request.order_id)
        return pb.GetOrderResponse(order=order_to_proto(order))

    async def ListOrders(self, request: pb.ListOrdersRequest, context: _Context) -> pb.ListOrdersResponse:
        page = await self._orders.list(user_id=request.user_id, page_size=request.page_size,
                                       page_token=request.page_token)
        return pb.ListOrdersResponse(orders=[order_to_proto(o) for o in page.items],
                                     next_page_token=page.next_page_token)

    async def CancelOrder(self, request: pb.CancelOrderRequest, context: _Context) -> pb.CancelOrderResponse:
        order = await self._orders.cancel(request.order_id, request.reason)
        return pb.CancelOrderResponse(order=order_to_proto(order))
