"""What the tests talk to the platform with: the gateway's HTTP API as one user, a terminal's
WebSocket, and ClusterPools as a GitOps tool applies them (kubectl)."""

from __future__ import annotations

import copy
import json
import re
import time
import urllib.error
import urllib.request

import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from e2e.platform import ROOT, Forbidden, Platform, wait_for


class HttpError(AssertionError):
    def __init__(self, method: str, path: str, status: int, body) -> None:
        super().__init__(f"{method} {path}: {status} {body}")
        self.status, self.body = status, body


class Api:
    """The gateway's /api/v1 as one user (bearer token)."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def at(self, base: str) -> "Api":
        return Api(base, self.token)

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        """(status, decoded JSON body or None)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.base}/api/v1{path}", data=data, method=method, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.token}", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        return status, (json.loads(text) if text else None)

    def call(self, method: str, path: str, body: dict | None = None, expect=(200, 201, 202), headers=None):
        status, got = self.request(method, path, body, headers)
        if status not in expect:
            raise HttpError(method, path, status, got)
        return got

    def session(self, sid: str) -> dict:
        return self.call("GET", f"/sessions/{sid}")

    def wait_phase(self, sid: str, phases: str | tuple, timeout: float = 120) -> dict:
        phases = (phases,) if isinstance(phases, str) else phases
        return wait_for(f"session {sid} in {'/'.join(phases)}",
                        lambda: (lambda s: s if s["phase"] in phases else None)(self.session(sid)), timeout)

    def validate(self, sid: str, task: str, timeout: float = 120) -> dict:
        """A validation run through the gateway, waited for (a 202 is polled)."""
        run = self.call("POST", f"/sessions/{sid}/tasks/{task}/validate")
        return wait_for(f"validation {run['runId']} finished", lambda: (
            lambda r: r if r.get("finished") else None)(self.call("GET", f"/sessions/{sid}/validations/{run['runId']}")),
            timeout)


class Terminal:
    """A terminal's WebSocket (docs/gateway.md, Terminals): bytes both ways, JSON control
    messages as text frames."""

    def __init__(self, url: str) -> None:
        self.url = re.sub(r"^http", "ws", url) + "/ws"
        # websockets wants connect() entered as a context manager; close() leaves it.
        self._connect = ws_connect(self.url, open_timeout=60, max_size=None)
        self.ws = self._connect.__enter__()
        self.out = b""
        self.ws.send(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
        self.until("the terminal ready", lambda c: c is not None and c["type"] == "ready")

    def until(self, what: str, done, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            Forbidden.check()
            try:
                msg = self.ws.recv(timeout=1)
            except TimeoutError:
                continue
            if isinstance(msg, bytes):
                self.out += msg
                if done(None):
                    return
            else:
                control = json.loads(msg)
                if control["type"] == "closed":
                    raise AssertionError(f"the terminal closed before {what}: {control}")
                if done(control):
                    return
        raise AssertionError(f"{what}: not within {timeout:.0f} s (terminal output: {self.out[-500:]!r})")

    def run(self, command: str, expect: bytes, timeout: float = 60) -> bytes:
        """Types `command` and waits for `expect` (a regex) in what follows; returns that output."""
        self.out = b""
        self.ws.send(command.encode() + b"\r")
        self.until(f"`{command}` printed {expect!r}", lambda _c: re.search(expect, self.out), timeout)
        return self.out

    def dropped(self, timeout: float = 30) -> ConnectionClosed:
        """Waits for the connection to go; the exception it went with."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.ws.recv(timeout=1)
            except TimeoutError:
                continue
            except ConnectionClosed as e:
                return e
        raise AssertionError(f"the terminal's connection still open after {timeout:.0f} s")

    def close(self) -> None:
        self._connect.__exit__(None, None, None)


def pool_manifest(platform: Platform, name: str, **spec) -> dict:
    """The sample ClusterPool (config/samples/clusterpool.yaml) as a pool of the suite: its own
    name, small sizes, the platform's golden image and SSH key; `spec` keys replace the sample's."""
    pool = yaml.safe_load((ROOT / "config/samples/clusterpool.yaml").read_text())
    pool = copy.deepcopy(pool)
    pool["metadata"] = {"name": name, "namespace": platform.namespace, "labels": {"cks.io/e2e": "true"}}
    ns, image = platform.golden_image.split("/", 1)
    t = pool["spec"]["template"]
    t["goldenImage"] = {"namespace": ns, "name": image}
    t["sshKeySecretRef"] = {"name": platform.ssh_key_secret}
    t["storageClassName"] = platform.storage_class
    pool["spec"].update({"minAvailable": 1, "maxClusters": 2, "maxConcurrentProvisioning": 2})
    pool["spec"]["sessions"] = {"defaultDurationMinutes": 30, "maxDurationMinutes": 60}
    for k, v in spec.items():
        pool["spec"][k] = v
    # The pool's own rules: these may not exceed what maxClusters allows.
    pool["spec"]["maxConcurrentProvisioning"] = min(pool["spec"]["maxConcurrentProvisioning"], pool["spec"]["maxClusters"])
    pool["spec"]["keepFailed"] = min(pool["spec"]["keepFailed"], pool["spec"]["maxClusters"] - 1)
    return pool


def apply(platform: Platform, manifest: dict) -> None:
    """`kubectl apply` of a manifest, as a GitOps tool applies what is in git."""
    platform.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))


def clusters(platform: Platform, pool: str) -> list[dict]:
    return platform.get("practiceclusters")["items"] if not pool else [
        c for c in platform.get("practiceclusters")["items"] if c["metadata"].get("labels", {}).get("cks.io/pool") == pool]


def phase(cluster: dict) -> str:
    return cluster.get("status", {}).get("phase", "")


def events_for(platform: Platform, name: str, namespace: str | None = None) -> list[dict]:
    return [e for e in platform.get("events", namespace=namespace)["items"]
            if e.get("involvedObject", {}).get("name") == name]
