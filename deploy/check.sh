#!/usr/bin/env bash
# Checks every file in deploy/ with the real tools. Exits non-zero if any check fails.
#
#   deploy/check.sh              run every check
#   deploy/check.sh --install    first apt-get install what is missing (root, Debian)
#   PROMETHEUS_URL=http://127.0.0.1:9090 deploy/check.sh
#                                run the PromQL checks against that Prometheus instead of a
#                                throwaway one (syntax and type errors only: no fixture data)
#
# Needs: systemd-analyze (systemd), promtool and prometheus (Debian: prometheus),
# python3 >= 3.11 with PyYAML (Debian: python3-yaml). Starts nothing that outlives it: the
# throwaway Prometheus listens on a free 127.0.0.1 port with its data in a temp directory.
set -uo pipefail

deploy="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
prometheus_pid=""
cleanup() {
    if [[ -n "$prometheus_pid" ]]; then
        kill "$prometheus_pid" 2>/dev/null
        wait "$prometheus_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
failed=0
failures=()
# check NAME COMMAND...: runs one check, shows its output indented, counts the result.
check() {
    local name="$1"
    shift
    printf '== %s\n' "$name"
    local out rc
    out="$("$@" 2>&1)"
    rc=$?
    [[ -n "$out" ]] && printf '%s\n' "$out" | sed 's/^/   /'
    if [[ $rc -eq 0 ]]; then
        passed=$((passed + 1))
        printf '   ok\n'
    else
        failed=$((failed + 1))
        failures+=("$name")
        printf '   FAILED (exit %d)\n' "$rc"
    fi
}

# --- tools --------------------------------------------------------------------------------
find_python() {
    local candidate
    for candidate in python3 /usr/bin/python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys, tomllib, yaml; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if [[ "${1:-}" == "--install" ]]; then
    packages=()
    command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
    command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)
    command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
    find_python >/dev/null || packages+=(python3 python3-yaml)
    if [[ ${#packages[@]} -gt 0 ]]; then
        echo "installing: ${packages[*]}"
        # Debian's prometheus package would start a Prometheus on :9090 on a systemd host;
        # policy-rc.d keeps package scripts from starting services. One that is there already
        # (Docker's images ship one) is put back afterwards.
        policy=/usr/sbin/policy-rc.d
        [[ -e $policy ]] && cp -p "$policy" "$tmp/policy-rc.d"
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
        rc=$?
        if [[ -e $tmp/policy-rc.d ]]; then cp -p "$tmp/policy-rc.d" "$policy"; else rm -f "$policy"; fi
        [[ $rc -eq 0 ]] || { echo "apt-get install failed" >&2; exit 1; }
    fi
fi

missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=("systemd-analyze (Debian: systemd)")
command -v promtool >/dev/null 2>&1 || missing+=("promtool (Debian: prometheus)")
[[ -n "${PROMETHEUS_URL:-}" ]] || command -v prometheus >/dev/null 2>&1 || missing+=("prometheus (Debian: prometheus)")
python="$(find_python)" || missing+=("python3 >= 3.11 with PyYAML (Debian: python3-yaml)")
if [[ ${#missing[@]} -gt 0 ]]; then
    printf 'missing: %s\n' "${missing[@]}" >&2
    echo "install them, or run: deploy/check.sh --install (as root)" >&2
    exit 1
fi
checks() { "$python" "$deploy/checks.py" "$@"; }

# --- systemd ------------------------------------------------------------------------------
verify_unit() {
    local unit
    unit="$(checks unit-stub "$deploy/systemd/galmanhae.service" "$tmp")" || return 1
    # verify exits 0 on some warnings (unknown keys, bad values): any output is a failure.
    local out
    out="$(systemd-analyze verify --man=no "$unit" 2>&1)"
    local rc=$?
    [[ -n "$out" ]] && printf '%s\n' "$out"
    [[ $rc -eq 0 && -z "$out" ]]
}
security_unit() {
    local unit
    unit="$(checks unit-stub "$deploy/systemd/galmanhae.service" "$tmp" 2>/dev/null)" || return 1
    # Exposure 0 (locked down) .. 10 (unsandboxed); the unit scores 3.0 ("OK"). Fail if a
    # change weakens it noticeably. --threshold counts in tenths: 40 is 4.0.
    systemd-analyze security --offline=yes --threshold=40 "$unit" 2>&1 | tail -n 1
    return "${PIPESTATUS[0]}"
}
check "systemd: systemd-analyze verify" verify_unit
check "systemd: systemd-analyze security (exposure <= 4)" security_unit
check "systemd: least privilege" checks unit "$deploy/systemd/galmanhae.service"

# --- config, dashboard, Kubernetes, contract -----------------------------------------------
check "config: galmanhae.toml" checks config "$deploy/galmanhae.toml"
check "grafana: dashboard JSON" checks dashboard "$deploy/grafana/galmanhae.json"
check "kubernetes: DaemonSet YAML" checks daemonset "$deploy/kubernetes/galmanhae-daemonset.yaml"
check "contract: names used are documented in METRICS.md" checks contract

# --- Prometheus ---------------------------------------------------------------------------
check "prometheus: promtool check config" promtool check config "$deploy/prometheus/prometheus.yml"
check "prometheus: promtool check rules" promtool check rules "$deploy/prometheus/galmanhae-alerts.yml"
check "prometheus: promtool test rules" promtool test rules "$deploy/prometheus/galmanhae-alerts.test.yml"

# A throwaway Prometheus with 30 minutes of samples of every documented family, running the
# deploy config itself (so the server also loads the alert rules).
start_prometheus() {
    local end port
    end="$(date +%s)"
    mkdir -p "$tmp/prometheus" "$tmp/data"
    cp "$deploy/prometheus/prometheus.yml" "$deploy/prometheus/galmanhae-alerts.yml" "$tmp/prometheus/"
    checks fixture "$end" >"$tmp/fixture.om" || return 1
    promtool tsdb create-blocks-from openmetrics "$tmp/fixture.om" "$tmp/data" >"$tmp/backfill.log" 2>&1 ||
        { cat "$tmp/backfill.log"; return 1; }
    port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    prometheus --config.file="$tmp/prometheus/prometheus.yml" --storage.tsdb.path="$tmp/data" \
        --web.listen-address="127.0.0.1:$port" >"$tmp/prometheus.log" 2>&1 &
    prometheus_pid=$!
    local i
    for i in $(seq 1 60); do
        if curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; then
            echo "prometheus $(prometheus --version 2>&1 | head -n 1 | awk '{print $3}') on 127.0.0.1:$port (pid $prometheus_pid), fixture ending at $end"
            echo "$port $end" >"$tmp/prometheus.addr"
            return 0
        fi
        kill -0 "$prometheus_pid" 2>/dev/null || break
        sleep 0.5
    done
    tail -n 20 "$tmp/prometheus.log"
    return 1
}
if [[ -n "${PROMETHEUS_URL:-}" ]]; then
    check "promql: every expression against $PROMETHEUS_URL" checks promql "$PROMETHEUS_URL"
else
    # Not through `check`: the server must outlive this step (a subshell would orphan it).
    printf '== %s\n' "promql: start a throwaway Prometheus"
    if start_prometheus >"$tmp/start.log" 2>&1; then
        sed 's/^/   /' "$tmp/start.log"
        passed=$((passed + 1))
        printf '   ok\n'
        read -r port end <"$tmp/prometheus.addr"
        check "promql: every dashboard and alert expression" checks promql "http://127.0.0.1:$port" "$end"
    else
        sed 's/^/   /' "$tmp/start.log"
        failed=$((failed + 1))
        failures+=("promql: start a throwaway Prometheus")
        printf '   FAILED\n'
    fi
fi

echo
if [[ $failed -gt 0 ]]; then
    printf 'failed: %s\n' "${failures[@]}"
fi
echo "deploy checks: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
