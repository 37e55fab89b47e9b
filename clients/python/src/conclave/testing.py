"""A local Conclave cluster for tests: real ``conclave serve`` processes on free
loopback ports, temp data directories, ``[auth]`` on and an admin token minted
with ``conclave token issue``. Processes are stopped by the PIDs started here,
never by name; waits poll HTTP state until a condition holds.

    cluster = LocalCluster("/path/to/conclave")
    cluster.start()
    cluster.endpoints, cluster.token
    cluster.stop()

``python -m conclave.testing [--binary PATH] [--env-file FILE]`` runs one in the
foreground (until SIGINT/SIGTERM) and prints ``CONCLAVE_ENDPOINTS=`` and
``CONCLAVE_TOKEN=`` lines, for test suites in other processes (a browser test).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

import httpx

T = TypeVar("T")

SECRET_BYTES = 24


def free_ports(count: int) -> List[int]:
    """``count`` distinct free loopback ports (all bound until every one is picked)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(
    condition: Callable[[], Optional[T]], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Polls ``condition`` until it returns a truthy value; raises after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # conditions may fail while nodes start
            last_exc = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last error: {last_exc!r})")
        time.sleep(interval)


@dataclass
class Node:
    id: int
    port: int
    raft_port: int
    config_path: Path
    data_dir: Path
    log_path: Path
    proc: Optional[subprocess.Popen[bytes]] = None
    paused: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        return None if self.proc is None else self.proc.pid


