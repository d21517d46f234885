"""The whole flows of issue #14 (e2e/README.md): what students, administrators and GitOps see,
through the gateway's HTTP API, terminals and kubectl, against a platform started as the chart
wires it (or a real cluster). Each test has its own pool and its own students."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request

import pytest

from e2e.client import Terminal, apply, clusters, events_for, phase
from e2e.platform import wait_for

SCENARIO = "network-policy-default-deny"
# Task 1 of SCENARIO and what fixes it in the practice cluster, typed into the terminal.
TASK = "task-1"
FIX = ("echo '{\"apiVersion\": \"networking.k8s.io/v1\", \"kind\": \"NetworkPolicy\", \"metadata\": "
       "{\"name\": \"default-deny\", \"namespace\": \"shop\"}, \"spec\": {\"podSelector\": {}, "
       "\"policyTypes\": [\"Ingress\", \"Egress\"]}}' | kubectl apply -f -")

def available(platform, pool: str, count: int = 1, timeout: float = 180) -> list[dict]:
    return wait_for(f"{count} cluster(s) of {pool} Available", lambda: (
        lambda a: a if len(a) >= count else None)(
            [c for c in clusters(platform, pool) if phase(c) == "Available" and not c["spec"].get("claimRef")]),
        timeout)


def cluster(platform, name: str) -> dict:
    return platform.get("practicecluster", name)


def start_session(student, pool: str, **extra) -> dict:
    status, s = student.request("POST", "/sessions", {"scenarioId": SCENARIO, "pool": pool, **extra})
    assert status == 201, (status, s)
    return student.wait_phase(s["sessionId"], "Ready")


def terminal(student, sid: str) -> Terminal:
    t = student.call("POST", f"/sessions/{sid}/terminals", {"target": "control-plane"})
    assert t["target"] == "control-plane" and t["terminalUrl"].startswith("http"), t
    return Terminal(t["terminalUrl"])


def expire_now(platform, sid: str) -> None:
    """Lets the session's time run out. The gateway and the pool allow at least 5 minutes, too
    long for a suite, so the clock is moved instead of waited for: the session's `startedAt`
    (from which the operator recomputes `expiresAt` on every reconcile) goes back past its
    duration, as if that time had passed."""
    def move() -> bool:
        s = platform.get("session", sid)
        minutes = s["spec"]["durationMinutes"] + 1
        s["status"]["startedAt"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        # A PUT of the status subresource guarded by the resourceVersion read (a conflict with
        # the operator's own writes is retried); `kubectl patch --subresource` needs 1.24+.
        platform.kubectl("replace", "--raw", f"/apis/cks.io/v1alpha1/namespaces/{platform.namespace}/sessions/{sid}/status",
                         "-f", "-", input=json.dumps(s))
        return True
    wait_for("the session's startedAt moved back", move, 30)


def test_gitops_session_lifecycle(platform, api, pools):
    """GitOps pool -> Available -> session -> terminal fix -> validation -> expiry -> reset -> reuse, clean"""
    pool = "e2e-gitops"
    # One cluster only, so the second student must get the first one's cluster back.
    pools(pool, minAvailable=1, maxClusters=1)
    [c] = available(platform, pool)
    name = c["metadata"]["name"]
    resets = c["status"].get("resets", 0)
    assert c["metadata"]["labels"]["cks.io/pool"] == pool
    wait_for("the pool Ready", lambda: any(
        x["type"] == "Ready" and x["status"] == "True"
        for x in platform.get("clusterpool", pool).get("status", {}).get("conditions", [])), 60)

    alice = api("student-1")
    # A retried create (same Idempotency-Key) answers with the Session the first one made.
    key = {"Idempotency-Key": "e2e-gitops-alice"}
    status, s = alice.request("POST", "/sessions", {"scenarioId": SCENARIO, "pool": pool}, key)
    assert status == 201 and s["status"] in ("running", "pending"), (status, s)
    sid = s["sessionId"]
    assert alice.call("POST", "/sessions", {"scenarioId": SCENARIO, "pool": pool}, headers=key)["sessionId"] == sid
    s = alice.wait_phase(sid, "Ready")
    assert s["status"] == "running" and s["assignedCluster"] == name and s["user"] == platform.users["student-1"]
    wait_for("the cluster Assigned", lambda: phase(cluster(platform, name)) == "Assigned", 30)
    # Another student does not see it (404, as an unknown id).
    assert api("student-2").request("GET", f"/sessions/{sid}")[0] == 404

    # Before the fix the task fails, with the check's message.
    before = alice.validate(sid, TASK)
    assert before["success"] is False and any(not r["passed"] for r in before["results"]), before

    term = terminal(alice, sid)
    term.run("hostname", rb"[\r\n]control-plane\r\n")
    term.run("echo left-by-alice > ~/alice.txt; cat ~/alice.txt", rb"[\r\n]left-by-alice\r\n")
    term.run(f"{FIX} && echo FIXED-$((40+2))", rb"FIXED-42", timeout=60)
    term.close()

    after = alice.validate(sid, TASK)
    assert after["success"] is True, after
    # The session's view follows (the ValidationRun controller writes the task's result).
    s = wait_for("the task completed in the session's view", lambda: (lambda s: s if next(
        t for t in s["tasks"] if t["id"] == TASK)["status"] == "completed" else None)(alice.session(sid)), 30)
    # The operator keeps one run per task (the chart's validationRunsKept in this suite): the
    # failed one is pruned.
    if platform.__class__.__name__ == "LocalPlatform":
        wait_for("the older run pruned", lambda: [r["runId"] for r in alice.call(
            "GET", f"/sessions/{sid}/validations")] == [after["runId"]], 60)

    extended = alice.call("PUT", f"/sessions/{sid}/extend", {"minutes": 10})
    assert extended["durationMinutes"] == s["durationMinutes"] + 10
    # The event stream sends the session's view at once.
    req = urllib.request.Request(f"{alice.base}/api/v1/sessions/{sid}/events",
                                 headers={"Authorization": f"Bearer {alice.token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        line = r.readline()
        while not line.startswith(b"data:"):
            line = r.readline()
        assert json.loads(line[5:])["sessionId"] == sid

    expire_now(platform, sid)
    s = alice.wait_phase(sid, "Expired", 60)
    assert s["status"] == "expired"
    wait_for("the Expired event", lambda: any(e["reason"] == "Expired" for e in events_for(platform, sid)), 30)
    # An expired session has no terminal any more.
    status, err = alice.request("POST", f"/sessions/{sid}/terminals", {"target": "control-plane"})
    assert status == 409 and err["error"] == "SESSION_NOT_RUNNING", (status, err)

    # The cluster is reset from its snapshots and comes back Available.
    c = wait_for("the cluster reset and Available", lambda: (lambda c: c if phase(c) == "Available" and c["status"].get(
        "resets", 0) > resets and not c["spec"].get("claimRef") else None)(cluster(platform, name)), 180)
    assert c["status"]["sessionsServed"] == 1

    bob = api("student-2")
    s2 = start_session(bob, pool)
    assert s2["assignedCluster"] == name
    term = terminal(bob, s2["sessionId"])
    term.run("test -e ~/alice.txt && echo PRESENT || echo ABSENT-$((2+2))", rb"(PRESENT|ABSENT-4)\r\n")
    assert b"ABSENT-4" in term.out, term.out
    term.close()
    # The practice cluster is back as the scenario set it up: the fix is undone.
    assert bob.validate(s2["sessionId"], TASK)["success"] is False
    assert bob.call("DELETE", f"/sessions/{s2['sessionId']}")["sessionId"] == s2["sessionId"]


def test_admin_flow(platform, api, pools):
    """admin API: list pools/clusters/sessions, force-end, reset, recreate, reload; students get 403"""
    pool = "e2e-admin"
    pools(pool, minAvailable=2, maxClusters=3)
    free = available(platform, pool, 2)
    admin, carol = api("admin"), api("student-3")

    me = admin.call("GET", "/auth/me")
    assert me == {"user": platform.users["admin"], "role": "admin", "auth": "token"}
    assert carol.call("GET", "/auth/me")["role"] == "student"
    for method, path in [("GET", "/admin/clusters"), ("GET", "/admin/sessions"), ("POST", "/scenarios/reload"),
                         ("POST", f"/admin/clusters/{free[0]['metadata']['name']}/reset"),
                         ("POST", "/admin/release-all-clusters")]:
        status, err = carol.request(method, path)
        assert status == 403, (method, path, status, err)

    s = start_session(carol, pool)
    sid, held = s["sessionId"], s["assignedCluster"]
    view = wait_for("the held cluster locked in the admin view", lambda: (
        lambda v: v if v["detailedClusters"].get(held, {}).get("status") == "locked" else None)(
            admin.call("GET", "/admin/clusters")), 30)
    assert pool in json.dumps(view["pools"])
    sessions = admin.call("GET", "/admin/sessions")
    assert sid in [x["sessionId"] for x in sessions["sessions"]] and sessions["stats"]["runningSessions"] >= 1
    assert [x["sessionId"] for x in admin.call("GET", f"/admin/sessions?user={platform.users['student-3']}")["sessions"]] == [sid]

    # A held cluster is not reset (409), a free one is; a ValidationRun made with kubectl (no
    # labels, no owner) is taken up by the operator.
    status, err = admin.request("POST", f"/admin/clusters/{held}/reset")
    assert status == 409 and err["error"] == "CLUSTER_ASSIGNED", (status, err)
    run = {"apiVersion": "cks.io/v1alpha1", "kind": "ValidationRun",
           "metadata": {"name": f"{sid}-by-hand", "namespace": platform.namespace},
           "spec": {"session": sid, "task": TASK}}
    apply(platform, run)
    wait_for("the hand-made run owned by its Session", lambda: platform.get(
        "validationrun", f"{sid}-by-hand")["metadata"].get("ownerReferences"), 60)

    target = next(c["metadata"]["name"] for c in free if c["metadata"]["name"] != held)
    # Two resets of one cluster: the second deletes the first's restores and the restore-* PVCs
    # no VM uses any more.
    for n in (1, 2):
        before = cluster(platform, target)["status"].get("resets", 0)
        # The gateway's cache may hold the version before the last reset (409: try again).
        answer = wait_for(f"reset {n} accepted", lambda: (lambda st, b: b if st == 200 else None)(
            *admin.request("POST", f"/admin/clusters/{target}/reset")), 30)
        assert answer["action"] and answer["message"], answer
        wait_for(f"reset {n} finished", lambda: (lambda c: phase(c) == "Available" and c["status"].get(
            "resets", 0) > before)(cluster(platform, target)), 120)

    recreated = admin.call("POST", f"/admin/clusters/{target}/recreate")
    assert recreated["message"], recreated
    wait_for("the recreated cluster replaced", lambda: target not in [
        c["metadata"]["name"] for c in clusters(platform, pool)] and len(available(platform, pool, 1)) >= 1, 120)
    status, err = admin.request("POST", "/admin/destroy-pool")
    assert status == 409 and err["error"] == "POOL_MANAGED", (status, err)

    reload = admin.call("POST", "/scenarios/reload")
    assert reload["scenarios"] >= 1 and not reload["errors"], reload

    ended = admin.call("POST", f"/admin/sessions/{sid}/end")
    assert ended["message"], ended
    s = carol.wait_phase(sid, "Ended", 60)
    assert s["status"] == "ended"
    wait_for("the ForceReleased event", lambda: any(e["reason"] == "ForceReleased" for e in events_for(platform, sid)), 30)
    # Released: reset, or deleted as surplus (three clusters for a buffer of two).
    wait_for("the cluster released", lambda: not any(
        (c["spec"].get("claimRef") or {}).get("name") == sid for c in clusters(platform, pool)), 60)
    available(platform, pool, 2)

    if platform.disruptive:
        # Every session of the namespace is force-ended; the failed clusters of every pool rebuilt.
        s = start_session(api("student-4"), pool)
        released = admin.call("POST", "/admin/release-all-clusters")
        assert s["sessionId"] in json.dumps(released), released
        api("student-4").wait_phase(s["sessionId"], "Ended", 60)
        assert admin.call("POST", "/admin/bootstrap-pool")["message"]


def test_template_rollout_while_sessions_run(platform, api, pools):
    """template rollout: the held cluster untouched until released, free clusters roll, then all new"""
    pool = "e2e-rollout"
    manifest = pools(pool, minAvailable=2, maxClusters=4)
    available(platform, pool, 2)
    dave = api("student-5")
    s = start_session(dave, pool)
    sid, held = s["sessionId"], s["assignedCluster"]
    held_before = cluster(platform, held)
    old_hash = held_before["metadata"]["labels"]["cks.io/template-hash"]

    # A new template in git: a rebuilt golden image under a new name (on a real cluster without
    # E2E_ROLLOUT_IMAGE, more memory for the control plane).
    template = manifest["spec"]["template"]
    if platform.rollout_image:
        ns, image = platform.rollout_image.split("/", 1)
        template["goldenImage"] = {"namespace": ns, "name": image}
    else:
        template["controlPlane"]["memory"] = "5Gi"
    apply(platform, manifest)
    new_hash = wait_for("the pool's new templateHash", lambda: (lambda h: h if h and h != old_hash else None)(
        platform.get("clusterpool", pool).get("status", {}).get("templateHash")), 60)

    def rolled_free():
        cs = clusters(platform, pool)
        free = [c for c in cs if c["metadata"]["name"] != held]
        return len([c for c in free if phase(c) == "Available"]) >= 2 and all(
            c["metadata"]["labels"]["cks.io/template-hash"] == new_hash for c in free)
    wait_for("the free clusters rolled to the new template", rolled_free, 180)
    # The held cluster is untouched: same object, old template, still the session's.
    now = cluster(platform, held)
    assert now["metadata"]["uid"] == held_before["metadata"]["uid"]
    assert now["metadata"]["labels"]["cks.io/template-hash"] == old_hash
    assert phase(now) == "Assigned" and now["spec"]["claimRef"]["name"] == sid
    assert dave.session(sid)["phase"] == "Ready"
    term = terminal(dave, sid)
    term.run("hostname", rb"[\r\n]control-plane\r\n")
    term.close()

    dave.call("DELETE", f"/sessions/{sid}")
    # Released, the outdated cluster is replaced rather than reset; every cluster on the new one.
    wait_for("the outdated cluster gone", lambda: held not in [c["metadata"]["name"] for c in clusters(platform, pool)], 120)
    wait_for("every cluster on the new template", lambda: all(
        c["metadata"]["labels"]["cks.io/template-hash"] == new_hash for c in clusters(platform, pool)), 60)
    s2 = start_session(api("student-6"), pool)
    rolled = cluster(platform, s2["assignedCluster"])
    assert rolled["metadata"]["labels"]["cks.io/template-hash"] == new_hash
    assert rolled["spec"]["template"] == platform.get("clusterpool", pool)["spec"]["template"]
    assert held_before["spec"]["template"] != rolled["spec"]["template"]


def test_operator_killed_mid_reset(platform, api, pools):
    """operator leader SIGKILLed while a cluster is Resetting: the standby finishes the reset"""
    pool = "e2e-failover"
    pools(pool, minAvailable=1, maxClusters=1)
    [c] = available(platform, pool)
    name = c["metadata"]["name"]
    resets = c["status"].get("resets", 0)
    vm_ns = c["status"]["namespace"]
    erin = api("student-7")
    s = start_session(erin, pool)
    # Holds the reset mid-way: a finalizer of the test's own on the control plane's VMI keeps
    # the VM from stopping, so the cluster stays Resetting until it is removed.
    vmi = next(v for v in platform.get("vmi", namespace=vm_ns)["items"] if v["metadata"]["name"] == f"{name}-cp")
    hold = "e2e.cks.io/hold"
    # A merge patch replaces the whole list: KubeVirt's own finalizers stay beside ours.
    platform.kubectl("patch", "vmi", vmi["metadata"]["name"], "-n", vm_ns, "--type=merge", "-p", json.dumps(
        {"metadata": {"finalizers": [*vmi["metadata"].get("finalizers", []), hold],
                      "resourceVersion": vmi["metadata"]["resourceVersion"]}}))
    vmi = vmi["metadata"]["name"]
    erin.call("DELETE", f"/sessions/{s['sessionId']}")
    wait_for("the cluster Resetting", lambda: phase(cluster(platform, name)) == "Resetting", 60)
    wait_for("the reset waiting on the held VMI", lambda: platform.get("vmi", vmi, vm_ns)["metadata"].get(
        "deletionTimestamp"), 60)

    leader = platform.operator_leader()
    platform.kill_operator(leader)
    finalizers = [f for f in platform.get("vmi", vmi, vm_ns)["metadata"].get("finalizers", []) if f != hold]
    platform.kubectl("patch", "vmi", vmi, "-n", vm_ns, "--type=merge",
                     "-p", json.dumps({"metadata": {"finalizers": finalizers}}))
    new_leader = wait_for("another replica takes the Lease", lambda: (
        lambda h: h if h and h != leader else None)(platform.operator_leader()), 60)
    c = wait_for("the reset finished by the new leader", lambda: (lambda c: c if phase(c) == "Available" and c[
        "status"].get("resets", 0) > resets else None)(cluster(platform, name)), 120)
    assert c["status"]["sessionsServed"] == 1
    s2 = start_session(api("student-8"), pool)
    assert s2["assignedCluster"] == name
    print(f"e2e: leader {leader} killed, {new_leader} finished the reset")


def test_gateway_replica_killed_mid_terminal(platform, api, pools):
    """gateway replica SIGKILLed mid-terminal: the client sees the drop, the same URL works via the other"""
    pool = "e2e-gateway"
    pools(pool, minAvailable=1, maxClusters=1)
    available(platform, pool)
    frank = api("student-1")
    s = start_session(frank, pool)
    sid = s["sessionId"]
    t = frank.call("POST", f"/sessions/{sid}/terminals", {"target": "control-plane"})
    term = Terminal(t["terminalUrl"])
    term.run("echo before-$((3*3))", rb"before-9\r\n")
    platform.kill_gateway(0)
    closed = term.dropped()
    # No close frame: the replica died, it did not close the terminal.
    assert closed.rcvd is None, closed
    # The same capability through the other replica (one key file for all).
    url = t["terminalUrl"].replace(platform.gateways[0], platform.gateways[1], 1)
    term = wait_for("the terminal reopened through the other replica", lambda: Terminal(url), 60)
    term.run("echo after-$((4*4))", rb"after-16\r\n")
    term.close()
    other = frank.at(platform.gateways[1])
    s2 = other.session(sid)
    assert s2["phase"] == "Ready" and s2["assignedCluster"] == s["assignedCluster"]
    assert other.call("POST", f"/sessions/{sid}/terminals", {"target": "worker-1"})["target"] == "worker-1"
    other.call("DELETE", f"/sessions/{sid}")


@pytest.fixture(autouse=True)
def _platform_alive(platform):
    yield
    if hasattr(platform, "alive"):
        platform.alive()
