"""protomesh's benchmark harness: `python -m bench` measures each figure of issue 6 side by side and publishes it."""
