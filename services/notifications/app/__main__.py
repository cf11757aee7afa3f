"""Entry point of `python -m app`: runs the notifications service until SIGTERM/SIGINT."""

from app.main import main

main()
