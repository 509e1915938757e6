"""bench/run: Weft's sidecar against direct, nginx and HAProxy, in one interleaved run.

See docs/benchmarks.md. Needs root (network namespaces, iptables in them).
"""

import argparse
import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import configs, report
from .configs import ip
from .lab import Lab, rss_mb, sh
from .measure import Runner, failed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(REPO, "bench")
APT_PACKAGES = {  # command -> Debian package
    "nginx": "nginx", "haproxy": "haproxy", "wrk": "wrk", "iperf3": "iperf3",
    "curl": "curl", "openssl": "openssl", "cc": "gcc", "ip": "iproute2",
    "iptables": "iptables", "setpriv": "util-linux", "taskset": "util-linux",
    "chrt": "util-linux", "nc": "netcat-openbsd",
}
NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so"
SSL_HEADER = "/usr/include/openssl/ssl.h"


class Interrupted(Exception):
    pass


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- preparation -----------------------------------------------------------------------------
def install_tools(callgrind=False):
    wanted = dict(APT_PACKAGES, **({"callgrind_control": "valgrind"} if callgrind else {}))
    missing = sorted({pkg for cmd, pkg in wanted.items() if not shutil.which(cmd)})
    if not os.path.exists(NGINX_STREAM):
        missing.append("libnginx-mod-stream")
    if not os.path.exists(SSL_HEADER):
        missing.append("libssl-dev")
    if not missing:
        return
    log(f"installing from Debian: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sh(["apt-get", "update"], timeout=600, env=env)
    sh(["apt-get", "install", "-y", "--no-install-recommends"] + missing, timeout=1200, env=env)


def newest_mtime(paths):
    newest = 0.0
    for top in paths:
        if os.path.isfile(top):
            newest = max(newest, os.path.getmtime(top))
            continue
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d not in ("target", ".git")]
            for f in files:
                newest = max(newest, os.path.getmtime(os.path.join(root, f)))
    return newest


def ensure_weft(args):
    if args.weft:
        return os.path.abspath(args.weft)
    binary = os.path.join(REPO, "target", "release", "weft")
    sources = [os.path.join(REPO, "crates"), os.path.join(REPO, "Cargo.toml"),
               os.path.join(REPO, "Cargo.lock")]
    if args.no_build and os.path.exists(binary):
        return binary
    if not os.path.exists(binary) or os.path.getmtime(binary) < newest_mtime(sources):
        log("building target/release/weft (cargo build --release -p weft)")
        out = subprocess.run(["cargo", "build", "--release", "-p", "weft"], cwd=REPO,
                             stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError("cargo build --release -p weft failed (output above)")
    return binary


def ensure_loadgen():
    src = os.path.join(BENCH, "tools", "loadgen.c")
    out_dir = os.path.join(REPO, "target", "bench")
    os.makedirs(out_dir, exist_ok=True)
    binary = os.path.join(out_dir, "loadgen")
    if not os.path.exists(binary) or os.path.getmtime(binary) < os.path.getmtime(src):
        log("compiling bench/tools/loadgen.c")
        sh(["cc", "-O2", "-Wall", "-o", binary, src, "-lssl", "-lcrypto", "-lpthread"])
    return binary


def builds_running():
    out = sh(["pgrep", "-x", "-l", "rustc|cc1|cc1plus|cargo"], check=False).stdout
    return " ".join(sorted({line.split()[1] for line in out.splitlines() if line.split()}))


def machine_info():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "model": model, "kernel": os.uname().release}


