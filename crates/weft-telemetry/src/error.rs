//! The error type of the telemetry subsystem.

use std::path::PathBuf;

/// Errors raised while decoding peer metadata, compiling access-log formats or opening
/// access-log sinks.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The `x-envoy-peer-metadata` header is not valid base64.
    #[error(
        "peer metadata header is not valid base64 ({0}); the peer must send a base64-encoded \
         google.protobuf.Struct in x-envoy-peer-metadata"
    )]
    PeerHeaderBase64(#[from] base64::DecodeError),

    /// The decoded `x-envoy-peer-metadata` header is not a protobuf `Struct`.
    #[error(
        "peer metadata header does not hold a protobuf google.protobuf.Struct ({0}); check that \
         the peer runs a compatible Istio/Weft proxy"
    )]
    PeerHeaderProto(#[from] prost::DecodeError),

    /// An access-log format string could not be compiled.
    #[error(
        "invalid access log format at byte {position}: {reason}; fix meshConfig.accessLogFormat"
    )]
    AccessLogFormat {
        /// Byte offset in the format string where the problem was found.
        position: usize,
        /// What is wrong.
        reason: String,
    },

    /// A JSON access-log format is not a JSON object of strings / nested objects.
    #[error(
        "invalid JSON access log format: {0}; meshConfig.accessLogFormat must be a JSON object \
         whose values are format strings or nested objects when accessLogEncoding is JSON"
    )]
    AccessLogJsonFormat(String),

    /// The access-log file could not be opened.
    #[error(
        "cannot open access log file {path}: {source}; check meshConfig.accessLogFile and permissions"
    )]
    AccessLogOpen {
        /// The path that was opened.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The background access-log writer thread could not be started.
    #[error(
        "cannot start the access log writer thread: {0}; the process may be out of threads or memory"
    )]
    AccessLogThread(#[source] std::io::Error),

    /// An access-log filter's CEL expression does not parse.
    #[error(
        "access log filter {expression:?} is not a valid CEL expression ({reason}); fix the \
         Telemetry resource's accessLogging[].filter.expression"
    )]
    CelFilter {
        /// The expression.
        expression: String,
        /// The parser's message.
        reason: String,
    },

    /// The stats plugin configuration (Telemetry metric overrides) cannot be applied.
    #[error("metric overrides: {reason}; fix the Telemetry resource's metrics[].overrides")]
    StatsConfig {
        /// What is wrong.
        reason: String,
    },
}
