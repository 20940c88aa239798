"""A moto server on 127.0.0.1, started in its own process group and found again by a state file.

`make local` leaves it running so the deployed environment can be explored; `make local-down`
stops it. The state file (`.dsc/local/server.json`) holds the port and the process id; a
stale file (its process gone) counts as no server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOCAL_REGION_DEFAULT", "MotoServer", "free_port", "start", "stop"]

LOCAL_REGION_DEFAULT = "eu-west-1"
_HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((_HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class MotoServer:
    """A running moto server: where it listens and which process it is."""

    port: int
    pid: int
    log: Path

    @property
    def endpoint(self) -> str:
        """The URL for boto3 (`endpoint_url`)."""
        return f"http://{_HOST}:{self.port}"

    @property
    def cli_endpoint(self) -> str:
        """The URL for the CDK CLI: the same server, named `localhost` (see
        moto_gaps.template_url_host), which resolves to 127.0.0.1 here."""
        return f"http://localhost:{self.port}"

    def environ(self, region: str) -> dict[str, str]:
        """Environment variables pointing AWS clients (boto3, the CLI, pyarrow) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "dsc-local",
            "AWS_SECRET_ACCESS_KEY": "dsc-local",
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
        }


def start(state_dir: Path, *, moto_server: str | None = None, timeout: float = 30.0) -> MotoServer:
    """Start a fresh moto server (stopping the one recorded in `state_dir`, if any); returns it
    once it answers. Raises RuntimeError with the server's log tail if it does not."""
    stop(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = state_dir / "moto.log"
    program = moto_server or str(Path(sys.executable).with_name("moto_server"))
    with log.open("w") as out:
        process = subprocess.Popen(
            [program, "-H", _HOST, "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one, never by name
        )
    server = MotoServer(port=port, pid=process.pid, log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with socket.create_connection((_HOST, port), timeout=0.5):
                (state_dir / "server.json").write_text(
                    json.dumps({"port": port, "pid": process.pid, "log": str(log)})
                )
                return server
        except OSError:
            time.sleep(0.1)
    process.kill()
    tail = "\n".join(log.read_text().splitlines()[-20:])
    raise RuntimeError(f"moto_server did not answer on {server.endpoint}:\n{tail}")


def running(state_dir: Path) -> MotoServer | None:
    """The server recorded in `state_dir` if its process is alive, else None."""
    path = state_dir / "server.json"
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    try:
        os.kill(state["pid"], 0)
    except OSError:
        return None
    return MotoServer(port=state["port"], pid=state["pid"], log=Path(state["log"]))


def stop(state_dir: Path, *, timeout: float = 10.0) -> bool:
    """Stop the server recorded in `state_dir` (its process group, by id); returns whether one ran."""
    server = running(state_dir)
    (state_dir / "server.json").unlink(missing_ok=True)
    if server is None:
        return False
    os.killpg(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Reap it when this process started it; otherwise only probe.
            if os.waitpid(server.pid, os.WNOHANG)[0] == server.pid:
                return True
        except ChildProcessError:
            pass
        try:
            os.kill(server.pid, 0)
        except OSError:
            return True
        time.sleep(0.1)
    os.killpg(server.pid, signal.SIGKILL)
    return True
