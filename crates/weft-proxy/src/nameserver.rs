//! pilot-agent's DNS proxy (`ISTIO_META_DNS_CAPTURE`): the pod's DNS queries, captured to
//! 127.0.0.1:15053 (UDP and TCP), are answered from the name table the control plane sends
//! (Istio's NDS): a service's host name, and for cluster services `name`, `name.ns` and
//! `name.ns.svc`, get its addresses (A records, TTL 30 s as Istio's; AAAA and other types an
//! empty answer); other names in the mesh domain (`cluster.local`, which off Kubernetes no
//! other server holds) are NXDOMAIN, so search-path expansions cost nothing; every other name
//! is forwarded to the pod's resolvers (`/etc/resolv.conf`) and their answer relayed, or
//! SERVFAIL when none answers in time. Queries never reach the
//! control plane or block the data path: lookups are a map read.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use weft_xds::istio::NameTable;

/// pilot-agent's DNS proxy port.
pub const DNS_PROXY_PORT: u16 = 15053;
/// The TTL of the answers from the table (pilot-agent's `defaultTTLInSeconds`).
pub const TTL: u32 = 30;
/// The mesh's DNS domain, which the name table is the authority for.
pub const MESH_DOMAIN: &str = "cluster.local";
/// How long an upstream resolver may take.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Names (lower case, no trailing dot) → IPv4 addresses.
#[derive(Debug, Default)]
pub struct Table(HashMap<String, Vec<Ipv4Addr>>);

impl Table {
    /// The names a proxy in `namespace` answers from an NDS table.
    pub fn from_nds(nt: &NameTable, namespace: &str) -> Table {
        let mut names: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
        for (host, info) in &nt.table {
            let ips: Vec<Ipv4Addr> = info.ips.iter().filter_map(|ip| ip.parse().ok()).collect();
            if ips.is_empty() {
                continue;
            }
            let mut all = vec![host.clone()];
            all.extend(info.alt_hosts.iter().cloned());
            if info.registry == "Kubernetes" && !info.shortname.is_empty() {
                let (short, ns) = (&info.shortname, &info.namespace);
                all.push(format!("{short}.{ns}"));
                all.push(format!("{short}.{ns}.svc"));
                if ns == namespace {
                    all.push(short.clone());
                }
            }
            for name in all {
                names
                    .entry(name.trim_end_matches('.').to_ascii_lowercase())
                    .or_insert_with(|| ips.clone());
            }
        }
        Table(names)
    }

