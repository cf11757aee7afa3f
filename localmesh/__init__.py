"""The local mesh: runs a project's docker-compose.yml topology as local processes, keeps it running, and
drives it (`protomesh up/down/status/logs/restart/new`); its test kit starts the same real components.

It stands on the runtime (protomesh) and the gateway (gateway_envoy); neither knows it.
"""
