//! The sample apps' error type.

use std::io;
use std::net::SocketAddr;

/// Why a sample app could not start or run; every message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {reason}; choose another {flag}", reason = describe_io(.source))]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The flag that chose the port, e.g. `--http-port`.
        flag: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// An `--upstream` URL is not usable.
    #[error(
        "invalid --upstream {url:?}: {reason}; write a plain-HTTP URL such as http://details:9080/"
    )]
    Upstream {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bookinfo service URL (`--details-url`, `--reviews-url`, `--ratings-url`) is not usable.
    #[error(
        "invalid {flag} {url:?}: {reason}; write a plain-HTTP base URL such as http://details:9080"
    )]
    ServiceUrl {
        /// The flag (or its environment variable) that gave the URL.
        flag: &'static str,
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `weft sample bookinfo reviews --version` is not one of bookinfo's three versions.
    #[error(
        "invalid reviews --version {0:?}: use v1 (no ratings), v2 (black stars) or v3 (red stars)"
    )]
    ReviewsVersion(String),
    /// A fortio-style load argument (`-qps`, `-c`, `-n`, `-t`, …) is unknown or has a bad value.
    #[error("invalid load argument {arg:?}: {reason}")]
    LoadArg {
        /// The argument as given.
        arg: String,
        /// What is wrong with it, and what to write instead.
        reason: String,
    },
    /// `weft sample load` was given no target URL.
    #[error(
        "no target URL: give --url URL or the URL as the last argument, e.g. weft sample load -c 2 -n 20 http://httpbin:8000/get"
    )]
    NoUrl,
    /// A `--chain-path` is not an absolute path prefix.
    #[error("invalid --chain-path {0:?}: a path prefix must start with '/', e.g. /productpage")]
    ChainPath(String),
    /// The load generator's `--url` is not usable.
    #[error(
        "invalid --url {url:?}: {reason}; write a plain-HTTP URL such as http://127.0.0.1:8080/"
    )]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--header` is not `NAME:VALUE`, or its name or value is not valid in HTTP.
    #[error("invalid --header {0:?}: write NAME:VALUE, e.g. --header 'end-user:jason'")]
    Header(String),
    /// `--method` is not an HTTP method token.
    #[error("invalid --method {0:?}: use an HTTP method such as GET, POST or PUT")]
    Method(String),
    /// `--rate` is negative or not a number.
    #[error(
        "invalid --rate {0}: use 0 for as fast as possible or a positive number of requests per second"
    )]
    Rate(f64),
    /// `--connections` is zero.
    #[error("--connections must be at least 1")]
    Connections,
    /// A signal handler could not be installed.
    #[error("cannot install the {signal} handler: {source}; run in a normal process environment")]
    Signal {
        /// The signal, e.g. `SIGTERM`.
        signal: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The gRPC server stopped with an error.
    #[error("the gRPC server on {addr} failed: {source}; check the --grpc-port listener")]
    Grpc {
        /// The listener's address.
        addr: SocketAddr,
        /// tonic's error.
        source: tonic::transport::Error,
    },
    /// A server task stopped unexpectedly (a bug: please report it with the log).
    #[error("the {what} task stopped unexpectedly: {reason}")]
    Task {
        /// Which server.
        what: &'static str,
        /// Why (panic or cancellation).
        reason: String,
    },
}

/// A short, operator-facing description of an I/O error.
pub(crate) fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address in use".to_string(),
        io::ErrorKind::AddrNotAvailable => "address not available on this machine".to_string(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".to_string()
        }
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::TimedOut => "timed out".to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_message_names_the_flag() {
        let e = SampleError::Bind {
            addr: "0.0.0.0:8080".parse().unwrap(),
            flag: "--http-port",
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        assert_eq!(
            e.to_string(),
            "cannot listen on 0.0.0.0:8080: address in use; choose another --http-port"
        );
    }

    #[test]
    fn other_io_errors_keep_their_text() {
        let e = io::Error::other("boom");
        assert_eq!(describe_io(&e), "boom");
    }
}
