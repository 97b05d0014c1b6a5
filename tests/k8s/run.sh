#!/usr/bin/env bash
# Renders every overlay with kustomize (kubectl's built-in) and validates the
# result offline (validate.mjs). Installs the npm packages it needs on first
# use from package-lock.json. Prints "N passed, N failed".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ ! -d "$here/node_modules/kubernetes-models" ]; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
files=()
for overlay in "$root"/k8s/overlays/*/; do
    name=$(basename "$overlay")
    kubectl kustomize "$overlay" > "$out/$name.yaml"
    files+=("$out/$name.yaml")
done
cd "$here"
node validate.mjs "${files[@]}" | sed "s|$out/||"
