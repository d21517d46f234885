#!/usr/bin/env python3
"""`make rbac-proof` (run by `make e2e`, part of `make test`): the Helm chart's RBAC against what
the operator and the gateway really asked the API server for during the whole e2e suite.

The e2e suite (e2e/, e2e/platform.py) runs the development control plane with an audit log and
one bearer token per component, each authenticating as that component's ServiceAccount, with
the chart's RBAC enforced (`--enforce-rbac`, so a missing rule already fails the flow that needs
it, as a real cluster would); two operator and two gateway replicas run with the arguments of
the chart's own Deployments, and every flow of the suite drives them (GitOps pools, student
sessions with terminals and validations, expiry and resets, the admin API, a template rollout,
replicas killed, pools scaled down and deleted).

Then, given the suite's state directory (`--state`: its `audit.jsonl` and the rendered chart in
`chart.json`), per component every request in the audit log must be allowed by the chart's rules
for that ServiceAccount (Roles through RoleBindings in their namespace, ClusterRoles through
ClusterRoleBindings everywhere, resourceNames honoured; discovery is granted to every
authenticated user by Kubernetes' own system:discovery), and every verb of every rule must have
been used by some request, except those listed in NOT_EXERCISED with the reason the suite cannot
reach them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from e2e.platform import COMPONENT_USERS, NAMESPACE, sa_user  # noqa: E402

# Rules (component, group, resource, verb) the e2e suite cannot reach, and why. Each is needed by code
# that the crate tests named exercise, or by a check of a real API server the development control
# plane does not make.
NOT_EXERCISED = {
    ("operator", "kubevirt.io", "virtualmachines", "deletecollection"):
        "a provisioning retry after a failed clone (crates/operator/tests/cluster.rs, clone failures)",
    ("operator", "snapshot.kubevirt.io", "virtualmachinesnapshots", "deletecollection"):
        "a snapshot retry after a failed snapshot (cluster.rs delete_all on Snapshotting)",
    ("operator", "cdi.kubevirt.io", "datavolumes/source", "create"):
        "checked by KubeVirt's VM admission (CDI clone authorization) on a real cluster, not by the simulator",
    ("operator", "cks.io", "clusterpools/finalizers", "update"):
        "checked by the OwnerReferencesPermissionEnforcement admission plugin on a real cluster",
    ("operator", "cks.io", "sessions/finalizers", "update"):
        "checked by the OwnerReferencesPermissionEnforcement admission plugin on a real cluster",
    ("gateway", "cks.io", "sessions/finalizers", "update"):
        "checked by the OwnerReferencesPermissionEnforcement admission plugin on a real cluster",
}


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


# ---- the chart's rules ------------------------------------------------------------------------

def rules_for(objects: list[dict], user: str) -> list[dict]:
    """Every rule that applies to `user`, with `scope` (None: cluster-wide, else a namespace)."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    out = []
    for b in objects:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(sa_user(s["name"]) == user and s.get("namespace") == NAMESPACE
                   for s in b.get("subjects", []) if s["kind"] == "ServiceAccount"):
            continue
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None
        role = roles.get((ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"]))
        if role is None:
            fail(f"{b['kind']} {b['metadata']['name']} refers to a missing {ref['kind']} {ref['name']}")
        for i, rule in enumerate(role.get("rules", [])):
            out.append({**rule, "scope": ns, "origin": f"{role['kind']} {role['metadata']['name']} rule {i}"})
    return out


def allows(rule: dict, req: dict) -> bool:
    resource = req["resource"] + (f"/{req['subresource']}" if req["subresource"] else "")
    return (
        req["group"] in rule.get("apiGroups", [])
        and resource in rule.get("resources", [])
        and req["verb"] in rule.get("verbs", [])
        and (not rule.get("resourceNames") or req["name"] in rule["resourceNames"])
        and (rule["scope"] is None or rule["scope"] == req["namespace"])
    )


# system:discovery and system:public-info-viewer, bound to every authenticated user.
DISCOVERY = re.compile(r"^/(api|apis|openapi|version|healthz|livez|readyz)(/|$)")


def compare(component: str, rules: list[dict], requests: list[dict]) -> list[str]:
    problems = []
    used: set[tuple[str, str, str, str]] = set()
    for req in requests:
        if not req["resource"]:
            if req["verb"] == "get" and DISCOVERY.match(req["path"]):
                continue
            problems.append(f"{component}: non-resource {req['verb']} {req['path']} is not allowed")
            continue
        matching = [r for r in rules if allows(r, req)]
        if not matching:
            problems.append(f"{component}: MISSING rule for {req['verb']} {req['group'] or 'core'}/{req['resource']}"
                            f"{'/' + req['subresource'] if req['subresource'] else ''} in "
                            f"{req['namespace'] or '(cluster)'} (name {req['name'] or '-'})")
        resource = req["resource"] + (f"/{req['subresource']}" if req["subresource"] else "")
        for r in matching:
            used.add((r["origin"], req["group"], resource, req["verb"]))
    # An exception the suite now reaches must leave the list.
    for (c, group, resource, verb), _why in NOT_EXERCISED.items():
        if c == component and any(u[1:] == (group, resource, verb) for u in used):
            problems.append(f"{component}: {verb} {group or 'core'}/{resource} is used: remove it from NOT_EXERCISED")
    for r in rules:
        for group in r.get("apiGroups", []):
            for resource in r.get("resources", []):
                for verb in r.get("verbs", []):
                    if (r["origin"], group, resource, verb) in used:
                        continue
                    if (component, group, resource, verb) in NOT_EXERCISED:
                        continue
                    problems.append(f"{component}: EXTRA {verb} {group or 'core'}/{resource} ({r['origin']}, "
                                    f"scope {r['scope'] or 'cluster'}) was never used")
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", required=True, help="the e2e suite's state directory (audit.jsonl, chart.json)")
    args = ap.parse_args()
    state = Path(args.state)
    objects = json.loads((state / "chart.json").read_text())
    requests = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    problems = []
    for component, user in COMPONENT_USERS.items():
        mine = [r for r in requests if r["user"] == user]
        if not mine:
            fail(f"no request of the {component} was recorded")
        refused = [r for r in mine if r.get("code") == 403]
        if refused:
            problems.append(f"{component}: {len(refused)} requests refused, e.g. {refused[0]}")
        rules = rules_for(objects, user)
        problems += compare(component, rules, mine)
        kinds = {(r["verb"], r["group"], r["resource"], r["subresource"]) for r in mine if r["resource"]}
        print(f"rbac-proof: {component}: {len(mine)} requests, {len(kinds)} distinct (verb, resource), "
              f"{len(rules)} rules")
    for (component, group, resource, verb), why in sorted(NOT_EXERCISED.items()):
        print(f"rbac-proof: not exercised here: {component} {verb} {group}/{resource}: {why}")
    if problems:
        print("\n".join(dict.fromkeys(problems)), file=sys.stderr)
        fail(f"the chart's RBAC and the requests differ ({len(problems)})")
    print("rbac-proof: every request of the e2e suite allowed by the chart's rules and every other rule used")


if __name__ == "__main__":
    main()
