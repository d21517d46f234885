"""One platform for the whole suite (starting it is the slow part), pools per test, and a
one-line summary per flow at the end."""

from __future__ import annotations

import json
import time

import pytest

from e2e.client import Api, apply, clusters, pool_manifest
from e2e.platform import Platform, from_env, wait_for

_summary: list[str] = []


@pytest.fixture(scope="session")
def platform():
    started = time.monotonic()
    p = from_env()
    print(f"e2e: platform up in {time.monotonic() - started:.0f} s")
    yield p
    p.stop()


@pytest.fixture
def api(platform: Platform):
    """`api(user, replica=0)`: the gateway's API as that user through that replica."""
    return lambda user, replica=0: Api(platform.gateways[replica], platform.tokens[user])


@pytest.fixture
def pools(platform: Platform):
    """`pools(name, **spec)` applies a pool of the suite (GitOps: kubectl apply) and returns its
    manifest; afterwards each is torn down: its sessions deleted, scaled to nothing, deleted."""
    made: list[str] = []

    def make(name: str, **spec) -> dict:
        manifest = pool_manifest(platform, name, **spec)
        apply(platform, manifest)
        made.append(name)
        return manifest

    yield make
    platform.restore_replicas()
    for name in made:
        for s in platform.get("sessions")["items"]:
            if s["spec"].get("pool") == name:
                platform.kubectl("delete", "session", s["metadata"]["name"], "-n", platform.namespace, "--wait=false")
        platform.kubectl("patch", "clusterpool", name, "-n", platform.namespace, "--type=merge",
                         "-p", json.dumps({"spec": {"minAvailable": 0}}))
        wait_for(f"pool {name} scaled down to nothing", lambda: not clusters(platform, name), 120)
        platform.kubectl("delete", "clusterpool", name, "-n", platform.namespace, "--wait=false")
        wait_for(f"pool {name} gone", lambda: name not in [
            p["metadata"]["name"] for p in platform.get("clusterpools")["items"]], 60)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        doc = (item.function.__doc__ or item.name).strip().splitlines()[0]
        _summary.append(f"e2e: {report.outcome.upper():7} {item.name} ({report.duration:.0f} s): {doc}")


def pytest_terminal_summary(terminalreporter):
    for line in _summary:
        terminalreporter.write_line(line)
