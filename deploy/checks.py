#!/usr/bin/env python3
"""Static checks of the deploy/ files, used by deploy/check.sh (which runs the external tools:
systemd-analyze, promtool, prometheus). Standard library plus PyYAML; Python 3.11+ (tomllib).

    checks.py unit-stub UNIT OUTDIR     copy UNIT to OUTDIR, commands that do not exist here
                                        replaced by a stub, for systemd-analyze verify
    checks.py unit UNIT                 least-privilege rules of the systemd unit
    checks.py config TOML               the example config: keys, types, defaults
    checks.py dashboard JSON            Grafana dashboard structure
    checks.py daemonset YAML            Kubernetes manifests
    checks.py contract                  every galmanhae_* name used is documented in METRICS.md,
                                        the listen port agrees across files
    checks.py fixture END               OpenMetrics samples of every documented family, for
                                        promtool tsdb create-blocks-from openmetrics
    checks.py promql URL [TIME]         run every dashboard and alert expression against a
                                        Prometheus HTTP API

Each command prints what it checked and exits 1 on the first class of failure it finds.
"""

import json
import os
import re
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request

import yaml

DEPLOY = os.path.dirname(os.path.abspath(__file__))
UNIT = os.path.join(DEPLOY, "systemd", "galmanhae.service")
CONFIG = os.path.join(DEPLOY, "galmanhae.toml")
DASHBOARD = os.path.join(DEPLOY, "grafana", "galmanhae.json")
DAEMONSET = os.path.join(DEPLOY, "kubernetes", "galmanhae-daemonset.yaml")
PROMETHEUS = os.path.join(DEPLOY, "prometheus", "prometheus.yml")
ALERTS = os.path.join(DEPLOY, "prometheus", "galmanhae-alerts.yml")
ALERT_TESTS = os.path.join(DEPLOY, "prometheus", "galmanhae-alerts.test.yml")
METRICS = os.path.join(DEPLOY, "METRICS.md")

PORT = 9436
# The capabilities galmanhae may be given, and the one it must not be.
ALLOWED_CAPS = {"BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH", "SYSLOG", "NET_RAW"}
FORBIDDEN_CAPS = {"SYS_ADMIN"}


class CheckFailed(Exception):
    pass


def fail_if(problems, what):
    if problems:
        raise CheckFailed(f"{what}:\n  - " + "\n  - ".join(problems))


# --- systemd -------------------------------------------------------------------------------

def unit_lines(path):
    """(key, value) of every assignment in a unit file, in order."""
    out = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        out.append((key.strip(), value.strip()))
    return out


