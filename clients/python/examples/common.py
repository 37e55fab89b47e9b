"""Shared by the example agents: the client from the environment and the run's
names. CONCLAVE_ENDPOINTS (comma-separated host:port) and CONCLAVE_TOKEN."""

from __future__ import annotations

import argparse
import sys

import conclave

REVIEWER = "reviewer"


def args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--run", default="demo", help="a name for this run (keys, kinds, the lock)")
    p.add_argument("--tasks", type=int, default=4, help="how many tasks the planner submits")
    return p.parse_args()


def client() -> conclave.Client:
    return conclave.Client.from_env()


def log(agent: str, message: str) -> None:
    print(f"[{agent}] {message}", flush=True)
    sys.stdout.flush()
