//! The TCP proxy: one upstream connection per downstream connection (mTLS to sidecars),
//! bytes copied both ways, Istio's TCP metrics and the access log.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};
use weft_telemetry::{AccessLogEntry, PeerInfo, Reporter, SecurityPolicy};

use crate::Proxy;
use crate::conn::ConnInfo;
use crate::snapshot::rbac::Attrs;
use crate::snapshot::{Direction, TcpProxy};
use crate::stats;
use crate::upstream::{AlpnForm, connect};

/// Copy buffer per direction: large enough for bulk transfers to move 64 KiB per syscall
/// (tokio's default of 8 KiB halves TCP throughput through a hop).
pub(crate) const COPY_BUFFER: usize = 64 * 1024;

/// Largest read buffer under TLS on proxied TCP connections (see `readbuf`): at 256 KiB a bulk
/// transfer through the mTLS pair moves ~8% more than at 64 KiB (iperf3, `bench/run`); the
/// buffer starts at 16 KiB and grows only on connections whose reads fill it.
pub(crate) const TLS_READ_BUFFER: usize = 256 * 1024;

/// Why a connection is closed before anything connects upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denied {
    /// `%CONNECTION_TERMINATION_DETAILS%` (`rbac_access_denied_matched_policy[…]`,
    /// `ext_authz_denied`).
    pub details: String,
    /// The response flag (`UAEX` for the external authorizer).
    pub flags: &'static str,
}

/// The network security filters' verdict on a connection: the RBAC filters (the first denial
/// wins; the shadow engines' results recorded), then the external authorizer when the chain
/// has one and the CUSTOM shadow rules enable it. None when the connection may go on.
pub(crate) async fn security_verdict(
    chain: &crate::snapshot::Chain,
    conn: &ConnInfo,
    proxy: &Arc<Proxy>,
) -> Option<Denied> {
    if chain.rbac.is_empty() && chain.ext_authz.is_none() {
        return None;
    }
    let attrs = Attrs {
        local: conn.original_dst,
        peer: conn.remote,
        remote_ip: conn.remote.ip(),
        principal: conn.peer_principal.as_deref(),
        sni: conn.sni.as_deref().unwrap_or(""),
        http: None,
        sec: None,
    };
    let mut sec = crate::authn::SecurityCtx::default();
    for f in &chain.rbac {
        let outcome = f.check(&attrs);
        if let Some(details) = outcome.denied {
            return Some(Denied {
                details,
                flags: "-",
            });
        }
        if let Some(shadow) = outcome.shadow {
            sec.shadow.retain(|s| s.prefix != shadow.prefix);
            sec.shadow.push(shadow);
        }
    }
    let e = chain.ext_authz.as_ref()?;
    // Boxed: the check's future (a gRPC call) is ~17 KB, and inline it would make every
    // connection's future that large, authorizer or not.
    Box::pin(crate::http::extauthz::check_connection(
        e, conn, &sec, proxy,
    ))
    .await
    .map(|details| Denied {
        details: details.into(),
        flags: "UAEX",
    })
}

/// Proxies one connection. `denied` (by network RBAC or the external authorizer) closes it
/// without connecting upstream, logged with the connection termination details and flag.
pub async fn proxy<IO>(
    mut down: IO,
    conn: ConnInfo,
    tcp: Arc<TcpProxy>,
    proxy: Arc<Proxy>,
    denied: Option<Denied>,
) where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let started = Instant::now();
    let snap = proxy.snapshot.load_full();
    let inbound = conn.direction == Direction::Inbound;
    let mut entry = AccessLogEntry::new(SystemTime::now());
    entry.downstream_local_address = Some(conn.original_dst);
    entry.downstream_remote_address = Some(conn.remote);
    entry.requested_server_name = conn.sni.as_deref().map(str::to_owned);
    let cluster_name = tcp.pick().clone();
    entry.upstream_cluster = Some(cluster_name.clone());
    let principal = conn.peer_principal.as_deref().unwrap_or("");
    let (source, mut destination, security, reporter) = if inbound {
        (
            Arc::new(stats::peer_from_principal(principal)),
            proxy.telemetry.me(),
            if conn.mtls() {
                SecurityPolicy::MutualTls
            } else {
                SecurityPolicy::None
            },
            Reporter::Destination,
        )
    } else {
        (
            proxy.telemetry.me(),
            PeerInfo::unknown_shared(),
            SecurityPolicy::Unknown,
            Reporter::Source,
        )
    };
    let cluster = snap.clusters.get(&*cluster_name).cloned();
    // Without the cluster's service, the server side reports the one its SNI names.
    let service = match crate::snapshot::fallthrough_cluster(&cluster_name) {
        Some(name) => Arc::new(stats::passthrough_service(name, None)),
        None => cluster
            .as_ref()
            .and_then(|c| c.service.clone())
            .or_else(|| {
                inbound
                    .then(|| stats::sni_service(conn.sni.as_deref()))
                    .flatten()
            })
            .unwrap_or_else(weft_telemetry::ServiceInfo::unknown_shared),
    };
    let mut flags = "-";
    let mut up = None;
    if let Some(d) = denied {
        tracing::debug!(remote = %conn.remote, details = %d.details, "connection denied");
        entry.connection_termination_details = Some(d.details.into());
        flags = d.flags;
    } else {
        match &cluster {
            None => flags = "NC",
            Some(c) => match c.target(conn.original_dst) {
                None => flags = "UH",
                Some((addr, tls)) => {
                    entry.upstream_host = Some(addr);
                    match connect(c, addr, tls.as_ref(), AlpnForm::Base, None).await {
                        Ok(u) => {
                            entry.upstream_local_address = u.local;
                            if let Some(p) = &u.peer {
                                Arc::make_mut(&mut destination).principal =
                                    weft_telemetry::Label::new(p);
                                entry.upstream_peer_uri_san = Some(p.to_string());
                            }
                            up = Some(u.io);
                        }
                        Err(e) => {
                            tracing::debug!(cluster = %cluster_name, %addr, error = %e, "upstream connect failed");
                            entry.upstream_transport_failure_reason =
                                e.transport_failure().map(Into::into);
                            flags = "UF";
                        }
                    }
                }
            },
        }
    }
    let labels = stats::tcp_labels(reporter, &source, &destination, &service, security, flags);
    let metrics = &proxy.telemetry.metrics;
    // Metric overrides' label values are computed once, from what is known at the start.
    let tags = tcp.stats.as_ref().map(|ov| {
        let input = crate::accesslog::LogInput::tcp(conn.mtls());
        ov.evaluate(&entry, &input.cel)
    });
    let handle = metrics.tcp_handle(&labels, tcp.stats.as_deref().zip(tags.as_ref()));
    handle.opened();
    let (mut sent, mut received) = (0u64, 0u64);
    if let Some(mut up) = up {
        match tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, COPY_BUFFER, COPY_BUFFER)
            .await
        {
            Ok((from_down, from_up)) => {
                received = from_down;
                sent = from_up;
            }
            Err(e) => tracing::debug!(error = %e, "tcp proxy connection ended with an error"),
        }
    }
    handle.bytes(sent, received);
    handle.closed();
    if !tcp.access_log.is_empty() {
        entry.response_flags = flags.into();
        entry.bytes_received = received;
        entry.bytes_sent = sent;
        entry.duration_ms = started.elapsed().as_millis() as u64;
        let input = crate::accesslog::LogInput::tcp(conn.mtls());
        crate::accesslog::write(&proxy, &tcp.access_log, &entry, &input);
    }
}
