"""Entry point of `python -m app`: runs the orders service until SIGTERM/SIGINT."""

from app.main import main

main()
