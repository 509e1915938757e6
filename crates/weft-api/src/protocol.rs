//! Service port protocols and Istio's protocol selection rules.

use std::fmt;

/// Application protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1.
    Http,
    /// HTTP/2 (h2c or over TLS).
    Http2,
    /// gRPC.
    Grpc,
    /// gRPC-Web.
    GrpcWeb,
    /// Opaque TCP.
    Tcp,
    /// TLS with SNI (not terminated by the proxy).
    Tls,
    /// HTTPS (TLS carrying HTTP, not terminated by the sidecar).
    Https,
    /// MongoDB (treated as TCP).
    Mongo,
    /// Redis (treated as TCP).
    Redis,
    /// MySQL (treated as TCP).
    Mysql,
    /// UDP (not proxied).
    Udp,
    /// `HTTP_PROXY` (HTTP proxy port; HTTP semantics).
    HttpProxy,
    /// Unknown: automatic protocol detection (sniffing) applies.
    Unsupported,
}

/// Ports whose protocol speaks first from the server: unnamed ports default to TCP.
const SERVER_FIRST_PORTS: [u32; 4] = [25, 53, 3306, 27017];

impl Protocol {
    /// Parses an Istio protocol name case-insensitively (`HTTP`, `HTTPS`, `GRPC`, `GRPC-WEB`,
    /// `HTTP2`, `HTTP_PROXY`, `MONGO`, `REDIS`, `MYSQL`, `TCP`, `TLS`, `UDP`); anything else is
    /// [`Protocol::Unsupported`]. Used for ServiceEntry / Gateway / Sidecar `port.protocol`.
    pub fn from_istio_name(name: &str) -> Protocol {
        match name.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => Protocol::Unsupported,
        }
    }

    /// Istio's canonical name (`HTTP`, `GRPC-Web`, `UnsupportedProtocol`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Https => "HTTPS",
            Protocol::Mongo => "Mongo",
            Protocol::Redis => "Redis",
            Protocol::Mysql => "MySQL",
            Protocol::Udp => "UDP",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Unsupported => "UnsupportedProtocol",
        }
    }

    /// HTTP family: HTTP, HTTP2, GRPC, GRPC-Web (and HTTP_PROXY).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::Grpc
                | Protocol::GrpcWeb
                | Protocol::HttpProxy
        )
    }

    /// Needs HTTP/2 upstream: HTTP2, GRPC, GRPC-Web.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// Proxied as TCP: TCP, HTTPS, TLS, Mongo, Redis, MySQL.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp
                | Protocol::Https
                | Protocol::Tls
                | Protocol::Mongo
                | Protocol::Redis
                | Protocol::Mysql
        )
    }

    /// TLS-carrying: HTTPS, TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// gRPC or gRPC-Web.
    pub fn is_grpc(self) -> bool {
        matches!(self, Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// Unknown protocol (sniffed).
    pub fn is_unsupported(self) -> bool {
        self == Protocol::Unsupported
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Protocol of a Kubernetes service port, as Istio's `ConvertProtocol`:
/// `appProtocol` if set, else the port name; a `grpc-web` prefix wins; otherwise the part
/// before the first `-` is parsed case-insensitively (`http-api` → HTTP). Unknown names are
/// [`Protocol::Unsupported`] (sniffed), except on server-first ports 25, 53, 3306 and 27017,
/// which default to TCP. (A Service port with `protocol: UDP` is UDP; callers check that first.)
pub fn protocol_for_port(
    app_protocol: Option<&str>,
    port_name: &str,
    port_number: u32,
) -> Protocol {
    let name = app_protocol.unwrap_or(port_name);
    const GRPC_WEB: &str = "grpc-web";
    if name.len() >= GRPC_WEB.len()
        && name.is_char_boundary(GRPC_WEB.len())
        && name[..GRPC_WEB.len()].eq_ignore_ascii_case(GRPC_WEB)
    {
        return Protocol::GrpcWeb;
    }
    let prefix = name.split_once('-').map_or(name, |(p, _)| p);
    let p = Protocol::from_istio_name(prefix);
    if p == Protocol::Unsupported && SERVER_FIRST_PORTS.contains(&port_number) {
        return Protocol::Tcp;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        assert_eq!(protocol_for_port(None, "http-api", 8080), Protocol::Http);
        assert_eq!(protocol_for_port(None, "HTTP2", 8080), Protocol::Http2);
        assert_eq!(
            protocol_for_port(None, "grpc-web-x", 8080),
            Protocol::GrpcWeb
        );
        assert_eq!(protocol_for_port(None, "grpc", 8080), Protocol::Grpc);
        assert_eq!(
            protocol_for_port(Some("http"), "tcp-db", 8080),
            Protocol::Http
        );
        assert_eq!(
            protocol_for_port(Some("weird"), "http", 8080),
            Protocol::Unsupported
        );
        assert_eq!(protocol_for_port(None, "", 3306), Protocol::Tcp);
        assert_eq!(protocol_for_port(None, "db", 27017), Protocol::Tcp);
        assert_eq!(protocol_for_port(None, "web", 80), Protocol::Unsupported);
        assert_eq!(protocol_for_port(None, "tcp", 9000), Protocol::Tcp);
        assert_eq!(
            protocol_for_port(None, "mysql-primary", 13306),
            Protocol::Mysql
        );
        assert_eq!(protocol_for_port(None, "é-x", 80), Protocol::Unsupported);
    }

    #[test]
    fn families() {
        assert!(Protocol::Grpc.is_http() && Protocol::Grpc.is_http2());
        assert!(Protocol::Http.is_http() && !Protocol::Http.is_http2());
        assert!(!Protocol::Https.is_http() && Protocol::Https.is_tls() && Protocol::Https.is_tcp());
        assert_eq!(Protocol::from_istio_name("GRPC-WEB"), Protocol::GrpcWeb);
        assert_eq!(Protocol::from_istio_name("bogus"), Protocol::Unsupported);
    }
}
