"""protomesh's fault suite: `python -m bench.chaos` breaks a running mesh under load and counts what clients saw."""