    fn get(&self, name: &str) -> Option<&[Ipv4Addr]> {
        self.0.get(name).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The DNS proxy: the current table and the pod's resolvers.
pub struct NameServer {
    table: ArcSwap<Table>,
    upstreams: Vec<SocketAddr>,
}

/// The `nameserver` lines of a resolv.conf.
pub fn upstreams_of(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl NameServer {
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        NameServer {
            table: ArcSwap::from_pointee(Table::default()),
            upstreams,
        }
    }

    /// Takes a new table (from NDS).
    pub fn set_table(&self, table: Table) {
        self.table.store(Arc::new(table));
    }

    /// The answer to one DNS message (None: not worth an answer).
    pub async fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        let Ok(msg) = Message::from_vec(query) else {
            // Too broken to echo an id back: drop it, as resolvers do.
            return None;
        };
        if msg.metadata.message_type != MessageType::Query {
            return None;
        }
        let Some(q) = msg.queries.first().cloned() else {
            return Message::error_msg(
                msg.metadata.id,
                msg.metadata.op_code,
                ResponseCode::FormErr,
            )
            .to_vec()
            .ok();
        };
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let table = self.table.load();
        if msg.metadata.op_code == OpCode::Query
            && let Some(ips) = table.get(&name)
        {
            let mut resp = Message::response(msg.metadata.id, OpCode::Query);
            resp.metadata.authoritative = true;
            resp.metadata.recursion_desired = msg.metadata.recursion_desired;
            resp.metadata.recursion_available = true;
            resp.add_query(q.clone());
            if q.query_type() == RecordType::A {
                for ip in ips {
                    resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(*ip))));
                }
            }
            return resp.to_vec().ok();
        }
        drop(table);
        // Off Kubernetes no cluster DNS serves the mesh domain: the table is the authority for
        // it, so the search-path expansions of other names (`x.example.com.default.svc.
        // cluster.local`) are answered NXDOMAIN at once instead of waiting on the upstream.
        if name
            .strip_suffix(MESH_DOMAIN)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
        {
            let mut resp = Message::error_msg(
                msg.metadata.id,
                msg.metadata.op_code,
                ResponseCode::NXDomain,
            );
            resp.metadata.authoritative = true;
            resp.metadata.recursion_desired = msg.metadata.recursion_desired;
            resp.metadata.recursion_available = true;
            resp.add_query(q);
            return resp.to_vec().ok();
        }
        match self.forward(query).await {
            Some(answer) => Some(answer),
            None => {
                let mut resp = Message::error_msg(
                    msg.metadata.id,
                    msg.metadata.op_code,
                    ResponseCode::ServFail,
                );
                resp.metadata.recursion_desired = msg.metadata.recursion_desired;
                resp.add_query(q);
                resp.to_vec().ok()
            }
        }
    }

    /// The first upstream answer to `query`, over UDP.
    async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        for upstream in &self.upstreams {
            let bind: SocketAddr = if upstream.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let Ok(sock) = UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.send_to(query, upstream).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 65_535];
            match tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) if from == *upstream => {
                    buf.truncate(n);
                    return Some(buf);
                }
                _ => tracing::debug!(%upstream, "no answer from the upstream resolver"),
            }
        }
        None
    }

    /// Serves UDP queries on `sock` for ever.
    pub async fn serve_udp(self: Arc<Self>, sock: UdpSocket) {
        let sock = Arc::new(sock);
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let query = buf[..n].to_vec();
            let (server, sock) = (self.clone(), sock.clone());
            tokio::spawn(async move {
                if let Some(answer) = server.answer(&query).await {
                    let _ = sock.send_to(&answer, from).await;
                }
            });
        }
    }

    /// Serves TCP queries (two-byte length prefix) on `listener` for ever.
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                loop {
                    let Ok(len) = conn.read_u16().await else {
                        return;
                    };
                    let mut query = vec![0u8; usize::from(len)];
                    if conn.read_exact(&mut query).await.is_err() {
                        return;
                    }
                    let Some(answer) = server.answer(&query).await else {
                        return;
                    };
                    let Ok(len) = u16::try_from(answer.len()) else {
                        return;
                    };
                    if conn.write_u16(len).await.is_err() || conn.write_all(&answer).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::Name;
    use weft_xds::istio::NameInfo;

    fn table() -> NameTable {
        let mut nt = NameTable::default();
        nt.table.insert(
            "reviews.default.svc.cluster.local".into(),
            NameInfo {
                ips: vec!["10.96.0.7".into()],
                registry: "Kubernetes".into(),
                shortname: "reviews".into(),
                namespace: "default".into(),
                alt_hosts: vec![],
            },
        );
        nt.table.insert(
            "api.example.com".into(),
            NameInfo {
                ips: vec!["240.240.0.9".into()],
                registry: "External".into(),
                ..Default::default()
            },
        );
        nt
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn a_records(answer: &[u8]) -> (ResponseCode, Vec<Ipv4Addr>) {
        let m = Message::from_vec(answer).unwrap();
        let ips = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        (m.metadata.response_code, ips)
    }

    #[tokio::test]
    async fn answers_from_the_table_and_forwards_the_rest() {
        // An upstream resolver that answers every query with 192.0.2.53.
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                let question = q.queries[0].clone();
                r.add_answer(Record::from_rdata(
                    question.name().clone(),
                    60,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, 53))),
                ));
                r.add_query(question);
                upstream.send_to(&r.to_vec().unwrap(), from).await.unwrap();
            }
        });
        let ns = NameServer::new(vec![upstream_addr]);
        ns.set_table(Table::from_nds(&table(), "default"));
        for name in [
            "reviews.default.svc.cluster.local.",
            "REVIEWS.default.svc.cluster.local.",
            "reviews.default.svc.",
            "reviews.default.",
            "reviews.",
        ] {
            let (code, ips) = a_records(&ns.answer(&query(name, RecordType::A)).await.unwrap());
            assert_eq!(
                (code, ips),
                (ResponseCode::NoError, vec![Ipv4Addr::new(10, 96, 0, 7)]),
                "{name}"
            );
        }
        let (code, ips) = a_records(
            &ns.answer(&query("api.example.com.", RecordType::A))
                .await
                .unwrap(),
        );
        assert_eq!(
            (code, ips),
            (ResponseCode::NoError, vec![Ipv4Addr::new(240, 240, 0, 9)])
        );
        // AAAA for a known name: an empty answer, not a forward.
        let (code, ips) = a_records(
            &ns.answer(&query("reviews.", RecordType::AAAA))
                .await
                .unwrap(),
        );
        assert_eq!((code, ips.len()), (ResponseCode::NoError, 0));
        // Short names only in the service's own namespace.
        let other = NameServer::new(vec![upstream_addr]);
        other.set_table(Table::from_nds(&table(), "shop"));
        let (_, ips) = a_records(
            &other
                .answer(&query("reviews.", RecordType::A))
                .await
                .unwrap(),
        );
        assert_eq!(ips, vec![Ipv4Addr::new(192, 0, 2, 53)], "forwarded");
        // Anything else goes upstream.
        let (code, ips) = a_records(
            &ns.answer(&query("www.example.org.", RecordType::A))
                .await
                .unwrap(),
        );
        assert_eq!(
            (code, ips),
            (ResponseCode::NoError, vec![Ipv4Addr::new(192, 0, 2, 53)])
        );
        // The mesh domain is the table's: an unknown name there is NXDOMAIN, not forwarded.
        let (code, ips) = a_records(
            &ns.answer(&query(
                "api.example.com.default.svc.cluster.local.",
                RecordType::A,
            ))
            .await
            .unwrap(),
        );
        assert_eq!((code, ips.len()), (ResponseCode::NXDomain, 0));
        // No upstream: SERVFAIL, at once.
        let lonely = NameServer::new(Vec::new());
        let (code, _) = a_records(
            &lonely
                .answer(&query("www.example.org.", RecordType::A))
                .await
                .unwrap(),
        );
        assert_eq!(code, ResponseCode::ServFail);
        assert!(ns.answer(b"\x00garbage").await.is_none());
        assert_eq!(
            upstreams_of("search x\nnameserver 10.0.0.2\nnameserver ::1\n# c\n"),
            vec![
                SocketAddr::from(([10, 0, 0, 2], 53)),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