def cmd_unit_stub(unit, outdir):
    """systemd-analyze verify fails on an ExecStart= binary that is not installed: point such
    commands at a stub so that everything else in the unit is still verified."""
    stub = os.path.join(outdir, "galmanhae-stub")
    with open(stub, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(stub, 0o755)
    text = open(unit, encoding="utf-8").read()
    replaced = []

    def swap(match):
        key, prefix, path = match.group(1), match.group(2), match.group(3)
        if os.access(path, os.X_OK):
            return match.group(0)
        replaced.append(path)
        return f"{key}={prefix}{stub}"

    text = re.sub(r"^(Exec\w+)=([-+@!:]*)(/\S+)", swap, text, flags=re.M)
    out = os.path.join(outdir, os.path.basename(unit))
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    for path in replaced:
        print(f"unit-stub: {path} is not installed here; verifying with a stub in its place",
              file=sys.stderr)
    print(out)


def caps(value):
    return {c.removeprefix("CAP_") for c in value.split()}


def path_list(values):
    """The paths of a list setting (ReadOnlyPaths=, InaccessiblePaths=) over all its lines,
    as systemd reads them: lines add, an empty one resets; the "-" and "+" prefixes dropped."""
    paths = []
    for value in values:
        if not value:
            paths = []
            continue
        paths += [p.lstrip("-+").rstrip("/") or "/" for p in value.split()]
    return paths


def covers(paths, target):
    """Whether one of `paths` is `target` or a directory above it."""
    return any(target == p or target.startswith(p.rstrip("/") + "/") for p in paths)


# systemd's spellings of a true boolean.
TRUE = {"yes", "true", "on", "1"}


def cmd_unit(unit):
    settings = {}
    for key, value in unit_lines(unit):
        settings.setdefault(key, []).append(value)
    one = lambda key: settings.get(key, [None])[-1]
    problems = []
    ambient, bounding = caps(one("AmbientCapabilities") or ""), caps(one("CapabilityBoundingSet") or "")
    if ambient != bounding:
        problems.append(f"AmbientCapabilities {sorted(ambient)} != CapabilityBoundingSet {sorted(bounding)}")
    for extra in sorted(bounding - ALLOWED_CAPS):
        problems.append(f"capability CAP_{extra} is not one galmanhae is known to need")
    for bad in sorted(bounding & FORBIDDEN_CAPS):
        problems.append(f"CAP_{bad} must not be granted")
    for need in ("BPF", "PERFMON"):
        if need not in ambient:
            problems.append(f"CAP_{need} missing: the programs cannot load")
    expected = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native", "Restart": "on-failure", "Type": "notify",
        "NotifyAccess": "main", "User": "galmanhae", "PrivateIPC": "yes",
    }
    for key, value in expected.items():
        if one(key) != value:
            problems.append(f"{key}={one(key)}, expected {value}")
    # The agent pets the watchdog after each pass (10 s at most): shorter would restart a healthy one.
    watchdog = one("WatchdogSec") or ""
    if not re.fullmatch(r"\d+s", watchdog) or int(watchdog[:-1]) < 30:
        problems.append(f"WatchdogSec={watchdog or None}, expected at least 30s (passes run every 10 s)")
    families = set((one("RestrictAddressFamilies") or "").split())
    if families != {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}:
        problems.append(f"RestrictAddressFamilies={sorted(families)}")
    # Settings that would break the agent (see the comments in the unit).
    for key, why in {
        "PrivateNetwork": "the agent must see the host's network namespace",
        "PrivateUsers": "capabilities would only apply inside a user namespace",
        "ProtectProc": "other users' processes would be hidden",
        "ProcSubset": "/proc/kallsyms and /proc/net would be hidden",
        "ProtectKernelLogs": "it removes CAP_SYSLOG (drop locations)",
    }.items():
        if one(key) not in (None, "no", "default", "all"):
            problems.append(f"{key}={one(key)}: {why}")
    # Drop locations are symbolised from /proc/kallsyms: hiding it turns every one "unknown".
    # ProtectKernelTunables=yes hides it (systemd.exec(5)); its read-only /proc/sys and /sys
    # must then be spelt out instead.
    read_only = path_list(settings.get("ReadOnlyPaths", []))
    inaccessible = path_list(settings.get("InaccessiblePaths", []))
    if (one("ProtectKernelTunables") or "no").lower() in TRUE:
        problems.append("ProtectKernelTunables=yes makes /proc/kallsyms inaccessible (drop locations)")
    if covers(inaccessible, "/proc/kallsyms"):
        problems.append("InaccessiblePaths= hides /proc/kallsyms (drop locations)")
    for path in ("/proc/sys", "/sys"):
        if not covers(read_only, path):
            problems.append(f"ReadOnlyPaths= lacks {path}: the agent only reads it")
    for path in ("/proc/kcore", "/etc/shadow"):
        if not covers(inaccessible, path):
            problems.append(f"InaccessiblePaths= lacks {path}")
    for key in ("MemoryMax", "TasksMax"):
        if not one(key) or one(key) == "infinity":
            problems.append(f"{key}= unset: a leak would be the host's")
    if "/usr/local/bin/galmanhae run --config /etc/galmanhae/galmanhae.toml" not in (one("ExecStart") or ""):
        problems.append(f"ExecStart={one('ExecStart')}")
    fail_if(problems, f"{unit}: least privilege")
    print(f"unit: {os.path.relpath(unit)}: capabilities {' '.join(sorted(ambient))}; no CAP_SYS_ADMIN; sandbox settings present; /proc/kallsyms readable")


# --- config --------------------------------------------------------------------------------

