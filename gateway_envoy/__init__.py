"""Envoy gateway: bootstrap and the control plane that feeds it from Consul."""
