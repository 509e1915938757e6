"""Certificates and the configuration files of the systems under test.

Addresses (pods on 10.91.0.0/24, Weft service VIPs on 10.92.0.0/24):
  client  .10  the client of direct/nginx/haproxy, with nginx A and HAProxy A on 127.0.0.1
  server  .20  the upstream (nginx :8080), iperf3 :5201, nginx B and HAProxy B
  cp      .2   weft control
  wclient .30  Weft's client pod (sidecar)
  wplain  .31  Weft server pod, plaintext (PeerAuthentication DISABLE), upstream + sidecar
  wmtls   .32  Weft server pod, STRICT mTLS, upstream + iperf3 + sidecar
  wauthz  .33  Weft server pod, STRICT mTLS and a three-rule ALLOW policy, upstream + sidecar
  wlog    .34  Weft server pod, STRICT mTLS, access log to a file (Telemetry API), upstream + sidecar
  wotel   .35  Weft server pod, STRICT mTLS, OpenTelemetry access log to the collector, upstream
               + sidecar
  wtc1    .36  Weft client pod (sidecar) tracing 1% of requests (OTLP to the collector)
  wtc100  .37  Weft client pod (sidecar) tracing every request
  wtrace  .38  Weft server pod, STRICT mTLS, tracing (following the client's decision), upstream
               + sidecar
  collector .40  the OpenTelemetry Collector (tools/otelcol: OTLP in, debug exporter out)

Ports: upstream 8080, iperf3 5201. nginx A 8101 (1-hop), 8201 (2-hop), 8301 (2-hop mTLS),
5301 (TCP 1 hop), 5303 (TCP mTLS pair); HAProxy A the same +1. nginx B 9101 (plain),
9201 (mTLS), 5203 (TCP mTLS); HAProxy B 9102, 9202, 5204.
"""

import os

from .lab import sh

SUBNET = "10.91.0"
VIPS = "10.92.0"
TRUST_DOMAIN = "cluster.local"
NAMESPACE = "bench"
SERVER_NAME = "server.bench"
HOSTS = {
    "client": 10, "server": 20, "cp": 2, "wclient": 30, "wplain": 31, "wmtls": 32, "wauthz": 33,
    "wlog": 34, "wotel": 35, "wtc1": 36, "wtc100": 37, "wtrace": 38, "collector": 40,
}
WEFT_SERVICES = {"up": 1, "plain": 2, "mtls": 3, "routed": 4, "authz": 5, "logged": 6,
                 "otellog": 7, "traced": 8}
# The collector's service (OTLP over gRPC), and the telemetry units' server and client pods.
COLLECTOR = f"otel-collector.{NAMESPACE}.svc.cluster.local"
SERVER_APPS = ("plain", "mtls", "authz", "logged", "otellog", "traced")


def ip(pod):
    return f"{SUBNET}.{HOSTS[pod]}"


def vip(svc):
    return f"{VIPS}.{WEFT_SERVICES[svc]}"


def fqdn(svc):
    return f"{svc}.{NAMESPACE}.svc.cluster.local"


def hosts_file():
    return "".join(f"{vip(s)} {fqdn(s)} {s}.{NAMESPACE} {s}\n" for s in WEFT_SERVICES)


