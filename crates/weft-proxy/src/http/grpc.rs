//! Calls from the proxy to a cluster of its snapshot — the external authorizer, the OpenTelemetry
//! collector — through its own upstream pools (mTLS to a sidecar'd service as any other
//! call): [`call`] for one request whose body is in memory, [`ClusterChannel`] for tonic's
//! generated clients.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::{BodyExt, Collected, Limited};

use super::router::Exchange;
use crate::Proxy;
use crate::body::RequestBody;
use crate::conn::ConnInfo;
use crate::snapshot::Cluster;

/// The largest answer read (Envoy's async client buffer limit is of this order).
pub(crate) const MAX_ANSWER: usize = 1 << 20;

/// One exchange with a cluster: the request (a body held in memory) through the proxy's pools,
/// the answer read to its end.
pub(crate) async fn call(
    proxy: &Arc<Proxy>,
    conn: &Arc<ConnInfo>,
    cluster: &Arc<Cluster>,
    h2: bool,
    authority: &str,
    parts: Parts,
    body: Option<Bytes>,
) -> Result<(http::response::Parts, Collected<Bytes>), String> {
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let exchange = Exchange {
        proxy,
        conn,
        cluster,
        h2,
        authority,
        path: &path,
        hash: None,
    };
    let Some((addr, tls)) = cluster.target(conn.original_dst) else {
        return Err(format!("no healthy upstream in {}", cluster.name));
    };
    let body = RequestBody::Held {
        data: body,
        trailers: None,
    };
    let bytes = Arc::new(AtomicU64::new(0));
    let (resp, lease) = exchange
        .once(addr, tls, parts, body, bytes)
        .await
        .map_err(|f| format!("{addr}: {}", f.reason()))?;
    let (head, body) = resp.into_parts();
    let answer = Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("{addr}: reading the answer: {e}"))?;
    lease.release();
    Ok((head, answer))
}

/// A gRPC channel to a cluster of the snapshot for tonic's generated client: each call leases
/// an HTTP/2 stream from the proxy's pools and reads the answer to its end.
#[derive(Clone)]
pub(crate) struct ClusterChannel {
    pub proxy: Arc<Proxy>,
    pub conn: Arc<ConnInfo>,
    pub cluster: Arc<Cluster>,
    pub authority: Arc<str>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Request<tonic::body::Body>> for ClusterChannel {
    type Response = Response<Collected<Bytes>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
            let (head, answer) = call(
                &this.proxy,
                &this.conn,
                &this.cluster,
                true,
                &this.authority,
                parts,
                Some(body),
            )
            .await?;
            Ok(Response::from_parts(head, answer))
        })
    }
}
