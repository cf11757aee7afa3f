"""The notifications service: turns order events into notifications and serves them (acme.notifications.v1)."""
