"""The dashboard (`/ui`) in a real headless Chromium, on the test session's cluster:
opened on a follower with a token, it shows the leader, the three members and a
task submitted through the API, and the leader it shows changes when the leader is
killed (from the watch stream's `cluster` frames, no polling). Screenshots go to
target/test-output/ui/."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from browser import Browser
from conclave.testing import LocalCluster, wait_until

OUTPUT = Path(__file__).resolve().parents[3] / "target" / "test-output" / "ui"
WAIT = 30.0


def test_the_dashboard_shows_the_cluster_and_follows_a_leader_change(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    leader = cluster.wait_for_leader()
    follower = cluster.followers()[0]
    auth = {"Authorization": f"Bearer {cluster.token}"}
    page = httpx.get(cluster.node(follower).url + "/ui", timeout=5)
    assert page.status_code == 200 and "<title>Conclave</title>" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]

    with Browser(tmp_path / "profile") as browser:
        browser.navigate(f"{cluster.node(follower).url}/ui#token={cluster.token}")
        wait_until(lambda: browser.text("leader") == str(leader), WAIT, "the leader shown")
        wait_until(lambda: browser.text("node") == str(follower), WAIT, "the serving node")
        rows = "document.querySelectorAll('#members tr').length"
        wait_until(lambda: browser.evaluate(rows) == 4, WAIT, "a header and three members")
        assert browser.evaluate("document.querySelector('#members tr.leader td').textContent") == str(leader)

        kind = "ui-" + uuid.uuid4().hex[:8]
        submitted = httpx.post(cluster.node(leader).url + "/v1/tasks", json={"kind": kind},
                               headers=auth, timeout=10)
        assert submitted.status_code == 200, submitted.text
        wait_until(lambda: kind in (browser.text("tasks") or ""), WAIT, "the submitted task")
        wait_until(lambda: kind in (browser.text("feed") or ""), WAIT, "its event in the feed")
        assert browser.text("status") == "live"
        browser.screenshot(OUTPUT / "dashboard.png")

        cluster.kill(leader)
        new = wait_until(
            lambda: (shown := browser.text("leader")) not in (None, "", "?", "none", str(leader)) and shown,
            WAIT, "a new leader shown",
        )
        assert new == str(cluster.wait_for_leader())
        browser.screenshot(OUTPUT / "dashboard-after-failover.png")
