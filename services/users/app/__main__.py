"""Entry point of `python -m app`: runs the users service until SIGTERM/SIGINT."""

from app.main import main

main()