TEMP_PATHS = "\n".join(
    f"  {k}_temp_path {{d}}/nginx-tmp;"
    for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


# -- certificates ----------------------------------------------------------------------------
def make_certs(d):
    """A P-256 root (also Weft's plug-in CA) and two P-256 leaves signed by it."""
    os.makedirs(d, exist_ok=True)

    def key(name):
        path = os.path.join(d, f"{name}.key")
        sh(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", path])
        return path

    ca_key = key("ca")
    ca = os.path.join(d, "ca.pem")
    sh(["openssl", "req", "-x509", "-new", "-key", ca_key, "-sha256", "-days", "30",
        "-subj", "/O=weft-bench/CN=weft-bench root", "-addext",
        "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", ca])
    for name, san in (
        ("server", f"DNS:{SERVER_NAME},URI:spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/server"),
        ("client", f"DNS:client.bench,URI:spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/client"),
    ):
        k = key(name)
        csr = os.path.join(d, f"{name}.csr")
        ext = os.path.join(d, f"{name}.ext")
        with open(ext, "w") as f:
            f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n")
        sh(["openssl", "req", "-new", "-key", k, "-subj", f"/O=weft-bench/CN={name}",
            "-out", csr])
        pem = os.path.join(d, f"{name}.pem")
        sh(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
            "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "30",
            "-sha256", "-extfile", ext, "-out", pem])
        # HAProxy wants certificate and key in one file.
        with open(os.path.join(d, f"{name}-haproxy.pem"), "w") as out:
            for part in (pem, k):
                with open(part) as f:
                    out.write(f.read())
    # Weft's control plane uses the same root as an Istio plug-in CA.
    plug = os.path.join(d, "weft-ca")
    os.makedirs(plug, exist_ok=True)
    with open(ca) as f:
        ca_pem = f.read()
    with open(ca_key) as f:
        ca_key_pem = f.read()
    for name, text in (("ca-cert.pem", ca_pem), ("root-cert.pem", ca_pem),
                       ("cert-chain.pem", ca_pem), ("ca-key.pem", ca_key_pem)):
        with open(os.path.join(plug, name), "w") as f:
            f.write(text)
    os.chmod(os.path.join(plug, "ca-key.pem"), 0o600)
    return plug


# -- upstream --------------------------------------------------------------------------------
def upstream_nginx(d, name):
    return f"""worker_processes 1;
daemon off;
user root;
pid {d}/{name}.pid;
error_log {d}/{name}.err warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  access_log off;
{TEMP_PATHS.format(d=d)}
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  server {{
    listen 8080 backlog=4096;
    location / {{ default_type text/plain; return 200 "ok"; }}
  }}
}}
"""


# -- nginx -----------------------------------------------------------------------------------
def _nginx_head(d, name):
    return f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
user root;
pid {d}/{name}.pid;
error_log {d}/{name}.err warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
"""


def _nginx_http_common(d):
    return f"""  access_log off;
{TEMP_PATHS.format(d=d)}
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
"""


def nginx_a(d, certs):
    up, b = ip("server"), ip("server")
    tls_client = f"""proxy_ssl_certificate {certs}/client.pem;
      proxy_ssl_certificate_key {certs}/client.key;
      proxy_ssl_trusted_certificate {certs}/ca.pem;
      proxy_ssl_verify on;
      proxy_ssl_verify_depth 2;
      proxy_ssl_name {SERVER_NAME};
      proxy_ssl_server_name on;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_conf_command Groups X25519;"""
    return _nginx_head(d, "nginx-a") + f"""http {{
{_nginx_http_common(d)}
  upstream up {{ server {up}:8080; keepalive 256; keepalive_requests 100000000; }}
  upstream b_plain {{ server {b}:9101; keepalive 256; keepalive_requests 100000000; }}
  upstream b_tls {{ server {b}:9201; keepalive 256; keepalive_requests 100000000; }}
  server {{ listen 127.0.0.1:8101 backlog=4096; location / {{ proxy_pass http://up; }} }}
  server {{ listen 127.0.0.1:8201 backlog=4096; location / {{ proxy_pass http://b_plain; }} }}
  server {{
    listen 127.0.0.1:8301 backlog=4096;
    location / {{
      proxy_pass https://b_tls;
      {tls_client}
    }}
  }}
}}
stream {{
  server {{ listen 127.0.0.1:5301; proxy_pass {up}:5201; }}
  server {{
    listen 127.0.0.1:5303;
    proxy_pass {b}:5203;
    proxy_ssl on;
    {tls_client}
  }}
}}
"""


def nginx_b(d, certs):
    tls_server = f"""ssl_certificate {certs}/server.pem;
    ssl_certificate_key {certs}/server.key;
    ssl_client_certificate {certs}/ca.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_protocols TLSv1.3;
    ssl_ecdh_curve X25519;"""
    return _nginx_head(d, "nginx-b") + f"""http {{
{_nginx_http_common(d)}
  upstream app {{ server 127.0.0.1:8080; keepalive 256; keepalive_requests 100000000; }}
  server {{ listen 9101 backlog=4096; location / {{ proxy_pass http://app; }} }}
  server {{
    listen 9201 ssl backlog=4096;
    {tls_server}
    location / {{ proxy_pass http://app; }}
  }}
}}
stream {{
  server {{
    listen 5203 ssl;
    {tls_server}
    proxy_pass 127.0.0.1:5201;
  }}
}}
"""


# -- HAProxy ---------------------------------------------------------------------------------
def _haproxy_head():
    return """global
  nbthread 1
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-options ssl-min-ver TLSv1.3
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 600s
  timeout tunnel 600s
"""


def haproxy_a(certs):
    up, b = ip("server"), ip("server")
    tls = (f"ssl crt {certs}/client-haproxy.pem ca-file {certs}/ca.pem verify required "
           f"sni str({SERVER_NAME}) verifyhost {SERVER_NAME}")
    return _haproxy_head() + f"""frontend h1
  bind 127.0.0.1:8102
  default_backend up
backend up
  server s {up}:8080
frontend h2
  bind 127.0.0.1:8202
  default_backend b_plain
backend b_plain
  server s {b}:9102
frontend h3
  bind 127.0.0.1:8302
  default_backend b_tls
backend b_tls
  server s {b}:9202 {tls}
listen t1
  mode tcp
  bind 127.0.0.1:5302
  server s {up}:5201
listen t3
  mode tcp
  bind 127.0.0.1:5304
  server s {b}:5204 {tls}
"""


def haproxy_b(certs):
    tls = (f"ssl crt {certs}/server-haproxy.pem ca-file {certs}/ca.pem verify required "
           "curves X25519")
    return _haproxy_head() + f"""frontend plain
  bind :9102
  default_backend app
frontend tls
  bind :9202 {tls}
  default_backend app
backend app
  server s 127.0.0.1:8080
listen t3
  mode tcp
  bind :5204 {tls}
  server s 127.0.0.1:5201
"""


# -- Weft ------------------------------------------------------------------------------------
def weft_config():
    """Istio YAML for the bench mesh: (file name, text) pairs."""
    files = []
    se = []
    for svc in WEFT_SERVICES:
        se.append(f"""apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: {svc}
  namespace: {NAMESPACE}
spec:
  hosts: [{fqdn(svc)}]
  addresses: [{vip(svc)}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 8080, name: http, protocol: HTTP}}
  - {{number: 5201, name: tcp-iperf, protocol: TCP}}
  workloadSelector:
    labels: {{app: {"mtls" if svc == "routed" else svc}}}
""")
    files.append(("services.yaml", "---\n".join(se)))
    # `routed` is served by the mtls pod too, through a VirtualService whose request is the
    # last of ten matches, with a retry policy and a weighted split (issue 9's bench unit).
    misses = "".join(
        f"  - match: [{{headers: {{x-bench-{i}: {{exact: \"no\"}}}}, uri: {{prefix: /api/{i}}}}}]\n"
        f"    route: [{{destination: {{host: {fqdn('mtls')}}}}}]\n"
        for i in range(9))
    files.append(("routed.yaml", f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: routed
  namespace: {NAMESPACE}
spec:
  host: {fqdn('routed')}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: routed
  namespace: {NAMESPACE}
spec:
  hosts: [{fqdn('routed')}]
  http:
{misses}  - match: [{{uri: {{prefix: /}}}}]
    retries: {{attempts: 2, retryOn: "5xx,connect-failure", perTryTimeout: 2s}}
    timeout: 10s
    route:
    - {{destination: {{host: {fqdn('routed')}, subset: v1}}, weight: 50}}
    - {{destination: {{host: {fqdn('mtls')}}}, weight: 50}}
"""))
    # `up` is the shared upstream pod, without a sidecar: the client sidecar alone is one hop.
    # `plain` runs a sidecar but takes plaintext: tlsMode disabled (the client sidecar sends
    # plaintext) and PeerAuthentication DISABLE (its inbound accepts only plaintext).
    workloads = [
        ("up", "server", "up", 'annotations: {"sidecar.istio.io/inject": "false"}', ""),
        ("plain", "wplain", "plain", "", ', "security.istio.io/tlsMode": "disabled"'),
        ("mtls", "wmtls", "mtls", "", ""),
        ("authz", "wauthz", "authz", "", ""),
        ("logged", "wlog", "logged", "", ""),
        ("otellog", "wotel", "otellog", "", ""),
        ("traced", "wtrace", "traced", "", ""),
        ("client", "wclient", "client", "", ""),
        ("tclient1", "wtc1", "tclient1", "", ""),
        ("tclient100", "wtc100", "tclient100", "", ""),
        ("otel-collector", "collector", "otel-collector",
         'annotations: {"sidecar.istio.io/inject": "false"}', ""),
    ]
    we = []
    for name, pod, app, annotations, extra_labels in workloads:
        we.append(f"""apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata:
  name: {name}
  namespace: {NAMESPACE}
  {annotations}
spec:
  address: {ip(pod)}
  labels: {{app: {app}, version: v1{extra_labels}}}
  serviceAccount: {"server" if app in SERVER_APPS else app}
""")
    files.append(("workloads.yaml", "---\n".join(we)))
    # `authz` (issue 10's bench unit): a realistic ALLOW policy of three rules on the server
    # sidecar; the request matches the last one (principal, methods, paths, port, a header
    # condition).
    # `logged` (issue 12's bench unit): the server sidecar writes Istio's TEXT access log to a
    # file through the Telemetry API.
    files.append(("logged.yaml", f"""apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: logged
  namespace: {NAMESPACE}
spec:
  selector:
    matchLabels: {{app: logged}}
  accessLogging:
  - providers: [{{name: file-log}}]
"""))
    # `otellog` and `trace1`/`trace100` (issue 12's bench units): the server sidecar sends its
    # access log to the OpenTelemetry Collector; a client sidecar traces 1% or every request,
    # its server sidecar following the decision, spans exported over OTLP to the collector.
    files.append(("otel.yaml", f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: otel-collector
  namespace: {NAMESPACE}
spec:
  hosts: [{COLLECTOR}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 4317, name: grpc-otlp, protocol: GRPC}}
  workloadSelector:
    labels: {{app: otel-collector}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: otellog
  namespace: {NAMESPACE}
spec:
  selector:
    matchLabels: {{app: otellog}}
  accessLogging:
  - providers: [{{name: otel}}]
""" + "".join(f"""---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: {app}
  namespace: {NAMESPACE}
spec:
  selector:
    matchLabels: {{app: {app}}}
  tracing:
  - providers: [{{name: otel-tracing}}]
    randomSamplingPercentage: {pct}
""" for app, pct in (("tclient1", 1), ("tclient100", 100), ("traced", 100)))))
    files.append(("authz.yaml", f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: authz
  namespace: {NAMESPACE}
spec:
  selector:
    matchLabels: {{app: authz}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: ["{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/admin"]}}}}]
    to: [{{operation: {{methods: ["DELETE", "PUT"]}}}}]
  - from: [{{source: {{namespaces: ["ops"]}}}}]
    to: [{{operation: {{paths: ["/admin/*", "/debug/*"]}}}}]
  - from: [{{source: {{principals: ["{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/client"]}}}}]
    to: [{{operation: {{methods: ["GET", "HEAD"], paths: ["/*"], ports: ["8080"]}}}}]
    when: [{{key: request.headers[user-agent], notValues: ["blocked*"]}}]
"""))
    files.append(("peerauthentication.yaml", f"""apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: plain
  namespace: {NAMESPACE}
spec:
  selector: {{matchLabels: {{app: plain}}}}
  mtls: {{mode: DISABLE}}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: mtls
  namespace: {NAMESPACE}
spec:
  selector: {{matchLabels: {{app: mtls}}}}
  mtls: {{mode: STRICT}}
"""))
    return files


def weft_mesh_config(d):
    """The bench mesh's MeshConfig: the `file-log` provider writes into the run's directory."""
    return (f"trustDomain: {TRUST_DOMAIN}\n"
            "extensionProviders:\n"
            "- name: file-log\n"
            f"  envoyFileAccessLog: {{path: {d}/weft-access.log}}\n"
            "- name: otel\n"
            f"  envoyOtelAls: {{service: {COLLECTOR}, port: 4317}}\n"
            "- name: otel-tracing\n"
            f"  opentelemetry: {{service: {COLLECTOR}, port: 4317}}\n")


def collector_config():
    """The collector: OTLP over gRPC in, logs and traces counted by the debug exporter."""
    return ("receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:4317\n"
            "exporters:\n  debug:\n    verbosity: basic\n"
            "service:\n  telemetry:\n    metrics:\n      level: none\n"
            "  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [debug]\n"
            "    traces:\n      receivers: [otlp]\n      exporters: [debug]\n")