def cmd_config(path):
    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise CheckFailed(f"{path}: {e}") from e
    expected = {
        "listen": f"127.0.0.1:{PORT}",
        "log_level": None,
        "findings_window": "5m",
        "limits": {"max_remotes_per_workload": 20, "max_workloads": 500,
                   "max_drop_locations": 50, "series_grace_period": "5m"},
        "kernel": {"flow_map_capacity": 16384, "docker_socket": "/var/run/docker.sock",
                   "classic_tracepoints": False},
    }
    problems = []

    def walk(want, got, where):
        for key in sorted(set(want) | set(got)):
            name = f"{where}{key}"
            if key not in got:
                problems.append(f"{name} missing")
            elif key not in want:
                problems.append(f"{name} is not a documented key")
            elif isinstance(want[key], dict):
                if not isinstance(got[key], dict):
                    problems.append(f"{name} must be a table")
                else:
                    walk(want[key], got[key], f"{name}.")
            elif want[key] is not None and got[key] != want[key]:
                problems.append(f"{name} = {got[key]!r}, the documented default is {want[key]!r}")

    walk(expected, config, "")
    if config.get("log_level") not in ("error", "warn", "info", "debug", "trace"):
        problems.append(f"log_level = {config.get('log_level')!r}")
    fail_if(problems, f"{path}")
    print(f"config: {os.path.relpath(path)} parses; keys and defaults match deploy/METRICS.md")


# --- dashboard -----------------------------------------------------------------------------

