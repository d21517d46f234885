#!/usr/bin/env bash
# `make rbac-proof`: builds the platform binaries and runs scripts/rbac-proof.py (what it proves is
# described there) with the pinned Helm SDK and websockets client .ci/run installs into .tools/chart.
# RBAC_PROOF_KEEP=DIR keeps the audit log and the processes' logs.
set -euo pipefail
cd "$(dirname "$0")/.."

py=.tools/chart/bin/python
[ -x "$py" ] && "$py" -c 'import helm_python, websockets' 2>/dev/null || {
    echo "make rbac-proof needs helm-python-sdk and websockets in .tools/chart (.ci/run installs the pinned versions)" >&2
    exit 1
}
command -v ssh-keygen >/dev/null || { echo "needs ssh-keygen (Debian: apt-get install openssh-client)" >&2; exit 1; }
kubectl=${KUBECTL:-}
[ -n "$kubectl" ] || { [ -x .tools/kubectl/usr/bin/kubectl ] && kubectl=.tools/kubectl/usr/bin/kubectl; } ||
    kubectl=$(command -v kubectl) || { echo "make rbac-proof needs kubectl (.ci/run installs one into .tools)" >&2; exit 1; }

source scripts/build-platform.sh
keep=()
[ -z "${RBAC_PROOF_KEEP:-}" ] || keep=(--keep "$RBAC_PROOF_KEEP")
exec "$py" scripts/rbac-proof.py --bin "$bin" --kubectl "$kubectl" "${keep[@]}"
