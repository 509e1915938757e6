"""Test workloads for Weft's end-to-end tests.

server: HTTP/1.1 echo on 8080 (JSON with pod, path and headers; /status/<code>,
        /delay/<seconds>),
        TCP echo on 9000, gRPC echo (service test.Echo/Say, raw bytes) on 50051.
grpc-call HOST:PORT: one unary call through the mesh (prints the reply).
xds-call TARGET: one unary call through gRPC's xDS resolver (GRPC_XDS_BOOTSTRAP must be set).
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
            body = json.dumps({
                "pod": pod,
                "path": self.path,
                "client": "%s:%d" % self.client_address,
                "headers": dict(self.headers),
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

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    tcp = socketserver.ThreadingTCPServer(("0.0.0.0", 9000), TcpEcho)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()

    def say(request, context):
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


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "server":
        serve(sys.argv[2])
    elif mode in ("grpc-call", "xds-call"):
        call(sys.argv[2])
    else:
        sys.exit("unknown mode " + mode)
