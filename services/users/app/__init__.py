"""The users service: people who place orders and receive notifications (acme.users.v1.UserService)."""
