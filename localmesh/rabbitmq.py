"""A RabbitMQ node of its own (name, ports, data, cookie), restartable with its data: tests and `protomesh up`."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from localmesh.process import MissingComponentError, free_port, pid_alive, port_open, wait_until

# A RabbitMQ boot takes ~8 s on an idle 2-core machine and over 12 s when other suites share it.
DEFAULT_START_TIMEOUT_S = 60.0
# A graceful stop flushes queues and message stores to disk (~3 s); after this the node is killed.
DEFAULT_STOP_TIMEOUT_S = 30.0
# Debian's /usr/sbin wrappers re-run the tools as user `rabbitmq` (through su) when called by root, which
# loses our HOME (cookie) and cannot read pytest's 0700 tmp dirs; the real scripts run as the caller.
RABBITMQ_SCRIPT_DIRS = (Path("/usr/lib/rabbitmq/bin"), Path("/usr/lib/rabbitmq/sbin"))
# Where Debian puts the wrappers; looked at last, and only when nothing better exists.
SYSTEM_SBIN = Path("/usr/sbin")
# Idle Erlang schedulers busy-wait by default: on a shared 2-core machine that steals CPU from everything
# else. Distribution listens on loopback only, like every other test component.
ERL_ARGS = "+sbwt none +sbwtdcpu none +sbwtdio none -kernel inet_dist_use_interface {127,0,0,1}"


def find_rabbitmq_script(name: str = "rabbitmq-server") -> str:
    """The RabbitMQ script `name`, preferring the real one over Debian's su wrapper; fails loudly if absent."""
    candidates = [folder / name for folder in RABBITMQ_SCRIPT_DIRS]
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    candidates.append(SYSTEM_SBIN / name)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return str(candidate)
    looked = ", ".join(str(c.parent) for c in candidates)
    raise MissingComponentError(
        f"{name} is not installed (looked in {looked} and PATH): run `make setup`, which installs Debian's "
        "rabbitmq-server (CI runs it through `make test`)"
    )


class RabbitMQNode:
    """One RabbitMQ node of its own, on free loopback ports, with its data under `base_dir`.

        node = RabbitMQNode(tmp_path / "rabbitmq")
        node.start()                      # detached; returns once AMQP accepts connections
        connection = await aio_pika.connect_robust(node.url)
        node.restart()                    # durable queues and persistent messages survive
        node.stop()

    Only the node this object started is ever stopped (by the pid its own pid file names). epmd, which
    the first node on a machine starts, is shared by every Erlang node and is left running.
    """

    def __init__(self, base_dir: Path, *, amqp_port: int | None = None, dist_port: int | None = None,
                 name: str | None = None) -> None:
        self.server = find_rabbitmq_script("rabbitmq-server")
        self.base_dir = base_dir.resolve()
        self.amqp_port = amqp_port or free_port()
        self.dist_port = dist_port or free_port()
        # A fixed name (the local mesh's) finds its data again next time; tests get a fresh one each.
        self.node_name = f"{name or 'protomesh-test-' + secrets.token_hex(4)}@localhost"
        self.start_seconds: list[float] = []
        self._pid: int | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "log" / f"{self.node_name}.log"

    @property
    def _pid_file(self) -> Path:
        return self.base_dir / "node.pid"

    def start(self, *, timeout: float = DEFAULT_START_TIMEOUT_S) -> float:
        """Start the node detached and wait until it serves AMQP; returns (and records) the seconds it took."""
        if self.running():
            raise RuntimeError(f"{self.node_name} is already running (pid {self._our_pid()})")
        self._prepare_dirs()
        self._pid_file.unlink(missing_ok=True)
        began = time.monotonic()
        launched = subprocess.run([self.server, "-detached"], env=self._env(), cwd=self.base_dir,
                                  capture_output=True, check=False, timeout=timeout)
        if launched.returncode != 0:
            raise RuntimeError(f"rabbitmq-server -detached failed: {launched.stdout!r} {launched.stderr!r}")
        try:
            wait_until(self._ready, timeout=timeout, what=f"RabbitMQ node {self.node_name} on :{self.amqp_port}")
        except BaseException:
            self.stop()
            raise
        took = time.monotonic() - began
        self.start_seconds.append(took)
        return took

    def stop(self, *, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop the node gracefully (SIGTERM: RabbitMQ flushes to disk), killing it if it does not exit."""
        pid = self._our_pid()
        self._pid = None
        if pid is None:
            self._pid_file.unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not pid_alive(pid), timeout=timeout, what=f"{self.node_name} exiting", interval=0.1)
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(pid), timeout=10, what=f"{self.node_name} dying", interval=0.1)
        self._pid_file.unlink(missing_ok=True)

    def restart(self) -> float:
        """Stop then start the same node (same name, ports and data); returns the start's seconds."""
        self.stop()
        return self.start()

    def running(self) -> bool:
        return self._our_pid() is not None

    def pid(self) -> int | None:
        """The node's pid while it runs (it is detached: not a child of whoever started it)."""
        return self._our_pid()

    def _our_pid(self) -> int | None:
        """The pid of this node if it runs: ours, or named by our pid file (start() gave up early, or
        another process started it, as `protomesh up --detach` does), checked against the node's environment
        so that a stale pid file never makes us signal someone else's process."""
        # A remembered pid that died means the node was stopped and started again (an outage test does it
        # with another RabbitMQNode of the same node): the pid file names the node running now.
        pid = self._pid if self._pid is not None and pid_alive(self._pid) else _read_pid(self._pid_file)
        if pid is None or not pid_alive(pid):
            return None
        try:
            environment = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except (FileNotFoundError, PermissionError):
            return None
        ours = {f"RABBITMQ_NODENAME={self.node_name}".encode(), f"HOME={self.base_dir}".encode()}
        return pid if ours <= environment else None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def _ready(self) -> bool:
        if self._pid is None:
            self._pid = _read_pid(self._pid_file)
            return False
        if not pid_alive(self._pid):
            raise RuntimeError(f"RabbitMQ node {self.node_name} exited while starting:\n{self.log_tail()}")
        # The AMQP listener is the last boot step that matters to clients: once it accepts, the node serves.
        # (Polling `rabbitmqctl status` instead costs a ~1.5 s Erlang VM boot per poll.)
        return port_open(self.amqp_port)

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        cookie = self.base_dir / ".erlang.cookie"
        if not cookie.exists():
            # Our own cookie (Erlang reads it from HOME): this node is reachable by nobody else's tools.
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
        (self.base_dir / "enabled_plugins").write_text("[].\n")

    def _env(self) -> dict[str, str]:
        base = self.base_dir
        return {
            **os.environ,
            "HOME": str(base),
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(self._pid_file),
            # Not created: a missing config file means built-in defaults, whatever /etc/rabbitmq holds.
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": ERL_ARGS,
            # If this node is the one that starts epmd, keep epmd on loopback too.
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }


def _read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None

