"""Re-export of protomesh._mesh.rabbitmq for modules written before it moved (removed at integration)."""

from protomesh._mesh.rabbitmq import RabbitMQNode, find_rabbitmq_script, rabbitmq_node_fixture

__all__ = ["RabbitMQNode", "find_rabbitmq_script", "rabbitmq_node_fixture"]
