"""The local mesh: the real components protomesh runs on a laptop (and tests start), and their runner."""
