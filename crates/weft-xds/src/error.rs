//! Errors of the xDS transport.

/// Errors raised by the ADS client and the transport helpers.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// The control plane address cannot be parsed.
    #[error(
        "invalid xDS endpoint {endpoint:?}: {reason}; use a URI such as http://istiod.istio-system.svc:15010"
    )]
    InvalidEndpoint {
        /// The configured endpoint.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The TLS server name is neither a DNS name nor an IP address.
    #[error(
        "invalid TLS server name {0:?}: use a DNS name or IP address that the control plane certificate covers"
    )]
    InvalidServerName(String),
    /// The bearer token cannot be sent as an HTTP header.
    #[error(
        "the xDS auth token is not a valid HTTP header value; check the token file for stray bytes"
    )]
    InvalidToken,
    /// Connecting to the control plane failed.
    #[error(
        "cannot connect to the control plane at {endpoint}: {reason}; check that it is running and reachable"
    )]
    Connect {
        /// The endpoint dialled.
        endpoint: String,
        /// The transport error and its causes, outermost first.
        reason: String,
    },
    /// The control plane answered the stream with a gRPC error.
    #[error("the control plane rejected or ended the ADS stream: {0}")]
    Rpc(Box<tonic::Status>),
    /// The stream's connection broke while reading a response (the control plane went away).
    #[error("the ADS stream from the control plane broke ({0}); it is probably restarting")]
    StreamBroken(String),
    /// A response this client refuses (over the size limit, compressed, not a
    /// DiscoveryResponse): the control plane or something in its place sent it.
    #[error(
        "the control plane sent a response this proxy cannot take: {0}; check what answers on the control-plane address"
    )]
    BadResponse(String),
    /// The control plane ended the stream cleanly.
    #[error("the control plane closed the ADS stream; it is probably restarting")]
    StreamClosed,
}

impl From<tonic::Status> for XdsError {
    fn from(status: tonic::Status) -> Self {
        XdsError::Rpc(Box::new(status))
    }
}
