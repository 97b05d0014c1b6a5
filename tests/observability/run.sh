#!/usr/bin/env bash
# Checks the operations artefacts: the alert rules parse and pass their unit
# tests (promtool), and every metric the dashboard and the rules query is in
# the catalog docs/METRICS.md — and, when PPM_METRICS_URLS lists running
# services' /metrics URLs (the stack test sets it), in their real output,
# which must also pass `promtool check metrics`. Prints "N passed, N failed".
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
passed=0
failed=0
check() { # check "what" command...
    local what=$1; shift
    if "$@" >/tmp/ppm-obs.$$ 2>&1; then
        passed=$((passed + 1)); echo "ok   $what"
    else
        failed=$((failed + 1)); echo "FAIL $what"; sed 's/^/    | /' /tmp/ppm-obs.$$ | tail -20
    fi
}
cd "$root/deploy/prometheus"
check "promtool check rules" promtool check rules ppm-alerts.yml
check "promtool test rules" promtool test rules ppm-alerts.test.yml

# Metric names used by the dashboard and the rules.
used=$( (jq -r '.. | .expr? // empty' "$root/deploy/grafana/ppm-overview.json";
         grep -E '^\s*expr:|^\s+(sum|/|max|min|histogram)' "$root/deploy/prometheus/ppm-alerts.yml") |
       grep -oE '\b(ppm_[a-z0-9_]+|process_[a-z_]+)\b' |
       sed -E 's/_(bucket|sum|count)$//' | sort -u)
catalog=$(grep -oE '^\| `[a-z0-9_]+`' "$root/docs/METRICS.md" | tr -d '|` ' | sort -u)
for m in $used; do
    check "$m is in docs/METRICS.md" grep -qx "$m" <<<"$catalog"
done

if [ -n "${PPM_METRICS_URLS:-}" ]; then
    live=$(mktemp)
    for url in ${PPM_METRICS_URLS//,/ }; do
        curl -fsS "$url" > "$live.one" || { failed=$((failed + 1)); echo "FAIL scrape $url"; continue; }
        check "promtool check metrics $url" bash -c "promtool check metrics < $live.one"
        cat "$live.one" >> "$live"
    done
    names=$(grep -E '^# TYPE ' "$live" | awk '{print $3}' | sort -u)
    for m in $used; do
        check "$m is exposed by a running service" grep -qx "$m" <<<"$names"
    done
    rm -f "$live" "$live.one"
fi
rm -f /tmp/ppm-obs.$$
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
