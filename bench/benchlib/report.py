"""Medians, per-repetition ratios, the issue's targets, and the markdown report."""

import re
import statistics

SYSTEMS = ("nginx", "haproxy", "weft")
NAMES = {"direct": "direct", "nginx": "nginx", "haproxy": "HAProxy", "weft": "Weft"}
TOPOS = {"direct": "direct", "1hop": "1-hop", "2hop": "2-hop", "mtls": "2-hop mTLS",
         "routed": "2-hop mTLS, routed", "authz": "2-hop mTLS, ALLOW policy",
         "logged": "2-hop mTLS, server access log",
         "otellog": "2-hop mTLS, server OpenTelemetry access log",
         "trace1": "2-hop mTLS, tracing 1%", "trace100": "2-hop mTLS, tracing 100%"}
HOPS = {"direct": 0, "1hop": 1, "2hop": 2, "mtls": 2, "routed": 2, "authz": 2, "logged": 2,
        "otellog": 2, "trace1": 2, "trace100": 2}
# Weft's routed path (a VirtualService with ten matches, retries and a weighted split) is
# compared with the peers' plain mTLS pair: the peers route nothing there.
# Likewise its authz path (a three-rule ALLOW AuthorizationPolicy on the server sidecar).
PEER_TOPO = {"routed": "mtls", "authz": "mtls", "logged": "mtls", "otellog": "mtls",
             "trace1": "mtls", "trace100": "mtls"}
WEFT_TOPOS = ("1hop", "2hop", "mtls", "routed", "authz", "logged", "otellog", "trace1",
              "trace100")
LAT_KEYS = ("c1_p50_us", "c1_p99_us", "r1000_p50_us", "r1000_p99_us", "r4000_p50_us",
            "r4000_p99_us")
HTTP_RATIO_KEYS = ("sat_rps", "sat_cpu_us_per_req", "r1000_cpu_us_per_req",
                   "r4000_cpu_us_per_req", "c1_p50_us", "c1_p99_us", "added_c1_p50_us",
                   "added_c1_p99_us", "added_r1000_p99_us", "added_r4000_p99_us")


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def add_added_latency(runs):
    """Adds added_<key> (path minus direct, same repetition) and its per-hop share."""
    direct = {r["rep"]: r for r in runs if r["kind"] == "http" and r["system"] == "direct"}
    for r in runs:
        if r["kind"] != "http" or r["system"] == "direct" or r["rep"] not in direct:
            continue
        d = direct[r["rep"]]
        for k in LAT_KEYS:
            if r.get(k) is not None and d.get(k) is not None:
                r[f"added_{k}"] = r[k] - d[k]
                r[f"added_{k}_per_hop"] = (r[k] - d[k]) / HOPS[r["topology"]]


def medians(runs):
    groups = {}
    for r in runs:
        groups.setdefault((r["kind"], r["system"], r["topology"]), []).append(r)
    out = {}
    for (kind, system, topo), rs in groups.items():
        keys = {k for r in rs for k, v in r.items() if isinstance(v, (int, float))
                and k != "rep"}
        out.setdefault(kind, {}).setdefault(system, {})[topo] = {
            k: median([r.get(k) for r in rs]) for k in sorted(keys)}
    return out


def ratios(runs, reps):
    """Medians over repetitions of Weft/peer for each metric, topology and peer."""
    index = {(r["rep"], r["kind"], r["system"], r["topology"]): r for r in runs}
    plan = [("http", t, k) for t in WEFT_TOPOS for k in HTTP_RATIO_KEYS]
    plan += [("tcp", t, "gbps") for t in ("1hop", "mtls")]
    plan += [("tls", "mtls", k) for k in ("server_cpu_ms_per_hs", "hs_per_s")]
    out = {}
    for peer in ("haproxy", "nginx"):
        for kind, topo, key in plan:
            per_rep = []
            for rep in range(reps):
                w = index.get((rep, kind, "weft", topo), {}).get(key)
                p = index.get((rep, kind, peer, PEER_TOPO.get(topo, topo)), {}).get(key)
                if w is not None and p is not None and p > 0 and (
                        not key.startswith("added_") or (w > 0 and p > 0)):
                    per_rep.append(w / p)
            if per_rep:
                out.setdefault(peer, {}).setdefault(topo, {})[key] = median(per_rep)
    # TCP against direct.
    for topo in ("1hop", "mtls"):
        for system in SYSTEMS:
            per_rep = []
            for rep in range(reps):
                s = index.get((rep, "tcp", system, topo), {}).get("gbps")
                d = index.get((rep, "tcp", "direct", "direct"), {}).get("gbps")
                if s and d:
                    per_rep.append(s / d)
            if per_rep:
                out.setdefault("tcp_vs_direct", {}).setdefault(system, {})[topo] = \
                    median(per_rep)
    return out


