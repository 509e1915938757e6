"""Test workloads for Weft's end-to-end tests.

server: HTTP/1.1 echo on 8080 (JSON with pod, path and headers; /status/<code>,
        /delay/<seconds>, /upload reads the whole body first),
        TCP echo on 9000, gRPC echo (service test.Echo/Say, raw bytes) on 50051. The gRPC
        echo fails with the status named by metadata `x-fail` (e.g. UNAVAILABLE) and sleeps
        `x-sleep` seconds first; the HTTP answers count the gRPC calls served (`grpc_calls`).
grpc-call HOST:PORT: one unary call through the mesh (prints the reply).
xds-call TARGET: one unary call through gRPC's xDS resolver (GRPC_XDS_BOOTSTRAP must be set).
xds-calls TARGET N [--interval S] [--deadline S] [--cycle K] [KEY=VALUE ...]: N unary calls on
        one channel through the xDS resolver, with the metadata given (`{k}` in a value is the
        call's index modulo K, so K users can take turns); prints a JSON line per call:
        {"code": <status code>, "pod": <server that answered or null>, "ms": <duration>,
        "details": <status details>}.
"""
import http.server
import json
import socketserver
import sys
import threading
import time
from concurrent import futures


def serve(pod):
    import grpc

    class Echo(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            code = 200
            if self.path.startswith("/status/"):
                code = int(self.path.split("/")[2])
            if self.path.startswith("/delay/"):
                time.sleep(float(self.path.split("/")[2]))
            if self.path.startswith("/upload"):
                self.rfile.read(int(self.headers.get("content-length", "0")))
            body = json.dumps({
                "pod": pod,
                "path": self.path,
                "client": "%s:%d" % self.client_address,
                "headers": dict(self.headers),
                "grpc_calls": grpc_calls[0],
            }).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    class TcpEcho(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data)

    grpc_calls = [0]
    lock = threading.Lock()

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    tcp = socketserver.ThreadingTCPServer(("0.0.0.0", 9000), TcpEcho)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()

    def say(request, context):
        with lock:
            grpc_calls[0] += 1
        md = dict(context.invocation_metadata())
        if "x-sleep" in md:
            time.sleep(float(md["x-sleep"]))
        if "x-fail" in md:
            context.abort(grpc.StatusCode[md["x-fail"]], "failed as asked")
        return b"echo from " + pod.encode() + b": " + request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("0.0.0.0:50051")
    server.start()
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Echo).serve_forever()


def call(target):
    import grpc

    with grpc.insecure_channel(target) as channel:
        say = channel.unary_unary("/test.Echo/Say")
        print(say(b"hello", timeout=10).decode())


def calls(target, n, args):
    import grpc

    interval, deadline, cycle, metadata = 0.0, 10.0, 1, []
    while args:
        arg = args.pop(0)
        if arg == "--interval":
            interval = float(args.pop(0))
        elif arg == "--deadline":
            deadline = float(args.pop(0))
        elif arg == "--cycle":
            cycle = int(args.pop(0))
        else:
            key, value = arg.split("=", 1)
            metadata.append((key, value))
    with grpc.insecure_channel(target) as channel:
        say = channel.unary_unary("/test.Echo/Say")
        for i in range(n):
            if i and interval:
                time.sleep(interval)
            start = time.monotonic()
            try:
                md = [(k, v.replace("{k}", str(i % cycle))) for k, v in metadata]
                reply = say(b"hello", timeout=deadline, metadata=md).decode()
                code, details = 0, ""
                pod = reply[len("echo from "):reply.index(":")]
            except grpc.RpcError as e:
                code, details, pod = e.code().value[0], e.details(), None
            ms = (time.monotonic() - start) * 1000
            print(json.dumps({"code": code, "pod": pod, "ms": round(ms, 1),
                              "details": details}), flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "server":
        serve(sys.argv[2])
    elif mode in ("grpc-call", "xds-call"):
        call(sys.argv[2])
    elif mode == "xds-calls":
        calls(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    else:
        sys.exit("unknown mode " + mode)
