//! The echo server's gRPC listener: `weft.sample.v1.Echo` plus `grpc.health.v1.Health`.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tracing::{debug, warn};

use super::{Labels, header_map};
use crate::error::SampleError;
use crate::proto::echo_server::{Echo, EchoServer as EchoService};
use crate::proto::{EchoRequest, EchoResponse};

/// The Echo service implementation.
struct EchoImpl {
    labels: Labels,
}

#[tonic::async_trait]
impl Echo for EchoImpl {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let metadata = header_map(&request.metadata().clone().into_headers());
        let message = request.into_inner().message;
        debug!(%message, "grpc echo");
        Ok(Response::new(EchoResponse {
            message,
            pod: self.labels.pod.clone(),
            version: self.labels.version.clone(),
            service: self.labels.service.clone(),
            metadata: metadata.into_iter().collect(),
        }))
    }
}

/// A health reporter with the server and the Echo service marked serving.
pub(super) async fn health_reporter() -> HealthReporter {
    let reporter = HealthReporter::new();
    reporter.set_serving::<EchoService<EchoImpl>>().await;
    reporter
}

/// Marks the server and the Echo service not serving (at the start of shutdown).
pub(super) async fn mark_not_serving(reporter: &HealthReporter) {
    reporter.set_not_serving::<EchoService<EchoImpl>>().await;
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
}

/// Serves gRPC on `listener` until `stop` flips, then drains for up to `drain`.
pub(super) async fn serve(
    listener: TcpListener,
    labels: Labels,
    health: HealthReporter,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) -> Result<(), SampleError> {
    let addr = listener.local_addr().map_err(|source| SampleError::Task {
        what: "grpc listener",
        reason: source.to_string(),
    })?;
    let mut stop_serving = stop.clone();
    let serve = tonic::transport::Server::builder()
        .add_service(HealthServer::new(HealthService::from_health_reporter(
            health,
        )))
        .add_service(EchoService::new(EchoImpl { labels }))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            let _ = stop_serving.changed().await;
        });
    tokio::pin!(serve);
    let drained = async {
        let _ = stop.changed().await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        r = &mut serve => r.map_err(|source| SampleError::Grpc { addr, source }),
        _ = drained => {
            warn!(?drain, %addr, "grpc calls still running after the drain timeout; closing them");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::echo::testing::base;
    use crate::echo::{EchoArgs, EchoServer};
    use crate::proto::EchoRequest;
    use crate::proto::echo_client::EchoClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_client::HealthClient;

    #[tokio::test]
    async fn grpc_echo_round_trip_and_health() {
        let s = EchoServer::bind(EchoArgs {
            grpc_ports: vec![0],
            version: "v3".into(),
            service: "greeter".into(),
            ..base()
        })
        .await
        .unwrap();
        let url = format!("http://{}", s.grpc_addrs()[0]);
        let mut client = EchoClient::connect(url.clone()).await.unwrap();
        let mut req = tonic::Request::new(EchoRequest {
            message: "hello".into(),
        });
        req.metadata_mut()
            .insert("x-request-id", "r-1".parse().unwrap());
        let resp = client.echo(req).await.unwrap().into_inner();
        assert_eq!(resp.message, "hello");
        assert_eq!(resp.pod, "echo-v1-abc");
        assert_eq!(resp.version, "v3");
        assert_eq!(resp.service, "greeter");
        assert_eq!(resp.metadata["x-request-id"], "r-1");
        assert!(resp.metadata.contains_key("content-type"));

        let channel = tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        for service in ["", "weft.sample.v1.Echo"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, Wire::Serving as i32, "service {service:?}");
        }
    }
}
