"""Re-export of protomesh._process for modules written before it moved (removed at integration)."""

from protomesh._process import *  # noqa: F403
from protomesh._process import (  # noqa: F401
    DEFAULT_READY_TIMEOUT_S,
    ManagedProcess,
    MissingComponentError,
    async_wait_until,
    find_binary,
    free_port,
    port_open,
    project_root,
    wait_until,
)
