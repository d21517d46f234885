"""The suite's own helpers, without a platform: a request refused by RBAC fails the wait at once
and names the request; deadlines are honoured."""

from __future__ import annotations

import json

import pytest

from e2e import platform
from e2e.platform import Forbidden, wait_for


def test_refused_request_fails_the_wait_at_once(tmp_path, monkeypatch):
    audit = tmp_path / "audit.jsonl"
    monkeypatch.setattr(Forbidden, "audit", audit)
    monkeypatch.setattr(Forbidden, "read", 0)
    ok = {"user": "u", "verb": "get", "group": "", "resource": "secrets", "subresource": "", "namespace": "a",
          "name": "k", "code": 200}
    audit.write_text(json.dumps(ok) + "\n")
    assert wait_for("nothing refused", lambda: 1, 5) == 1
    refused = {**ok, "verb": "get", "group": "subresources.kubevirt.io", "resource": "virtualmachineinstances",
               "subresource": "portforward", "name": "c-cp", "code": 403}
    with audit.open("a") as f:
        f.write(json.dumps(refused) + "\n")
    with pytest.raises(Forbidden, match=r"RBAC refused u: get subresources.kubevirt.io/virtualmachineinstances/"
                                        r"portforward in a \(name c-cp\)"):
        wait_for("something that never holds", lambda: None, 60)


def test_deadline_names_what_and_the_last_error(monkeypatch):
    monkeypatch.setattr(Forbidden, "audit", None)
    monkeypatch.setattr(platform, "time_scale", 1.0)

    def never():
        raise RuntimeError("still 404")
    with pytest.raises(AssertionError, match=r"the cluster Available: not within 0 s \(last error: RuntimeError\('still 404'\)\)"):
        wait_for("the cluster Available", never, 0.3, 0.1)
