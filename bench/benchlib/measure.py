"""One measurement unit: a load against one system in one topology, with the proxies' CPU.

Clients run pinned to the client CPU; proxies and upstreams were started pinned to the
server CPU. Light-load runs (one connection, fixed rates) run the client under SCHED_RR
(bench.md: `chrt -r 10` on a busy machine); with rt="all" the unit's proxies and upstream are
switched to SCHED_RR for their duration too, with rt="none" nothing is.
"""

import json
import os

from .lab import cpu_seconds, cpu_split, rss_mb, sh

HERE = os.path.dirname(os.path.abspath(__file__))
WRK_SCRIPT = os.path.join(HERE, "wrk_report.lua")
RATES = (1000, 4000)
RATE_CONNS = 8


def _last_json(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON report in output")


def _set_rt(procs, on):
    for p in procs:
        for pid in p.pids():
            policy = ["-r", "-p", "10"] if on else ["-o", "-p", "0"]
            sh(["chrt", "-a"] + policy + [str(pid)], check=False)


class Runner:
    def __init__(self, lab, loadgen, client_cpu, duration, warmup, rt, certs):
        self.lab = lab
        self.loadgen = loadgen
        self.cpu = client_cpu
        self.duration = duration
        self.warmup = warmup
        self.rt = rt
        self.certs = certs
        self.rss_after = {}  # proc name -> max MB seen after a saturation run

    # -- helpers ---------------------------------------------------------------------------
    def _timeout(self):
        return self.duration + self.warmup + 60

    def _wrk(self, target, seconds, script):
        argv = ["wrk", "-t1", "-c64", f"-d{max(1, round(seconds))}s", "--timeout", "5s"]
        if script:
            argv += ["-s", WRK_SCRIPT]
        argv.append(f"http://{target['connect']}/")
        out = self.lab.exec(target["pod"], argv, cpu=self.cpu, timeout=seconds + 60)
        if out.returncode != 0:
            raise RuntimeError(f"wrk failed: {out.stderr.strip()}")
        return _last_json(out.stdout) if script else None

    def _loadgen_http(self, target, rate, conns):
        argv = [self.loadgen, "http", "--connect", target["connect"], "--host",
                target["connect"], "--rate", str(rate), "--conns", str(conns),
                "--duration", str(self.duration), "--warmup", str(self.warmup)]
        out = self.lab.exec(target["pod"], argv, cpu=self.cpu, rt=self.rt != "none",
                            timeout=self._timeout())
        if out.returncode != 0:
            raise RuntimeError(f"loadgen failed: {out.stderr.strip()}")
        return _last_json(out.stdout)

    def http_closed(self, target, conns, seconds):
        """loadgen's closed loop without a warm-up: each connection's last response is in
        before it closes (no request cut off, unlike wrk's end); its JSON."""
        argv = [self.loadgen, "http", "--connect", target["connect"], "--host",
                target["connect"], "--rate", "0", "--conns", str(conns), "--duration",
                str(seconds), "--warmup", "0"]
        out = self.lab.exec(target["pod"], argv, cpu=self.cpu, timeout=seconds + 120)
        if out.returncode != 0:
            raise RuntimeError(f"loadgen failed: {out.stderr.strip()}")
        return _last_json(out.stdout)

    def _tcp_counters(self, pod):
        """A pod namespace's TCP counters so far (/proc/net/snmp `Tcp:` rows)."""
        out = self.lab.exec(pod, ["cat", "/proc/net/snmp"])
        rows = [line.split() for line in out.stdout.splitlines() if line.startswith("Tcp:")]
        if len(rows) < 2:
            return {}
        return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:]) if v.lstrip("-").isdigit()}

    def _segments_out(self):
        """TCP segments sent so far in all the lab's pods (loopback and bridge alike)."""
        return sum(self._tcp_counters(p).get("OutSegs", 0) for p in self.lab.pods.values())

    # -- units -----------------------------------------------------------------------------
    def http_saturation(self, target):
        """wrk -t1 -c64 after a warm-up: req/s, latency, proxy CPU, connections opened."""
        proxies = target["proxies"]
        r = {}
        self._wrk(target, self.warmup, script=False)
        s0 = self._segments_out()
        u0, k0 = cpu_split(proxies)
        o0 = self._tcp_counters(target["pod"]).get("ActiveOpens", 0)
        w = self._wrk(target, self.duration, script=True)
        o1 = self._tcp_counters(target["pod"]).get("ActiveOpens", 0)
        u1, k1 = cpu_split(proxies)
        s1 = self._segments_out()
        c0, c1 = u0 + k0, u1 + k1
        secs = w["duration_us"] / 1e6
        errors = (w["connect_errors"] + w["read_errors"] + w["write_errors"]
                  + w["status_errors"] + w["timeouts"])
        r["sat_requests"] = w["requests"]
        r["sat_errors"] = errors
        r["sat_rps"] = w["requests"] / secs if secs else 0.0
        r["sat_p50_us"] = w["p50_us"]
        r["sat_p99_us"] = w["p99_us"]
        # Beyond wrk's own 64: the client-side proxy's new upstream connections.
        r["sat_upstream_conns_opened"] = max(0, o1 - o0 - 64)
        # Every hop's segments (requests, responses, bare ACKs) per request, client included.
        if w["requests"]:
            r["sat_tcp_segments_per_req"] = (s1 - s0) / w["requests"]
        if proxies and w["requests"]:
            r["sat_cpu_us_per_req"] = (c1 - c0) * 1e6 / w["requests"]
            r["sat_cpu_util"] = (c1 - c0) / secs if secs else 0.0
            # The kernel's share (stime), from the scheduler's tick accounting.
            r["sat_cpu_sys_us_per_req"] = (k1 - k0) * 1e6 / w["requests"]
        for p in proxies:
            self.rss_after[p.name] = max(self.rss_after.get(p.name, 0.0), rss_mb(p))
        return r

    def http(self, target):
        """Saturation (wrk -t1 -c64), one connection, and the fixed rates; one dict."""
        proxies = target["proxies"]
        r = self.http_saturation(target)
        rt_procs = proxies + target.get("upstream", [])
        if self.rt == "all":
            _set_rt(rt_procs, True)
        try:
            g = self._loadgen_http(target, 0, 1)
            r["c1_rps"] = g["per_s"]
            r["c1_errors"] = g["errors"] + g["non2xx"]
            r["c1_ok"] = g["ok"]
            for p in ("p50", "p90", "p99"):
                r[f"c1_{p}_us"] = g[f"{p}_us"]
            for rate in RATES:
                c0 = cpu_seconds(proxies)
                g = self._loadgen_http(target, rate, RATE_CONNS)
                c1 = cpu_seconds(proxies)
                k = f"r{rate}"
                r[f"{k}_ok"] = g["ok"]
                r[f"{k}_errors"] = g["errors"] + g["non2xx"]
                r[f"{k}_rps"] = g["per_s"]
                r[f"{k}_missed"] = g.get("missed", 0)
                for p in ("p50", "p90", "p99", "p999"):
                    r[f"{k}_{p}_us"] = g[f"{p}_us"]
                if proxies and g["done_total"]:
                    r[f"{k}_cpu_us_per_req"] = (c1 - c0) * 1e6 / g["done_total"]
        finally:
            if self.rt == "all":
                _set_rt(rt_procs, False)
        return r

    def tcp(self, target):
        """One iperf3 stream for `duration` seconds (first second omitted)."""
        proxies = target["proxies"]
        secs = max(1, round(self.duration))
        omit = 1 if self.duration >= 5 else 0
        argv = ["iperf3", "-c", target["host"], "-p", str(target["port"]), "-t", str(secs),
                "-O", str(omit), "-J"]
        c0 = cpu_seconds(proxies)
        out = self.lab.exec(target["pod"], argv, cpu=self.cpu, timeout=secs + 60)
        c1 = cpu_seconds(proxies)
        try:
            j = json.loads(out.stdout)
        except ValueError:
            j = {"error": (out.stderr or out.stdout).strip()[:300]}
        if "error" in j:
            return {"gbps": 0.0, "error": j["error"]}
        end = j["end"]
        r = {"gbps": end["sum_received"]["bits_per_second"] / 1e9,
             "retransmits": end.get("sum_sent", {}).get("retransmits", 0)}
        if proxies:
            r["cpu_util"] = (c1 - c0) / (secs + omit)
        return r

    def tls(self, target):
        """New mTLS connections against the server-side proxy; its CPU per handshake."""
        server = target["server"]
        argv = [self.loadgen, "tls", "--connect", target["connect"], "--cert",
                f"{self.certs}/client.pem", "--key", f"{self.certs}/client.key", "--ca",
                f"{self.certs}/ca.pem", "--sni", target["sni"], "--alpn", target["alpn"],
                "--host", target["host"], "--path", "/", "--conns", "4",
                "--duration", str(self.duration)]
        c0 = cpu_seconds([server])
        out = self.lab.exec(target["pod"], argv, cpu=self.cpu, timeout=self._timeout())
        c1 = cpu_seconds([server])
        if out.returncode != 0:
            raise RuntimeError(f"loadgen tls failed: {out.stderr.strip()}")
        g = _last_json(out.stdout)
        r = {"hs_per_s": g["per_s"], "hs_ok": g["done_total"], "hs_errors": g["errors"],
             "hs_p50_us": g["p50_us"], "hs_p99_us": g["p99_us"]}
        if g["errors"]:
            r["stderr"] = out.stderr.strip()[-300:]
        if g["done_total"]:
            r["server_cpu_ms_per_hs"] = (c1 - c0) * 1e3 / g["done_total"]
            r["server_cpu_util"] = (c1 - c0) / self.duration
        return r


def failed(kind, r):
    """Why a unit did not carry traffic (or carried it badly), or None."""
    if kind == "http":
        if not r.get("sat_requests"):
            return "no request succeeded at saturation"
        if r.get("sat_errors", 0) > 0.01 * r["sat_requests"]:
            return f"{r['sat_errors']} errors of {r['sat_requests']} requests at saturation"
        for k in ("c1", "r1000", "r4000"):
            ok, err = r.get(f"{k}_ok", 0), r.get(f"{k}_errors", 0)
            if not ok:
                return f"no request succeeded in the {k} run"
            if err > 0.01 * (ok + err):
                return f"{err} errors in the {k} run"
    elif kind == "tcp":
        if not r.get("gbps"):
            return f"no TCP throughput ({r.get('error', 'iperf3 gave nothing')})"
    elif kind == "tls":
        if not r.get("hs_ok"):
            return f"no mTLS handshake succeeded ({r.get('stderr', '')})"
        if r.get("hs_errors", 0) > 0.01 * r["hs_ok"]:
            return f"{r['hs_errors']} failed handshakes"
    return None