def panels_of(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def load_dashboard(path=DASHBOARD):
    """The dashboard and its template variables by name."""
    try:
        dashboard = json.load(open(path, encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckFailed(f"{path}: not JSON: {e}") from e
    return dashboard, {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def cmd_dashboard(path):
    dashboard, variables = load_dashboard(path)
    problems = []
    if not 36 <= dashboard.get("schemaVersion", 0) <= 41:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')}")
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no `datasource` variable of type datasource/prometheus")
    workload = variables.get("workload", {})
    query = workload.get("query", {})
    query = query.get("query") if isinstance(query, dict) else query
    if not (query or "").startswith("label_values(galmanhae_tcp_sent_segments_total"):
        problems.append(f"`workload` variable query: {query!r}")
    # The latency panel is the user's own histogram: named in text boxes, not in the query.
    for name in ("app_latency_metric", "app_selector"):
        if variables.get(name, {}).get("type") != "textbox":
            problems.append(f"no `{name}` text box variable")
    ids, cells = set(), {}
    for panel in panels_of(dashboard):
        title = panel.get("title", "?")
        if panel["id"] in ids:
            problems.append(f"duplicate panel id {panel['id']}")
        ids.add(panel["id"])
        pos = panel["gridPos"]
        if pos["x"] + pos["w"] > 24:
            problems.append(f"{title}: wider than the grid")
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                if (x, y) in cells:
                    problems.append(f"{title} overlaps {cells[(x, y)]}")
                    break
                cells[(x, y)] = title
            else:
                continue
            break
        if panel["type"] == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{title}: panel datasource is not ${{datasource}}")
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{title}: target {target.get('refId')} datasource is not ${{datasource}}")
            if not target.get("expr"):
                problems.append(f"{title}: target {target.get('refId')} has no expr")
            # A fixed window is too short for a slow scrape interval and too long to zoom in.
            for window in re.findall(r"\[(\d+[smhdwy])\]", target.get("expr", "")):
                problems.append(f"{title}: fixed range [{window}]: use $__rate_interval (or $__range)")
    # The incident's view: the retransmit ratio and the app's latency side by side, on top.
    top = sorted((p for p in panels_of(dashboard) if p["type"] != "row"),
                 key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))[:2]
    titles = [p["title"] for p in top]
    if not (len(top) == 2 and top[0]["gridPos"]["y"] == top[1]["gridPos"]["y"]
            and "retransmit ratio" in titles[0].lower() and "latency" in titles[1].lower()):
        problems.append(f"first row should be the retransmit ratio beside the app latency, is {titles}")
    fail_if(problems, f"{path}")
    print(f"dashboard: {os.path.relpath(path)} parses; {len(ids)} panels, no overlaps, every query on ${{datasource}}")


# --- Kubernetes ----------------------------------------------------------------------------

def cmd_daemonset(path):
    try:
        docs = [d for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d]
    except yaml.YAMLError as e:
        raise CheckFailed(f"{path}: not YAML: {e}") from e
    problems = []
    kinds = {d.get("kind") for d in docs}
    for kind in ("Namespace", "ServiceAccount", "DaemonSet", "Service"):
        if kind not in kinds:
            problems.append(f"no {kind}")
    for d in docs:
        if not d.get("apiVersion") or not d.get("metadata", {}).get("name"):
            problems.append(f"{d.get('kind')}: apiVersion and metadata.name are required")
    ds = next((d for d in docs if d.get("kind") == "DaemonSet"), None)
    if ds:
        spec = ds["spec"]
        template = spec["template"]
        pod = template["spec"]
        if spec["selector"]["matchLabels"].items() - template["metadata"]["labels"].items():
            problems.append("selector does not match the pod template's labels")
        if not (pod.get("hostNetwork") and pod.get("hostPID")):
            problems.append("hostNetwork and hostPID are needed")
        if {"operator": "Exists"} not in pod.get("tolerations", []):
            problems.append("no toleration for every taint")
        annotations = template["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != str(PORT):
            problems.append("prometheus.io/scrape and prometheus.io/port annotations")
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            add = set(sc.get("capabilities", {}).get("add", []))
            if sc.get("privileged") is not False:
                problems.append(f"{c['name']}: privileged must be false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{c['name']}: capabilities must drop ALL")
            if add - ALLOWED_CAPS or add & FORBIDDEN_CAPS:
                problems.append(f"{c['name']}: capabilities {sorted(add)}")
            if not {"BPF", "PERFMON", "NET_ADMIN"} <= add:
                problems.append(f"{c['name']}: needs BPF, PERFMON, NET_ADMIN")
            # The task iterator reads namespaces; SYS_PTRACE is an opt-in for older kernels.
            if "SYS_PTRACE" in add:
                problems.append(f"{c['name']}: SYS_PTRACE is not needed with the task iterator")
            if not sc.get("readOnlyRootFilesystem"):
                problems.append(f"{c['name']}: readOnlyRootFilesystem")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{c['name']}: allowPrivilegeEscalation must be false")
            # The runtime's default AppArmor profile refuses ptrace "read" of the node's own
            # processes: /proc/PID/ns/net, the fallback without the task iterator, would fail.
            if sc.get("appArmorProfile", {}).get("type") != "Unconfined":
                problems.append(f"{c['name']}: appArmorProfile must be Unconfined (/proc/PID/ns/net)")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            if ports.get("metrics") != PORT:
                problems.append(f"{c['name']}: port `metrics` is not {PORT}")
            args = c.get("args", [])
            if args[:1] != ["run"] or f"0.0.0.0:{PORT}" not in args:
                problems.append(f"{c['name']}: args {args}")
            probe = c.get("livenessProbe", {}).get("httpGet", {})
            if probe.get("path") != "/healthz":
                problems.append(f"{c['name']}: liveness probe must GET /healthz")
            res = c.get("resources", {})
            if {"cpu", "memory"} - res.get("requests", {}).keys() or {"cpu", "memory"} - res.get("limits", {}).keys():
                problems.append(f"{c['name']}: cpu and memory requests and limits")
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    problems.append(f"{c['name']}: mount {m['name']} has no volume")
                if m["mountPath"].startswith(("/sys", "/run/containerd", "/var/log")) and not m.get("readOnly"):
                    problems.append(f"{c['name']}: {m['mountPath']} should be read-only")
            # Pod names come from the kubelet's /var/log/pods/<namespace>_<name>_<uid>.
            if "/var/log/pods" not in mounts:
                problems.append(f"{c['name']}: /var/log/pods is not mounted (pod names)")
    service = next((d for d in docs if d.get("kind") == "Service"), None)
    if service and service["spec"].get("clusterIP") != "None":
        problems.append("the Service should be headless (clusterIP: None)")
    fail_if(problems, f"{path}")
    print(f"daemonset: {os.path.relpath(path)} parses; {', '.join(d['kind'] for d in docs)}; least-privilege settings present")


# --- the contract --------------------------------------------------------------------------

def documented_families():
    """Family -> labels, from the summary table of METRICS.md; None where the labels cell
    says `none`."""
    families = {}
    for line in open(METRICS, encoding="utf-8"):
        m = re.match(r"\|\s*`(galmanhae_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram)[^|]*\|([^|]*)\|", line)
        if m:
            cell = m.group(3).strip()
            families[m.group(1)] = None if cell == "none" else re.findall(r"`([a-z_]+)`", cell)
    if not families:
        raise CheckFailed(f"{METRICS}: no summary table found")
    return families


def expressions(dashboard):
    """(where, expr) of every PromQL expression in the dashboard and the alert rules."""
    out = []
    for panel in panels_of(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append((f"dashboard: {panel['title']} [{target['refId']}]", target["expr"]))
    for group in yaml.safe_load(open(ALERTS, encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            out.append((f"alert: {rule.get('alert') or rule.get('record')}", rule["expr"]))
    return out


# A non-empty value for each text box whose default is empty, so that the query the user
# gets after filling it in is run too (`metric{}` and `metric{job=~".+"}` both must parse).
TEXTBOX_SAMPLES = {"app_selector": 'job=~".+"'}


def substitute(expr, variables, every=".*", samples=False):
    """Grafana's variables, as a query with every value selected would see them: query
    variables as `.*` (their allValue), text boxes and constants as their default value (or,
    with `samples`, TEXTBOX_SAMPLES'). With `every=".+"` a matcher on a label the series do
    not have selects nothing, which is how a misspelt label shows up over the fixture.
    `$name`, `${name}` and `${name:format}` are all Grafana's."""
    fixed = {"__rate_interval": "1m", "__interval": "1m", "__range": "5m"}

    def value(match):
        name = match.group(1) or match.group(2)
        if name in fixed:
            return fixed[name]
        if name not in variables:
            raise CheckFailed(f"unknown Grafana variable ${name} in: {expr}")
        variable = variables[name]
        if variable.get("type") in ("textbox", "constant", "custom"):
            default = variable.get("query", "")
            if variable.get("type") == "custom":
                default = variable.get("current", {}).get("value", "")
            return TEXTBOX_SAMPLES.get(name, default) if samples and not default else default
        return every

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def cmd_contract():
    families = documented_families()
    problems = []
    used = set()
    texts = [open(p, encoding="utf-8").read() for p in (DASHBOARD, ALERTS, ALERT_TESTS)]
    for text in texts:
        used |= set(re.findall(r"\bgalmanhae_[a-z0-9_]+", text))
    # galmanhae_bpf_program_run_time_seconds_total etc. are names; job="galmanhae" is not.
    # A histogram is used through its _bucket, _sum and _count series.
    used = {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in families else n
            for n in used}
    for name in sorted(used - set(families)):
        problems.append(f"{name} is used but not in the METRICS.md summary table")
    for name, labels in families.items():
        if labels == []:
            problems.append(f"{name} has no labels in the summary table (`none` if it has none)")
    # One port everywhere.
    prom = yaml.safe_load(open(PROMETHEUS, encoding="utf-8"))
    targets = [t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
    if f"127.0.0.1:{PORT}" not in targets:
        problems.append(f"prometheus.yml does not scrape 127.0.0.1:{PORT}")
    if f"`127.0.0.1:{PORT}`" not in open(METRICS, encoding="utf-8").read():
        problems.append(f"METRICS.md does not document 127.0.0.1:{PORT}")
    fail_if(problems, "contract")
    print(f"contract: {len(used)} galmanhae_* names used by the dashboard and alerts, all among the "
          f"{len(families)} documented families; port {PORT} agrees across files")


def fixture_series():
    """Labels of a few series per documented family: realistic values, every label present."""
    w = [("app", "container", "4f" * 32, "docker"), ("web", "container", "9c" * 32, "docker"),
         ("host", "host", "host", "host")]
    s = []
    for name, kind, cid, rt in w:
        labels = {"workload": name, "workload_kind": kind, "container_id": cid, "runtime": rt}
        s.append(("galmanhae_tcp_sent_segments_total", labels, 100.0))
        s.append(("galmanhae_tcp_retransmitted_segments_total", labels, 3.0 if name == "app" else 0.02))
    for remote, kind, rate in [("10.0.0.5:3306", "rto", 1.0), ("10.0.0.5:3306", "fast", 2.0),
                               ("10.0.0.5:3306", "failed", 0.1), ("other", "tlp", 0.2)]:
        s.append(("galmanhae_tcp_retransmits_total", {"workload": "app", "remote": remote, "kind": kind}, rate))
    for remote, rate in [("10.0.0.5:3306", 3.0), ("other", 0.2)]:
        s.append(("galmanhae_tcp_retransmit_segments_total", {"workload": "app", "remote": remote}, rate))
    for remote, rate in [("10.0.0.5:3306", 0.08), ("other", 0.01)]:
        s.append(("galmanhae_tcp_rto_stall_seconds_total", {"workload": "app", "remote": remote}, rate))
    s.append(("galmanhae_tcp_syn_retry_seconds_total", {"workload": "app", "remote": "10.0.0.5:3306"}, 0.03))
    cumulative = 0.0
    for le, rate in [("0.2", 0.0), ("0.5", 0.01), ("1", 0.01), ("2", 0.0), ("5", 0.005), ("10", 0.002),
                     ("20", 0.001), ("30", 0.0), ("60", 0.0), ("+Inf", 0.0)]:
        cumulative += rate
        s.append(("galmanhae_tcp_rto_stall_duration_seconds_bucket", {"workload": "app", "le": le}, cumulative))
    s.append(("galmanhae_tcp_rto_stall_duration_seconds_sum", {"workload": "app"}, 0.08))
    s.append(("galmanhae_tcp_rto_stall_duration_seconds_count", {"workload": "app"}, cumulative))
    s.append(("galmanhae_skb_drops_total", {"workload": "app", "reason": "NETFILTER_DROP", "location": "nf_hook_slow"}, 2.0))
    s.append(("galmanhae_skb_drops_total", {"workload": "host", "reason": "NO_SOCKET", "location": "tcp_v4_rcv"}, 5.0))
    for ns, entries in [("host", 950.0), ("app", 20.0)]:
        s.append(("galmanhae_conntrack_entries", {"namespace": ns}, -entries))
        s.append(("galmanhae_conntrack_max", {"namespace": ns}, -262144.0))
    for event in ("insert_failed", "drop", "early_drop", "invalid", "clash_resolve", "search_restart", "chaintoolong"):
        s.append(("galmanhae_conntrack_events_total", {"namespace": "host", "event": event}, 0.05))
    s.append(("galmanhae_nat_info", {"workload": "app", "source": "172.17.0.2", "translated": "10.128.0.2"}, -1.0))
    s.append(("galmanhae_nat_leaked_packets_total", {"workload": "app", "interface": "ens4"}, 0.1))
    s.append(("galmanhae_nat_masquerade_info", {"family": "ipv4", "backend": "nft", "chain": "POSTROUTING",
                                                "source": "172.17.0.0/16", "out_interface": "!docker0",
                                                "random_fully": "false"}, -1.0))
    for hop, iface, mtu in [("workload", "eth0", 1500.0), ("host_veth", "veth1a2b3c", 1500.0),
                            ("bridge", "docker0", 1500.0), ("egress", "ens4", 1460.0)]:
        s.append(("galmanhae_path_mtu_bytes", {"workload": "app", "hop": hop, "interface": iface}, -mtu))
    for program in ("tcp_retransmit_skb", "tcp_retransmit_synack", "kfree_skb"):
        s.append(("galmanhae_bpf_program_run_time_seconds_total", {"program": program}, 0.00005))
        s.append(("galmanhae_bpf_program_runs_total", {"program": program}, 50.0))
    for m, entries, capacity in [("retransmit_flows", 28.0, 16384.0), ("retransmit_overflow", 3.0, 4096.0),
                                 ("drops", 40.0, 8192.0), ("drop_overflow", 0.0, 2048.0)]:
        s.append(("galmanhae_bpf_map_entries", {"map": m}, -entries))
        s.append(("galmanhae_bpf_map_capacity", {"map": m}, -capacity))
    for reason in ("flow_map_full", "overflow_map_full", "read_error", "drop_map_full", "drop_overflow_full",
                   "leak_map_full", "program_skipped"):
        s.append(("galmanhae_lost_events_total", {"reason": reason}, 0.0))
    s.append(("galmanhae_series_dropped_total", {"family": "galmanhae_tcp_retransmits_total"}, 0.0))
    s.append(("galmanhae_scrape_duration_seconds", {}, -0.004))
    s.append(("galmanhae_flow_entries_freed_total", {}, 0.0))
    s.append(("galmanhae_build_info", {"version": "0.1.0", "commit": "86b3be3"}, -1.0))
    s.append(("galmanhae_finding", {"id": "local_drops", "severity": "high", "workload": "app"}, -1.0))
    # Not galmanhae's: the app latency histogram the dashboard's text boxes name by default.
    for le, rate in [("0.1", 90.0), ("0.5", 97.0), ("1", 98.0), ("5", 99.5), ("+Inf", 100.0)]:
        s.append(("http_server_request_duration_seconds_bucket", {"le": le}, rate))
    for hook, kind in (("tcp:tcp_retransmit_skb", "tp_btf"), ("tcp:tcp_retransmit_synack", "tracepoint"),
                       ("skb:kfree_skb", "tp_btf")):
        s.append(("galmanhae_hook_up", {"hook": hook, "kind": kind, "status": "attached", "required": "true"}, -1.0))
    s.append(("galmanhae_hook_up", {"hook": "__nf_conntrack_confirm", "kind": "kprobe|fentry",
                                    "status": "unavailable", "required": "false"}, 0.0))
    for collector in ("maps", "snmp", "conntrack", "nat_table"):
        s.append(("galmanhae_collector_up", {"collector": collector, "status": "ok", "required": "true"}, -1.0))
    for collector in ("nat_rules", "kallsyms", "bpf_stats"):
        s.append(("galmanhae_collector_up", {"collector": collector, "status": "ok", "required": "false"}, -1.0))
    s.append(("galmanhae_collector_up", {"collector": "docker", "status": "off", "required": "false"}, 0.0))
    return s


def cmd_fixture(end):
    """30 minutes of samples every 15 s, ending at END (unix seconds). A positive number is a
    counter's rate per second, a negative one a gauge's constant value."""
    end = int(end)
    series = fixture_series()
    families = documented_families()
    missing = set(families) - {re.sub(r"_(bucket|sum|count)$", "", name) for name, _, _ in series} - \
        {name for name, _, _ in series}
    if missing:
        raise CheckFailed(f"fixture has no series of {sorted(missing)}: add them to fixture_series()")
    base = {"job": "galmanhae", "instance": f"127.0.0.2:{PORT}"}
    out = []
    for t in range(end - 1800, end + 1, 15):
        for name, labels, v in series:
            value = -v if v < 0 else v * (t - end + 1800)
            text = ",".join(f'{k}="{val}"' for k, val in {**base, **labels}.items())
            out.append(f"{name}{{{text}}} {value} {t}")
    out.append("# EOF")
    print("\n".join(out))


def query(url, promql, at):
    params = {"query": promql}
    if at:
        params["time"] = at
    request = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        return json.load(e)
    except OSError as e:
        raise CheckFailed(f"cannot query {url}: {e}") from e


def cmd_promql(url, at=None):
    """Every expression must run (status success), its variables as Grafana's "All" sends them
    and its text boxes both at their defaults and filled in. With a time (the fixture loaded
    at `url`), every dashboard expression over series the fixture has must also return data
    with every variable `.+`: a name or a label that the fixture, and so METRICS.md, does not
    have returns nothing."""
    dashboard, variables = load_dashboard()
    in_fixture = {name for name, _, _ in fixture_series()}
    problems, ran, variants, with_data = [], 0, 0, 0
    for where, expr in expressions(dashboard):
        ran += 1
        promqls = dict.fromkeys([substitute(expr, variables), substitute(expr, variables, samples=True)])
        failed = False
        for promql in promqls:
            variants += 1
            answer = query(url, promql, at)
            if answer.get("status") != "success":
                problems.append(f"{where}: {answer.get('errorType')}: {answer.get('error')}\n      {promql}")
                failed = True
        if failed:
            continue
        names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", next(iter(promqls))))
        if not (at and where.startswith("dashboard") and names and names <= in_fixture):
            continue
        strict = substitute(expr, variables, every=".+")
        answer = query(url, strict, at)
        if answer.get("status") != "success" or not answer["data"]["result"]:
            problems.append(f"{where}: no data over the fixture (a label or name the contract does not have?)\n      {strict}")
        else:
            with_data += 1
    fail_if(problems, "PromQL")
    print(f"promql: {ran} expressions ({variants} queries with the text boxes filled in too) ran without "
          f"error on {url}"
          + (f"; the {with_data} dashboard queries over fixture series all returned data" if at else ""))


def main(argv):
    commands = {
        "unit-stub": cmd_unit_stub, "unit": cmd_unit, "config": cmd_config,
        "dashboard": cmd_dashboard, "daemonset": cmd_daemonset, "contract": cmd_contract,
        "fixture": cmd_fixture, "promql": cmd_promql,
    }
    if len(argv) < 2 or argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        commands[argv[1]](*argv[2:])
    except CheckFailed as e:
        print(f"FAILED {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