def targets(med, rat, rss):
    """The issue's targets for Weft: list of (text, value text, met or None)."""
    t = []
    r = rat.get("haproxy", {}).get("mtls", {}).get("sat_cpu_us_per_req")
    t.append(("sidecar pair CPU µs/request ≤ 0.8× HAProxy 2-hop mTLS (saturation)",
              _fmt_ratio(r), None if r is None else r <= 0.8))
    w = _get(med, "http", "weft", "mtls", "added_r1000_p99_us")
    h = _get(med, "http", "haproxy", "mtls", "added_r1000_p99_us")
    t.append(("added p99 at 1000 req/s (mTLS pair) ≤ HAProxy's",
              f"{_fmt(w)} µs vs {_fmt(h)} µs",
              None if w is None or h is None else w <= h))
    idle = [v["idle_mb"] for v in rss.get("weft", {}).values() if v.get("idle_mb")]
    m = max(idle) if idle else None
    t.append(("idle proxy RSS ≤ 10 MB", f"{_fmt(m, 1)} MB (largest Weft proxy)",
              None if m is None else m <= 10))
    r = rat.get("tcp_vs_direct", {}).get("weft", {}).get("mtls")
    t.append(("TCP through the mTLS pair ≥ 0.4× direct", _fmt_ratio(r),
              None if r is None else r >= 0.4))
    v = _get(med, "tls", "weft", "mtls", "server_cpu_ms_per_hs")
    t.append(("server CPU per mTLS handshake ≤ 0.5 ms", f"{_fmt(v, 2)} ms",
              None if v is None else v <= 0.5))
    return t


def _get(med, kind, system, topo, key):
    return med.get(kind, {}).get(system, {}).get(topo, {}).get(key)


def _fmt(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{digits}f}"


def _fmt_ratio(v):
    return "–" if v is None else f"{v:.2f}×"


def _behind(g, rate):
    """A note when the system could not hold the rate (open loop fell behind)."""
    got = g(f"r{rate}_rps")
    if got is None or got >= 0.95 * rate:
        return ""
    return f" (held only {_fmt(got)} req/s)"


def _pair(a, b, digits=0):
    return f"{_fmt(a, digits)} / {_fmt(b, digits)}"