@dataclass
class LocalCluster:
    binary: str
    size: int = 3
    extra_toml: str = ""
    base_dir: Optional[str] = None
    nodes: List[Node] = field(default_factory=list)
    token: str = ""
    _dir: Optional[str] = None
    _owns_dir: bool = False

    # ---------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 30.0) -> "LocalCluster":
        if not os.access(self.binary, os.X_OK):
            raise FileNotFoundError(f"no conclave binary at {self.binary}")
        if self.base_dir is None:
            self._dir = tempfile.mkdtemp(prefix="conclave-py-")
            self._owns_dir = True
        else:
            self._dir = self.base_dir
            os.makedirs(self._dir, exist_ok=True)
        root = Path(self._dir)
        ports = free_ports(2 * self.size)
        api, raft = ports[: self.size], ports[self.size :]
        ids = list(range(1, self.size + 1))
        auth_key = secrets.token_hex(32)
        cluster_secret = secrets.token_hex(SECRET_BYTES)
        cluster_id = "py-" + secrets.token_hex(6)
        member_addrs = "".join(f'{i} = "127.0.0.1:{api[i - 1]}"\n' for i in ids)
        member_raft = "".join(f'{i} = "127.0.0.1:{raft[i - 1]}"\n' for i in ids)
        for i in ids:
            data_dir = root / f"node{i}"
            config = (
                f"node_id = {i}\n"
                f'listen_addr = "127.0.0.1:{api[i - 1]}"\n'
                f'raft_listen_addr = "127.0.0.1:{raft[i - 1]}"\n'
                f'data_dir = "{data_dir}"\n'
                f'cluster_secret = "{cluster_secret}"\n'
                f'cluster_id = "{cluster_id}"\n'
                f"initial_members = [{', '.join(map(str, ids))}]\n"
                f"{self.extra_toml}\n"
                f'[auth]\nkeys = ["{auth_key}"]\n'
                f"[member_addrs]\n{member_addrs}"
                f"[member_raft_addrs]\n{member_raft}"
            )
            config_path = root / f"node{i}.toml"
            config_path.write_text(config)
            self.nodes.append(
                Node(i, api[i - 1], raft[i - 1], config_path, data_dir, root / f"node{i}.log")
            )
        self.token = subprocess.run(
            [self.binary, "token", "issue", "--config", str(self.nodes[0].config_path),
             "--subject", "test-admin", "--scope", "admin", "--ttl", "12h"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        for node in self.nodes:
            self.spawn(node.id)
        self.wait_for_leader(timeout)
        return self

    def spawn(self, node_id: int) -> None:
        node = self.node(node_id)
        assert node.proc is None, f"node {node_id} already runs"
        log = open(node.log_path, "ab")
        env = dict(os.environ, CONCLAVE_LOG="info,openraft=warn")
        node.proc = subprocess.Popen(
            [self.binary, "serve", "--config", str(node.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        node.paused = False

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id`` (by the PID this harness started)."""
        node = self.node(node_id)
        if node.proc is None:
            return
        if node.paused:
            os.kill(node.proc.pid, signal.SIGCONT)
        node.proc.kill()
        node.proc.wait()
        node.proc = None
        node.paused = False

    def restart(self, node_id: int, timeout: float = 30.0) -> None:
        self.kill(node_id)
        self.spawn(node_id)
        self.wait_ready(node_id, timeout)

    def pause(self, node_id: int) -> None:
        node = self.node(node_id)
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGSTOP)
        node.paused = True

    def resume(self, node_id: int) -> None:
        node = self.node(node_id)
        if node.proc is not None and node.paused:
            os.kill(node.proc.pid, signal.SIGCONT)
        node.paused = False

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is None:
                continue
            if node.paused:
                os.kill(node.proc.pid, signal.SIGCONT)
            node.proc.terminate()
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
            node.proc = None
        if self._owns_dir and self._dir and not os.environ.get("CONCLAVE_KEEP_CLUSTER_DIR"):
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---------------------------------------------------------------- queries

    @property
    def endpoints(self) -> List[str]:
        return [n.url for n in self.nodes]

    @property
    def directory(self) -> Optional[str]:
        return self._dir

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    def running(self) -> List[int]:
        return [n.id for n in self.nodes if n.proc is not None and not n.paused]

    def _get(self, node_id: int, path: str, timeout: float = 2.0) -> Any:
        r = httpx.get(self.node(node_id).url + path, timeout=timeout,
                      headers={"Authorization": f"Bearer {self.token}"})
        if r.status_code != 200:
            return None
        return r.json()

    def cluster_view(self, node_id: int) -> Dict[str, Any]:
        view: Dict[str, Any] = self._get(node_id, "/v1/cluster")
        return view

    def leader_id(self) -> Optional[int]:
        """The leader every running node agrees on (None while they disagree)."""
        seen = set()
        for i in self.running():
            view = self._get(i, "/v1/cluster", timeout=1.0)
            if view is None:
                return None
            seen.add(view.get("leader_id"))
        if len(seen) == 1:
            (leader,) = seen
            if leader is not None and leader in self.running():
                return int(leader)
        return None

    def wait_for_leader(self, timeout: float = 30.0) -> int:
        def ready() -> Optional[int]:
            leader = self.leader_id()
            if leader is None:
                return None
            for i in self.running():
                r = httpx.get(self.node(i).url + "/ready", timeout=1.0)
                if r.status_code != 200:
                    return None
            return leader

        return wait_until(ready, timeout, "a leader every node knows")

    def wait_ready(self, node_id: int, timeout: float = 30.0) -> None:
        wait_until(
            lambda: httpx.get(self.node(node_id).url + "/ready", timeout=1.0).status_code == 200,
            timeout, f"node {node_id} ready",
        )

    def followers(self) -> List[int]:
        leader = self.wait_for_leader()
        return [i for i in self.running() if i != leader]

    def heal(self, timeout: float = 30.0) -> int:
        """Resumes paused nodes, restarts stopped ones; waits for a leader."""
        for node in self.nodes:
            if node.paused:
                self.resume(node.id)
            if node.proc is None:
                self.spawn(node.id)
        return self.wait_for_leader(timeout)

    def env(self) -> Dict[str, str]:
        return {"CONCLAVE_ENDPOINTS": ",".join(self.endpoints), "CONCLAVE_TOKEN": self.token}


def default_binary(repo_root: Optional[Path] = None) -> str:
    """``$CONCLAVE_BIN``, else ``target/debug/conclave`` under ``repo_root``."""
    env = os.environ.get("CONCLAVE_BIN")
    if env:
        return env
    root = repo_root or Path.cwd()
    return str(root / "target" / "debug" / "conclave")


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run a local 3-node Conclave cluster")
    parser.add_argument("--binary", default=default_binary())
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--env-file", help="also write the env lines (and JSON) to this file")
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.binary, size=args.size)
    stop = False

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cluster.start()
    try:
        lines = "".join(f"{k}={v}\n" for k, v in cluster.env().items())
        sys.stdout.write(lines)
        sys.stdout.flush()
        if args.env_file:
            Path(args.env_file).write_text(lines)
            Path(args.env_file + ".json").write_text(
                json.dumps({"endpoints": cluster.endpoints, "token": cluster.token})
            )
        while not stop:
            time.sleep(0.2)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
