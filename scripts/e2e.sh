#!/usr/bin/env bash
# `make e2e` (part of `make test`): the e2e suite (e2e/, e2e/README.md) with the pinned pytest,
# Helm SDK and websockets client .ci/run installs into .tools/chart. Locally it builds the platform
# binaries, runs the suite against the platform started as the chart wires it, then the RBAC
# proof on the suite's audit log (scripts/rbac-proof.py). With E2E_KUBECONFIG it runs the suite
# against that cluster instead (no build, no proof). E2E_KEEP=DIR keeps the audit log and the
# processes' logs; arguments go to pytest (e.g. -k gitops; then there is no proof).
set -euo pipefail
cd "$(dirname "$0")/.."

py=.tools/chart/bin/python
[ -x "$py" ] && "$py" -c 'import helm_python, websockets, pytest' 2>/dev/null || {
    echo "make e2e needs helm-python-sdk, websockets and pytest in .tools/chart (.ci/run installs the pinned versions)" >&2
    exit 1
}
pytest=("$py" -m pytest e2e -p no:cacheprovider -q -rfE "$@")
if [ -n "${E2E_KUBECONFIG:-}" ]; then
    exec "${pytest[@]}"
fi
command -v ssh-keygen >/dev/null || { echo "needs ssh-keygen (Debian: apt-get install openssh-client)" >&2; exit 1; }
# Any kubectl: the suite uses nothing newer than 1.20 (.ci/run's .tools/kubectl).
kubectl=${KUBECTL:-}
[ -n "$kubectl" ] || kubectl=$(command -v kubectl) ||
    { [ -x .tools/kubectl/usr/bin/kubectl ] && kubectl=.tools/kubectl/usr/bin/kubectl; } ||
    { echo "make e2e needs kubectl (.ci/run installs one into .tools)" >&2; exit 1; }

# shellcheck source=scripts/build-platform.sh
source scripts/build-platform.sh
state=$(mktemp -d -t cks-e2e-XXXXXX)
started=$SECONDS
if ! E2E_BIN="$bin" E2E_STATE_DIR="$state" KUBECTL="$kubectl" "${pytest[@]}"; then
    [ -z "${E2E_KEEP:-}" ] || cp -r "$state/." "$E2E_KEEP"
    echo "e2e: FAILED; the processes' logs and the audit log are in $state" >&2
    exit 1
fi
if (($#)); then
    # A part of the suite cannot use every rule: the proof needs the whole of it.
    echo "e2e: no RBAC proof (pytest arguments given: not the whole suite)"
elif ! "$py" scripts/rbac-proof.py --state "$state"; then
    echo "e2e: the RBAC proof FAILED; the audit log is in $state" >&2
    exit 1
fi
[ -z "${E2E_KEEP:-}" ] || cp -r "$state/." "$E2E_KEEP"
rm -rf "$state"
echo "e2e: passed in $((SECONDS - started)) s"