def markdown(res):
    med, rat, rss = res["medians"], res["ratios"], res["rss"]
    lines = []
    http_rows = [("direct", "direct")] + [(s, t) for t in WEFT_TOPOS
                                           for s in SYSTEMS]
    http_rows = [(s, t) for s, t in http_rows if _get(med, "http", s, t, "sat_rps") is not None]

    lines.append("#### Throughput and proxy CPU (sum of the proxies on the path)\n")
    lines.append("| topology | system | req/s (wrk -t1 -c64) | CPU µs/req at saturation "
                 "| CPU µs/req at 1000 req/s | CPU µs/req at 4000 req/s "
                 "| TCP segments/req at saturation |")
    lines.append("|---|---|---:|---:|---:|---:|---:|")
    for s, t in http_rows:
        g = lambda k: _get(med, "http", s, t, k)  # noqa: E731
        lines.append(f"| {TOPOS[t]} | {NAMES[s]} | {_fmt(g('sat_rps'))} | "
                     f"{_fmt(g('sat_cpu_us_per_req'), 1)} | "
                     f"{_fmt(g('r1000_cpu_us_per_req'), 1)} | "
                     f"{_fmt(g('r4000_cpu_us_per_req'), 1)} | "
                     f"{_fmt(g('sat_tcp_segments_per_req'), 1)} |")

    lines.append("\n#### Latency (µs; open loop with latency correction at fixed rates)\n")
    lines.append("A system that cannot hold a rate is marked; its latency then mostly measures "
                 "the queue that builds during the run.\n")
    lines.append("| topology | system | 1 conn p50 / p90 / p99 | added per hop, 1 conn p50 / p99 "
                 "| 1000 req/s p50 / p99 | added (path) at 1000 req/s p50 / p99 "
                 "| 4000 req/s p50 / p99 | added (path) at 4000 req/s p50 / p99 |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for s, t in http_rows:
        g = lambda k: _get(med, "http", s, t, k)  # noqa: E731
        c1 = f"{_fmt(g('c1_p50_us'))} / {_fmt(g('c1_p90_us'))} / {_fmt(g('c1_p99_us'))}"
        lines.append(
            f"| {TOPOS[t]} | {NAMES[s]} | {c1} | "
            f"{_pair(g('added_c1_p50_us_per_hop'), g('added_c1_p99_us_per_hop'))} | "
            f"{_pair(g('r1000_p50_us'), g('r1000_p99_us'))}{_behind(g, 1000)} | "
            f"{_pair(g('added_r1000_p50_us'), g('added_r1000_p99_us'))} | "
            f"{_pair(g('r4000_p50_us'), g('r4000_p99_us'))}{_behind(g, 4000)} | "
            f"{_pair(g('added_r4000_p50_us'), g('added_r4000_p99_us'))} |")

    lines.append("\n#### TCP, one iperf3 stream\n")
    lines.append("| path | system | Gbit/s | × direct | proxy CPU (cores) |")
    lines.append("|---|---|---:|---:|---:|")
    tcp_rows = [("direct", "direct")] + [(s, t) for t in ("1hop", "mtls") for s in SYSTEMS]
    for s, t in tcp_rows:
        g = _get(med, "tcp", s, t, "gbps")
        if g is None:
            continue
        path = {"direct": "direct", "1hop": "one hop", "mtls": "mTLS pair"}[t]
        x = rat.get("tcp_vs_direct", {}).get(s, {}).get(t)
        lines.append(f"| {path} | {NAMES[s]} | {_fmt(g, 1)} | "
                     f"{'–' if s == 'direct' else _fmt_ratio(x)} | "
                     f"{_fmt(_get(med, 'tcp', s, t, 'cpu_util'), 2)} |")

    lines.append("\n#### New mTLS connections (full TLS 1.3 handshake + one request, "
                 "4 concurrent clients, against the server-side proxy)\n")
    lines.append("| system | handshakes/s | server CPU ms/handshake | client-side handshake "
                 "p50 µs |")
    lines.append("|---|---:|---:|---:|")
    for s in SYSTEMS:
        g = lambda k: _get(med, "tls", s, "mtls", k)  # noqa: E731
        if g("hs_per_s") is None:
            continue
        lines.append(f"| {NAMES[s]} | {_fmt(g('hs_per_s'))} | "
                     f"{_fmt(g('server_cpu_ms_per_hs'), 3)} | {_fmt(g('hs_p50_us'))} |")

    lines.append("\n#### Memory (VmRSS MB; nginx = master + worker)\n")
    lines.append("| system | proxy | idle | after load (max) |")
    lines.append("|---|---|---:|---:|")
    for s in SYSTEMS:
        for name, v in sorted(rss.get(s, {}).items()):
            lines.append(f"| {NAMES[s]} | {name} | {_fmt(v.get('idle_mb'), 1)} | "
                         f"{_fmt(v.get('after_load_mb'), 1)} |")

    lines.append("\n#### Weft / peer (medians of per-repetition ratios)\n")
    lines.append("| metric | topology | Weft/HAProxy | Weft/nginx |")
    lines.append("|---|---|---:|---:|")
    labels = {
        "sat_rps": "req/s at saturation", "sat_cpu_us_per_req": "CPU µs/req at saturation",
        "r1000_cpu_us_per_req": "CPU µs/req at 1000 req/s",
        "r4000_cpu_us_per_req": "CPU µs/req at 4000 req/s", "c1_p50_us": "1 conn p50",
        "c1_p99_us": "1 conn p99", "added_c1_p50_us": "added p50, 1 conn",
        "added_c1_p99_us": "added p99, 1 conn", "added_r1000_p99_us": "added p99 at 1000 req/s",
        "added_r4000_p99_us": "added p99 at 4000 req/s", "gbps": "TCP Gbit/s",
        "server_cpu_ms_per_hs": "server CPU per handshake", "hs_per_s": "handshakes/s",
    }
    for key, label in labels.items():
        for t in WEFT_TOPOS:
            h = rat.get("haproxy", {}).get(t, {}).get(key)
            n = rat.get("nginx", {}).get(t, {}).get(key)
            if h is None and n is None:
                continue
            lines.append(f"| {label} | {TOPOS[t]} | {_fmt_ratio(h)} | {_fmt_ratio(n)} |")
    # The peers' two proxies against Weft's mTLS pair (its other pods serve other units).
    pair = {"weft": ("wclient", "wmtls")}
    for label, key in (("RSS idle, the mTLS pair", "idle_mb"),
                       ("RSS after load, the mTLS pair", "after_load_mb")):
        tot = {s: sum(v.get(key) or 0 for role, v in rss.get(s, {}).items()
                      if s not in pair or role in pair[s])
               for s in SYSTEMS}
        if tot.get("weft") and tot.get("haproxy") and tot.get("nginx"):
            lines.append(f"| {label} | – | {tot['weft'] / tot['haproxy']:.2f}× | "
                         f"{tot['weft'] / tot['nginx']:.2f}× |")

    lines.append("\n#### Weft's targets (issue 4)\n")
    lines.append("| target | measured | |")
    lines.append("|---|---|---|")
    for text, value, met in res["targets"]:
        mark = "–" if met is None else ("met" if met else "**missed**")
        lines.append(f"| {text} | {value} | {mark} |")
    return "\n".join(lines) + "\n"


def header(res):
    m = res["machine"]
    c = res["config"]
    v = res["versions"]
    return (
        f"Run {res['started']} – {res['finished']} (UTC), `{c['command']}`: {c['reps']} "
        f"repetitions of {c['duration_s']} s per load after {c['warmup_s']} s warm-up, "
        f"systems shuffled in each repetition, client on CPU {c['client_cpu']}, everything else "
        f"on CPU {c['server_cpu']}, SCHED_RR in light-load runs for: "
        f"{ {'client': 'the client', 'all': 'client, proxies and upstream', 'none': 'nothing', True: 'client, proxies and upstream'}.get(c['rt'], c['rt'])}.\n\n"
        f"Machine: {m['nproc']} × {m['model']}, kernel {m['kernel']}; load average "
        f"{m['loadavg_before']} before, {m['loadavg_after']} after; CPU steal during the run "
        f"{m.get('steal_pct', '?')}%; builds running at start: "
        f"{m['builds_before'] or 'none'}, at end: {m['builds_after'] or 'none'}.\n\n"
        f"Versions: {'; '.join(f'{k} {val}' for k, val in v.items())}.\n"
        + (f"\nWeft: `{b['binary']}` built {b['built']} at commit {b['commit']}"
           f"{' (with uncommitted changes under crates/)' if b['uncommitted_changes_in_crates'] else ''}.\n"
           if (b := res.get("weft_build")) else ""))


def write_docs(path, res, text):
    """Replaces the generated section of docs/benchmarks.md."""
    with open(path) as f:
        doc = f.read()
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    body = f"{begin}\n{header(res)}\n{text}{end}"
    if begin in doc and end in doc:
        doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: body, doc,
                     flags=re.S)
    else:
        doc += "\n## Latest figures\n\n" + body + "\n"
    with open(path, "w") as f:
        f.write(doc)
