"""Child processes of the real programs the local mesh runs (Consul, Envoy, RabbitMQ, services), and ports."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# How long a component may take to become ready before a test fails; generous for a loaded 2-core CI.
DEFAULT_READY_TIMEOUT_S = 30.0
# The file that makes a folder a protomesh project: it declares the mesh (see localmesh.topology).
TOPOLOGY_FILE = "docker-compose.yml"
# The checkout this runner comes from: a project made elsewhere (`protomesh new`'s, a test's copy) uses its tools.
RUNNER_CHECKOUT = Path(__file__).resolve().parent.parent


class MissingComponentError(RuntimeError):
    """A real component the mesh or a test needs is not installed; tests fail loudly rather than skip."""


def find_project(start: Path | None = None) -> Path | None:
    """The protomesh project: the nearest folder above start (or cwd) holding docker-compose.yml and protos/."""
    here = (start or Path.cwd()).resolve()
    return next((f for f in (here, *here.parents) if (f / TOPOLOGY_FILE).is_file() and (f / "protos").is_dir()),
                None)


def project_root(start: Path | None = None) -> Path:
    """find_project(), or MissingComponentError when start is not inside one."""
    root = find_project(start)
    if root is None:
        raise MissingComponentError(f"no protomesh project ({TOPOLOGY_FILE} + protos/) above "
                                    f"{(start or Path.cwd()).resolve()}: run this inside a project, or pass --project")
    return root


def find_binary(name: str, *, project: Path | None = None) -> str:
    """A tool from PATH, the project's .tools/bin or the runner's checkout's (a project made elsewhere uses the
    runner's tools), else MissingComponentError naming `make setup`."""
    found = shutil.which(name)
    if found:
        return found
    for root in filter(None, (project or find_project(), RUNNER_CHECKOUT)):
        candidate = root / ".tools" / "bin" / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise MissingComponentError(f"{name} is not installed: run `make setup` (CI runs it through `make test`)")


# Ports handed out start here and end below the kernel's ephemeral range (where the OS takes the source port of
# every outgoing connection): a port the OS picked (bind to 0) lies in that range, and a busy machine's next
# outgoing connection could take it before its component binds it (CI saw the control plane's xDS port go so).
PICKED_PORTS_FROM = 20000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_START = 32768
PICK_ATTEMPTS = 200
_picker = random.SystemRandom()  # not the global generator: a test that seeds it must not make processes agree
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_START


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port free on loopback right now, below the ephemeral range (see PICKED_PORTS_FROM), and never one this
    process handed out before; the OS's pick when that range is too small or full."""
    end = _ephemeral_start()
    for _ in range(PICK_ATTEMPTS if end - PICKED_PORTS_FROM >= 1000 else 0):
        port = _picker.randrange(PICKED_PORTS_FROM, end)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    """Whether a process runs: a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def wait_until(check: Callable[[], bool], *, timeout: float = DEFAULT_READY_TIMEOUT_S, what: str,
               interval: float = 0.05) -> None:
    """Poll check from blocking code until it is true; TimeoutError naming what did not happen.

    Async code uses protomesh.aio.poll_until, the same loop for the event loop.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")


class ManagedProcess:
    """One child process with its log file; start() may be called again after it exited (a restart).

    stop() ends exactly this process (and its own process group), never anything found by name.
    """

    def __init__(self, name: str, argv: Sequence[str], *, log_dir: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        """The exit status once it exited (negative: the signal that ended it), None while running."""
        return None if self.proc is None else self.proc.poll()

    def send_signal(self, sig: signal.Signals) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, *, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the process, wait, then SIGKILL its process group if it is still there."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def ensure_alive(self) -> None:
        if not self.running():
            raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
