"""The orders service: places, reads and cancels orders and publishes their events (acme.orders.v1.OrderService)."""
