# The image `weft install` runs and its injector puts in pods: the control plane
# (`weft control --kube`), the sidecar (`weft proxy`) and the capture init container
# (`weft iptables`, which needs iptables-restore). One statically linked `weft` binary (glibc
# linked in, crt-static) on Debian slim with iptables.
#
#   docker build -t weft:0.1.0 .
#   weft install --image weft:0.1.0 | kubectl apply -f -
#
# Build stage: the toolchain the repository is tested with; aws-lc-rs needs a C compiler and
# cmake (the protobufs are compiled without protoc).
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The release profile keeps debug info for profiling; the image's copy is stripped (300 → 53 MB).
# ldd says "statically linked" (exit 0) for a static PIE: the check is that it lists no library.
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -p weft --target x86_64-unknown-linux-gnu \
 && cp target/x86_64-unknown-linux-gnu/release/weft /weft \
 && strip /weft \
 && if ldd /weft 2>&1 | grep -q '=>'; then echo "weft is not statically linked" >&2; exit 1; fi

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /weft /usr/local/bin/weft
# The sidecar and the control plane run as 1337 (the pod's securityContext says so too).
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/weft"]
