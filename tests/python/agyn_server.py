"""Start and stop `agyn serve` for the black-box tests.

The server gets free loopback ports, a fresh data directory and trace-level
logging into a file, and is ready once its public listener accepts
connections and it has written the bootstrap admin token.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 10
LOG_TAIL_CHARS = 8000


def free_ports(count: int) -> list[int]:
    """Reserve `count` distinct free loopback ports and release them.

    Another process could take a port before the server binds it, which makes
    the server fail to start with an address-in-use error.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class AgynServer:
    """One `agyn serve` process on loopback.

    The binary is `$AGYN_BIN`, default `target/debug/agyn` relative to the
    repository root. Its stdout and stderr go to `log_path`.
    """

    def __init__(self, log_path: Path, extra_args: list[str] | None = None) -> None:
        self.binary = REPOSITORY_ROOT / os.environ.get("AGYN_BIN", "target/debug/agyn")
        self.log_path = log_path
        self.extra_args = extra_args or []
        self.data_dir = Path(tempfile.mkdtemp(prefix="agyn-python-"))
        self.port, self.internal_port = free_ports(2)
        self.origin = f"http://127.0.0.1:{self.port}"
        self.admin_token = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it is ready.

        Raises RuntimeError with the end of the server log when the process
        exits or is not ready within 30 seconds.
        """
        if not self.binary.is_file():
            raise RuntimeError(
                f"agyn binary {self.binary} not found: build it with "
                "`cargo build -p agyn` or set AGYN_BIN"
            )
        env = dict(os.environ)
        # An inherited AGYN_DATABASE_URL would point the server at another
        # database than the fresh one in the data directory.
        env.pop("AGYN_DATABASE_URL", None)
        # `agyn serve` takes its filter from --log-level; RUST_LOG is set too
        # for any library that reads it directly.
        env["RUST_LOG"] = "trace"
        args = [
            str(self.binary),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--internal-listen",
            f"127.0.0.1:{self.internal_port}",
            "--log-level",
            "trace",
            *self.extra_args,
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                args,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=REPOSITORY_ROOT,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process is not None
        token_path = self.data_dir / "admin-token"
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"agyn serve exited with code {self.process.returncode} "
                    f"before it was ready. Server log:\n{self.log_tail()}"
                )
            # The server writes admin-token before it opens the public
            # listener, so the file is complete once a connection succeeds.
            if accepts_connections(self.port) and token_path.is_file():
                token = token_path.read_text().strip()
                if token:
                    self.admin_token = token
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"agyn serve was not ready on 127.0.0.1:{self.port} within "
                    f"{START_TIMEOUT_SECONDS} s. Server log:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(log unreadable: {error})"
        return text[-LOG_TAIL_CHARS:]

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s) and delete the data directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)
