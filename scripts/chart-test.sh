#!/usr/bin/env bash
# `make chart-test`: builds cks-devcluster and runs scripts/chart-test.py (what it checks is
# described there) with the pinned tools .ci/run installs into .tools/chart and .tools/checkov.
# CHART_TEST_OUT=DIR keeps the rendered manifests.
set -euo pipefail
cd "$(dirname "$0")/.."

py=.tools/chart/bin/python
[ -x "$py" ] && "$py" -c 'import helm_python, kubernetes_validate' 2>/dev/null || {
    echo "make chart-test needs helm-python-sdk and kubernetes-validate in .tools/chart (.ci/run installs the pinned versions)" >&2
    exit 1
}
checkov=.tools/checkov/bin/checkov
[ -x "$checkov" ] || checkov=$(command -v checkov) || {
    echo "make chart-test needs checkov (.ci/run installs the pinned version into .tools/checkov)" >&2
    exit 1
}
# The kubectl the kubectl tests use first (.tools, Debian's 1.20), else $KUBECTL or PATH's.
kubectl=${KUBECTL:-}
[ -n "$kubectl" ] || { [ -x .tools/kubectl/usr/bin/kubectl ] && kubectl=.tools/kubectl/usr/bin/kubectl; } ||
    kubectl=$(command -v kubectl) || { echo "make chart-test needs kubectl (.ci/run installs one into .tools)" >&2; exit 1; }

cargo="${CARGO:-cargo}"
"$cargo" build --locked -q -p cks-devcluster
target_dir=$("$cargo" metadata --format-version 1 --no-deps --locked |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

out=()
[ -z "${CHART_TEST_OUT:-}" ] || out=(--out "$CHART_TEST_OUT")
exec "$py" scripts/chart-test.py --devcluster "$target_dir/debug/cks-devcluster" \
    --kubectl "$kubectl" --checkov "$checkov" "${out[@]}"