def cpu_times():
    """(total, steal) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), (v[7] if len(v) > 7 else 0)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def weft_build(weft):
    """Which Weft was measured: the binary's time and the repository's commit."""
    if not weft:
        return {}
    head = sh(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
    dirty = sh(["git", "-C", REPO, "status", "--porcelain", "--", "crates", "Cargo.toml",
                "Cargo.lock"], check=False).stdout.strip()
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(weft), datetime.timezone.utc)
    return {"binary": weft, "built": mtime.strftime("%Y-%m-%d %H:%M UTC"),
            "commit": head or "?", "uncommitted_changes_in_crates": bool(dirty)}


def versions(weft):
    def first(argv, pattern=None):
        out = sh(argv, check=False)
        text = (out.stdout + out.stderr).strip().splitlines()
        for line in text:
            if pattern is None or pattern in line:
                return line.strip()
        return "?"
    v = {"weft": first([weft, "version"])} if weft else {}
    return v | {
        "nginx": first(["nginx", "-v"]).replace("nginx version: ", ""),
        "HAProxy": first(["haproxy", "-v"], "version").split(" - ")[0],
        "OpenSSL": first(["openssl", "version"]),
        "wrk": first(["wrk", "-v"]).split(" [")[0],
        "iperf3": first(["iperf3", "-v"]).split(" (")[0],
    }


# -- systems ---------------------------------------------------------------------------------
def wait_for(what, seconds, check):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {seconds} s waiting for {what}")


def http_code(lab, pod, url):
    out = lab.exec(pod, ["curl", "-s", "-o", "/dev/null", "-m", "3", "-w", "%{http_code}", url])
    return out.stdout.strip()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def start_upstream(lab, d, pod, cpu, with_iperf):
    procs = [lab.spawn(f"upstream-{pod.name}", pod,
                       ["nginx", "-c", write(f"{d}/upstream-{pod.name}.conf",
                                             configs.upstream_nginx(d, f"upstream-{pod.name}"))],
                       cpu=cpu)]
    if with_iperf:
        procs.append(lab.spawn(f"iperf3-{pod.name}", pod, ["iperf3", "-s", "-p", "5201"],
                               cpu=cpu))
    wait_for(f"the upstream in {pod.name}", 10,
             lambda: lab.exec(pod, ["curl", "-s", "-m", "1", "http://127.0.0.1:8080/"]).stdout
             == "ok")
    return procs


# The Weft pods with a sidecar: (pod, WorkloadEntry, app label, service account).
WEFT_PODS = (("wmtls", "mtls", "mtls", "server"),
             ("wplain", "plain", "plain", "server"),
             ("wauthz", "authz", "authz", "server"),
             ("wlog", "logged", "logged", "server"),
             ("wotel", "otellog", "otellog", "server"),
             ("wtrace", "traced", "traced", "server"),
             ("wclient", "client", "client", "client"),
             ("wtc1", "tclient1", "tclient1", "tclient1"),
             ("wtc100", "tclient100", "tclient100", "tclient100"))
SERVER_PODS = ("wplain", "wmtls", "wauthz", "wlog", "wotel", "wtrace")


def otelcol():
    """The OpenTelemetry Collector the telemetry units send to: $WEFT_OTELCOL, else built by
    scripts/peers (once, cached outside the clone)."""
    path = os.environ.get("WEFT_OTELCOL", "")
    if path and os.path.exists(path):
        return path
    out = sh([os.path.join(REPO, "scripts", "peers")], timeout=1800).stdout
    for line in out.splitlines():
        if line.startswith("WEFT_OTELCOL="):
            return line.split("=", 1)[1]
    raise RuntimeError("scripts/peers did not build the OpenTelemetry Collector")


def start_collector(lab, d, cpu):
    """The collector, on the load generator's CPU (its work is not the proxies')."""
    pod = lab.pods["collector"]
    cfg = write(os.path.join(d, "otelcol.yaml"), configs.collector_config())
    proc = lab.spawn("otel-collector", pod, [otelcol(), f"--config=file:{cfg}"], cpu=cpu)
    wait_for("the OpenTelemetry Collector", 30,
             lambda: lab.exec(pod, ["nc", "-z", "-w", "1", pod.ip, "4317"]).returncode == 0)
    return proc


def start_weft(lab, d, weft, plugin_ca, cpu, upstreams, callgrind_dir=None):
    cfg = os.path.join(d, "weft-config")
    os.makedirs(cfg, exist_ok=True)
    for name, text in configs.weft_config():
        write(os.path.join(cfg, name), text)
    mesh = write(os.path.join(d, "weft-mesh.yaml"), configs.weft_mesh_config(d))
    # The `logged` unit's access log: the sidecars run as uid 1337.
    access_log = write(os.path.join(d, "weft-access.log"), "")
    os.chown(access_log, 1337, 1337)
    state = os.path.join(d, "weft-state")
    cp = lab.pods["cp"]
    lab.spawn("weft-control", cp, [weft, "control", "--config-dir", cfg, "--mesh-config", mesh,
                                   "--state-dir", state, "--ca-dir", plugin_ca],
              cpu=cpu, env={"WEFT_LOG": "info", "NO_COLOR": "1"})
    wait_for("weft control", 30, lambda: http_code(lab, cp, f"http://{cp.ip}:15014/ready")
             == "200")
    procs = {}
    # Under --callgrind the sidecars run in Valgrind, uninstrumented until measured.
    wrap = [] if callgrind_dir is None else [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--vgdb=yes",
        f"--callgrind-out-file={callgrind_dir}/callgrind.%p"]
    for pod_name, workload, app, sa in WEFT_PODS:
        pod = lab.pods[pod_name]
        if pod_name in upstreams:
            upstreams[pod_name] = start_upstream(lab, d, pod, cpu, pod_name == "wmtls")
        lab.exec(pod, [weft, "iptables"], check=True)
        token = sh([weft, "control", "token", "--state-dir", state, "--workload",
                    f"{configs.NAMESPACE}/{workload}"]).stdout
        token_file = write(os.path.join(d, f"{workload}.token"), token)
        os.chown(token_file, 1337, 1337)
        procs[pod_name] = lab.spawn(
            f"weft-proxy-{pod_name}", pod,
            wrap + [weft, "proxy", "--control-plane", f"{cp.ip}:15010", "--workload",
             f"{configs.NAMESPACE}/{workload}", "--token-file", token_file, "--pod-ip", pod.ip,
             "--service-account", sa, "--label", f"app={app}", "--label", "version=v1",
             "--concurrency", "1", "--termination-drain", "1s"],
            cpu=cpu, uid=1337, env={"WEFT_LOG": "warn", "NO_COLOR": "1"})
    for pod_name, proc in procs.items():
        pod = lab.pods[pod_name]
        try:
            wait_for(f"the Weft sidecar in {pod_name} to be ready", 30 if not wrap else 180,
                     lambda: http_code(lab, pod, "http://127.0.0.1:15021/healthz/ready")
                     == "200")
        except RuntimeError:
            raise RuntimeError(f"Weft sidecar in {pod_name} not ready; its log:\n"
                               f"{proc.tail()}") from None
    return procs


def make_targets(lab, procs, upstreams):
    """What each unit talks to and whose CPU it charges."""
    client, wclient = lab.pods["client"], lab.pods.get("wclient")
    server_ip = ip("server")
    up_server = upstreams.get("server", [])
    http = {("direct", "direct"): dict(pod=client, connect=f"{server_ip}:8080", proxies=[],
                                       upstream=up_server)}
    tcp = {("direct", "direct"): dict(pod=client, host=server_ip, port=5201, proxies=[])}
    tls = {}
    for i, s in enumerate(("nginx", "haproxy")):
        if s not in procs:
            continue
        a, b = procs[s]["A"], procs[s]["B"]
        http[(s, "1hop")] = dict(pod=client, connect=f"127.0.0.1:{8101 + i}", proxies=[a],
                                 upstream=up_server)
        http[(s, "2hop")] = dict(pod=client, connect=f"127.0.0.1:{8201 + i}", proxies=[a, b],
                                 upstream=up_server)
        http[(s, "mtls")] = dict(pod=client, connect=f"127.0.0.1:{8301 + i}", proxies=[a, b],
                                 upstream=up_server)
        tcp[(s, "1hop")] = dict(pod=client, host="127.0.0.1", port=5301 + i, proxies=[a])
        tcp[(s, "mtls")] = dict(pod=client, host="127.0.0.1", port=5303 + i, proxies=[a, b])
        tls[s] = dict(pod=client, connect=f"{server_ip}:{9201 + i}", server=b,
                      sni=configs.SERVER_NAME, alpn="http/1.1", host=configs.SERVER_NAME)
    if "weft" in procs:
        w = procs["weft"]
        for topo, svc, client_pod, server_pod in (("1hop", "up", "wclient", None),
                                                  ("2hop", "plain", "wclient", "wplain"),
                                                  ("mtls", "mtls", "wclient", "wmtls"),
                                                  ("routed", "routed", "wclient", "wmtls"),
                                                  ("authz", "authz", "wclient", "wauthz"),
                                                  ("logged", "logged", "wclient", "wlog"),
                                                  ("otellog", "otellog", "wclient", "wotel"),
                                                  ("trace1", "traced", "wtc1", "wtrace"),
                                                  ("trace100", "traced", "wtc100", "wtrace")):
            path = [w[client_pod]] + ([w[server_pod]] if server_pod else [])
            ups = upstreams.get(server_pod, []) if server_pod else up_server
            http[("weft", topo)] = dict(pod=lab.pods[client_pod],
                                        connect=f"{configs.fqdn(svc)}:8080",
                                        proxies=path, upstream=ups)
        tcp[("weft", "1hop")] = dict(pod=wclient, host=configs.fqdn("up"), port=5201,
                                     proxies=[w["wclient"]])
        tcp[("weft", "mtls")] = dict(pod=wclient, host=configs.fqdn("mtls"), port=5201,
                                     proxies=[w["wclient"], w["wmtls"]])
        tls["weft"] = dict(pod=client, connect=f"{ip('wmtls')}:8080", server=w["wmtls"],
                           sni=f"outbound_.8080_._.{configs.fqdn('mtls')}",
                           alpn="istio-http/1.1", host=f"{configs.fqdn('mtls')}:8080")
    return http, tcp, tls


def precheck(lab, http):
    """Every HTTP path answers 200 before anything is measured (Weft needs its routes)."""
    for (system, topo), t in sorted(http.items()):
        url = f"http://{t['connect']}/"
        try:
            wait_for(f"{system} {topo} to answer 200", 30,
                     lambda: http_code(lab, t["pod"], url) == "200")
        except RuntimeError:
            logs = "\n".join(f"--- {p.name}\n{p.tail()}" for p in t["proxies"])
            raise RuntimeError(f"{system} {topo}: {url} does not answer 200\n{logs}") from None


def profile(runner, target, out_dir, name, freq=499):
    """perf record (DWARF call graphs) of the path's proxies during a saturation run: flat
    self time by symbol and by object, and inclusive time by symbol."""
    pids = [str(pid) for p in target["proxies"] for pid in p.pids()]
    data = os.path.join(out_dir, f"perf-{name}.data")
    secs = max(1, round(runner.duration))
    perf = subprocess.Popen(["perf", "record", "-F", str(freq), "--call-graph", "dwarf,16384",
                             "-o", data, "-p", ",".join(pids), "--", "sleep", str(secs)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    stat_file = os.path.join(out_dir, f"perf-stat-{name}.csv")
    stat = subprocess.Popen(["perf", "stat", "-x", ",", "-o", stat_file, "-e",
                             "raw_syscalls:sys_enter,context-switches", "-p", ",".join(pids),
                             "--", "sleep", str(secs)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    r = runner.http_saturation(target)
    perf.wait(timeout=secs + 60)
    stat.wait(timeout=secs + 60)
    # Per request, over the perf window (the saturation run fills it).
    with open(stat_file) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[0].replace(".", "").isdigit():
                r[f"{parts[2]}_per_req"] = float(parts[0]) / max(1.0, r["sat_rps"] * secs)
    write(os.path.join(out_dir, f"profile-{name}.json"), json.dumps(r, indent=1))
    for args, suffix in ((["--no-children", "--sort", "dso,sym"], "self"),
                         (["--no-children", "--sort", "dso"], "dso"),
                         (["--children", "--sort", "sym"], "inclusive")):
        rep = sh(["perf", "report", "-i", data, "--stdio", "--percent-limit", "0.5", "-g",
                  "none"] + args, check=False, timeout=900)
        write(os.path.join(out_dir, f"profile-{name}-{suffix}.txt"), rep.stdout)
    log(f"{name}: {json.dumps(r)}; reports in {out_dir}/profile-{name}-*.txt")


def callgrind(runner, target, out_dir, name):
    """Instructions per request of the path's proxies, counted by Callgrind: the same on a
    noisy machine as on a quiet one, for comparing two builds. A closed loop of 16
    connections (loadgen's: no request is cut off at its end, so the sidecars' upstream
    connections stay pooled from one load to the next and the count holds no handshake):
    once to warm up, once instrumented (Valgrind translates the code anew), then counters
    zeroed, the measured load, and a dump; per function in the report."""
    pids = [pid for p in target["proxies"] for pid in p.pids()]

    def control(*args):
        # As the sidecars' user: vgdb wakes a process blocked in a system call with ptrace,
        # which across users needs CAP_SYS_PTRACE (not in every container).
        sh(["setpriv", "--reuid", "1337", "--regid", "1337", "--clear-groups",
            "callgrind_control", *args], timeout=120)
    conns = 16
    runner.http_closed(target, conns, max(1, round(runner.warmup)))
    for pid in pids:
        control("-i", "on", str(pid))
    runner.http_closed(target, conns, max(1, round(runner.warmup)))
    for pid in pids:
        control("-z", str(pid))
    w = runner.http_closed(target, conns, max(1, round(runner.duration)))
    for pid in pids:
        control("-d", name, str(pid))
        control("-i", "off", str(pid))
    total, reports = 0, []
    for pid in pids:
        dumps = sorted(f for f in os.listdir(out_dir) if f.startswith(f"callgrind.{pid}."))
        if not dumps:
            raise RuntimeError(f"--callgrind: no dump from process {pid}")
        path = os.path.join(out_dir, dumps[-1])
        with open(path) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    total += int(line.split()[1])
                    break
        for inclusive in ("no", "yes"):
            reports.append(sh(["callgrind_annotate", f"--inclusive={inclusive}",
                               "--auto=no", path], check=False).stdout)
    requests = w["done_total"]
    r = {"requests": requests, "ok": w["ok"], "errors": w["errors"], "connects": w["connects"],
         "instructions": total, "instructions_per_req": total / max(1, requests)}
    write(os.path.join(out_dir, f"callgrind-{name}.json"), json.dumps(r, indent=1))
    write(os.path.join(out_dir, f"callgrind-{name}.txt"), "\n".join(reports))
    log(f"{name}: {json.dumps(r)}; per function in {out_dir}/callgrind-{name}.txt")


# -- main ------------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: every unit ~1.5 s, 1 repetition, no figures written")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    p.add_argument("--duration", type=float, default=None, help="seconds per load (default 10)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds (default 1.5)")
    p.add_argument("--out", default=None, help="output directory (default target/bench/<time>)")
    p.add_argument("--systems", default="nginx,haproxy,weft",
                   help="comma-separated subset of nginx,haproxy,weft")
    p.add_argument("--weft", default=None, help="use this weft binary (no build)")
    p.add_argument("--no-build", action="store_true",
                   help="use target/release/weft as it is if it exists")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install tools")
    p.add_argument("--rt", choices=("client", "all", "none"), default="all",
                   help="SCHED_RR (chrt -r 10) in light-load runs for the client only, "
                        "also for the unit's proxies and upstream (default), or for nothing")
    p.add_argument("--only", default="",
                   help="comma-separated units to run, SYSTEM or SYSTEM:TOPOLOGY or "
                        "KIND:SYSTEM:TOPOLOGY (e.g. weft:mtls, tcp:weft:mtls, direct)")
    p.add_argument("--wait-builds", type=int, default=0,
                   help="wait up to N seconds for running builds (rustc, cc1, cargo) to end")
    p.add_argument("--profile", default="",
                   help="instead of the repetitions: `perf record` the proxies during a "
                        "saturation run of each SYSTEM:TOPOLOGY given (e.g. weft:mtls,haproxy:mtls)")
    p.add_argument("--callgrind", default="",
                   help="instead of the repetitions: instructions per request of the Weft "
                        "sidecars of each weft:TOPOLOGY given, counted by Valgrind's Callgrind "
                        "(steady on a noisy machine; compares builds)")
    p.add_argument("--perf-freq", type=int, default=499,
                   help="samples per second for --profile (default 499)")
    p.add_argument("--write-docs", action="store_true",
                   help="write the figures into docs/benchmarks.md")
    a = p.parse_args(argv)
    a.reps = a.reps or (1 if a.quick else 3)
    a.duration = a.duration or (1.5 if a.quick else 10.0)
    a.warmup = a.warmup if a.warmup is not None else (0.3 if a.quick else 1.5)
    a.systems = [s for s in a.systems.split(",") if s]
    if set(a.systems) - {"nginx", "haproxy", "weft"} or a.reps < 1 or a.duration > 300:
        p.error("bad --systems, --reps or --duration")
    return a


def main(argv):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run needs root: it creates network namespaces and iptables rules in them",
              file=sys.stderr)
        return 2
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = os.path.abspath(args.out or os.path.join(REPO, "target", "bench", stamp))
    os.makedirs(out_dir, exist_ok=True)

    def on_signal(signum, _frame):
        raise Interrupted(f"signal {signum}")
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    if not args.no_install:
        install_tools(bool(args.callgrind))
    weft = ensure_weft(args) if "weft" in args.systems else None
    loadgen = ensure_loadgen()
    if args.wait_builds:
        deadline = time.time() + args.wait_builds
        while builds_running() and time.time() < deadline:
            log(f"waiting for builds to end: {builds_running()}")
            time.sleep(15)

    ncpu = os.cpu_count() or 1
    client_cpu, server_cpu = (0, 1) if ncpu >= 2 else (0, 0)
    res = {
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": dict(machine_info(), loadavg_before=loadavg(), cpu_times_before=cpu_times(),
                        builds_before=builds_running()),
        "config": {"command": "bench/run " + " ".join(argv), "reps": args.reps,
                   "duration_s": args.duration, "warmup_s": args.warmup,
                   "client_cpu": client_cpu, "server_cpu": server_cpu, "rt": args.rt,
                   "systems": args.systems, "quick": args.quick},
        "versions": versions(weft),
        "weft_build": weft_build(weft),
        "runs": [], "failures": [],
    }
    workdir = tempfile.mkdtemp(prefix="weft-bench-")
    os.chmod(workdir, 0o755)
    lab = Lab(workdir, configs.SUBNET, configs.hosts_file())
    code = 0
    try:
        lab.remove_leftovers()
        certs = os.path.join(workdir, "certs")
        plugin_ca = configs.make_certs(certs)
        lab.create_bridge()
        weft_pods = ["cp", "collector"] + [p[0] for p in WEFT_PODS]
        for name in ["client", "server"] + weft_pods:
            if name in weft_pods and "weft" not in args.systems:
                continue
            lab.add_pod(name, configs.HOSTS[name])
        upstreams = {"server": start_upstream(lab, workdir, lab.pods["server"], server_cpu,
                                              True)}
        procs = {}
        if "nginx" in args.systems:
            procs["nginx"] = {
                "A": lab.spawn("nginx-a", lab.pods["client"], ["nginx", "-c", write(
                    f"{workdir}/nginx-a.conf", configs.nginx_a(workdir, certs))], cpu=server_cpu),
                "B": lab.spawn("nginx-b", lab.pods["server"], ["nginx", "-c", write(
                    f"{workdir}/nginx-b.conf", configs.nginx_b(workdir, certs))], cpu=server_cpu),
            }
        if "haproxy" in args.systems:
            procs["haproxy"] = {
                "A": lab.spawn("haproxy-a", lab.pods["client"], ["haproxy", "-db", "-f", write(
                    f"{workdir}/haproxy-a.cfg", configs.haproxy_a(certs))], cpu=server_cpu),
                "B": lab.spawn("haproxy-b", lab.pods["server"], ["haproxy", "-db", "-f", write(
                    f"{workdir}/haproxy-b.cfg", configs.haproxy_b(certs))], cpu=server_cpu),
            }
        if "weft" in args.systems:
            start_collector(lab, workdir, client_cpu)
            for pod in SERVER_PODS:
                upstreams[pod] = None
            cg_dir = None
            if args.callgrind:
                cg_dir = out_dir
                os.chmod(out_dir, 0o777)
            procs["weft"] = start_weft(lab, workdir, weft, plugin_ca, server_cpu, upstreams,
                                       cg_dir)
        time.sleep(1.0)
        for s, ps in procs.items():
            for role, p in ps.items():
                if not p.alive():
                    raise RuntimeError(f"{s} {role} exited:\n{p.tail()}")
        # Idle memory: everything up, nothing sent through the proxies yet.
        rss = {s: {role: {"idle_mb": rss_mb(p)} for role, p in ps.items()}
               for s, ps in procs.items()}
        http, tcp, tls = make_targets(lab, procs, upstreams)
        precheck(lab, http)
        runner = Runner(lab, loadgen, client_cpu, args.duration, args.warmup, args.rt, certs)
        if args.callgrind:
            for spec in args.callgrind.split(","):
                system, _, topo = spec.partition(":")
                if system != "weft" or (system, topo) not in http:
                    raise RuntimeError(f"--callgrind {spec}: no such Weft unit")
                log(f"counting instructions of {system} {topo}")
                callgrind(runner, http[(system, topo)], out_dir, f"{system}-{topo}")
            return 0
        if args.profile:
            for spec in args.profile.split(","):
                system, _, topo = spec.partition(":")
                if (system, topo) not in http:
                    raise RuntimeError(f"--profile {spec}: no such unit")
                log(f"profiling {system} {topo}")
                profile(runner, http[(system, topo)], out_dir, f"{system}-{topo}",
                        args.perf_freq)
            return 0
        units = ([("http", k) for k in http] + [("tcp", k) for k in tcp]
                 + [("tls", (s, "mtls")) for s in tls])
        if args.only:
            wanted = [w.split(":") for w in args.only.split(",") if w]
            units = [u for u in units if any(
                w == [u[1][0]] or w == list(u[1]) or w == [u[0], *u[1]] for w in wanted)]
            if not units:
                raise RuntimeError(f"--only {args.only}: no such unit")
        total = args.reps * len(units)
        done = 0
        for rep in range(args.reps):
            order = units[:]
            random.shuffle(order)
            for kind, (system, topo) in order:
                done += 1
                log(f"rep {rep + 1}/{args.reps} [{done}/{total}] {kind} {system} {topo}")
                target = {"http": http, "tcp": tcp}.get(kind, {}).get((system, topo)) \
                    if kind != "tls" else tls[system]
                try:
                    r = getattr(runner, kind)(target)
                except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                    r = {"error": str(e)}
                why = failed(kind, r) if "error" not in r else r["error"]
                r.update(rep=rep, kind=kind, system=system, topology=topo)
                res["runs"].append(r)
                if why:
                    res["failures"].append(f"rep {rep + 1} {kind} {system} {topo}: {why}")
                    log(f"FAILED: {why}")
            write(os.path.join(out_dir, "results.json"), json.dumps(res, indent=1))
        for s, ps in procs.items():
            for role, p in ps.items():
                rss[s][role]["after_load_mb"] = max(runner.rss_after.get(p.name, 0.0),
                                                    rss_mb(p))
        res["rss"] = rss
        res["machine"]["loadavg_after"] = loadavg()
        res["machine"]["builds_after"] = builds_running()
        t0, s0 = res["machine"]["cpu_times_before"]
        t1, s1 = cpu_times()
        res["machine"]["steal_pct"] = round(100.0 * (s1 - s0) / max(1, t1 - t0), 1)
        res["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M")
        report.add_added_latency(res["runs"])
        res["medians"] = report.medians(res["runs"])
        res["ratios"] = report.ratios(res["runs"], args.reps)
        res["targets"] = report.targets(res["medians"], res["ratios"], rss)
        text = report.markdown(res)
        write(os.path.join(out_dir, "results.json"), json.dumps(res, indent=1))
        write(os.path.join(out_dir, "results.md"), report.header(res) + "\n" + text)
        print(report.header(res) + "\n" + text)
        if args.write_docs and not args.quick and res["failures"]:
            log("docs/benchmarks.md left as it was: units failed (below)")
        elif args.write_docs and not args.quick:
            report.write_docs(os.path.join(REPO, "docs", "benchmarks.md"), res, text)
            log("wrote docs/benchmarks.md")
        if res["failures"]:
            log("units that failed to carry traffic:\n  " + "\n  ".join(res["failures"]))
            code = 1
        log(f"results in {out_dir}")
    except (Interrupted, KeyboardInterrupt) as e:
        log(f"interrupted ({e}); cleaning up")
        code = 130
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        log(f"error: {e}")
        code = 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        # Keep the logs of the systems with the results.
        logs = os.path.join(out_dir, "logs")
        os.makedirs(logs, exist_ok=True)
        lab.close()
        for f in os.listdir(workdir):
            if f.endswith((".log", ".err", ".conf", ".cfg")):
                shutil.copy(os.path.join(workdir, f), logs)
        shutil.rmtree(workdir, ignore_errors=True)
    return code
