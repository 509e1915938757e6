//! Picks the resource form for each proxy (Envoy-style sidecar, or proxyless gRPC when the
//! node metadata says `GENERATOR: grpc`, as istiod does) and generates from the current push
//! context.

use std::sync::Arc;

use arc_swap::ArcSwap;
use weft_xds::{Generated, Generator, NamedResource, ProxyInfo, Subscription};

use crate::push::PushContext;
use crate::sidecar::{self, ProxyView, SidecarNode};

/// Generates Envoy resources from the latest push context.
pub struct MeshGenerator {
    push: Arc<ArcSwap<PushContext>>,
}

impl MeshGenerator {
    pub fn new(push: Arc<ArcSwap<PushContext>>) -> Self {
        MeshGenerator { push }
    }
}

fn is_grpc(proxy: &ProxyInfo) -> bool {
    proxy.metadata.get("GENERATOR").and_then(|v| v.as_str()) == Some("grpc")
}

fn names(sub: &Subscription) -> Vec<String> {
    match sub {
        Subscription::Wildcard => Vec::new(),
        Subscription::Names(n) => n.iter().cloned().collect(),
    }
}

fn filter(resources: Vec<NamedResource>, sub: &Subscription) -> Vec<NamedResource> {
    resources
        .into_iter()
        .filter(|r| sub.contains(&r.name))
        .collect()
}

impl Generator for MeshGenerator {
    fn generate(
        &self,
        proxy: &ProxyInfo,
        type_url: &str,
        sub: &Subscription,
    ) -> Result<Generated, String> {
        let push = self.push.load_full();
        let node = SidecarNode::parse(&proxy.id).unwrap_or_else(|| SidecarNode {
            ip: String::new(),
            name: proxy.id.clone(),
            namespace: proxy
                .metadata
                .get("NAMESPACE")
                .and_then(|v| v.as_str())
                .unwrap_or("default")
                .to_string(),
        });
        let view = ProxyView::new(&push, node);
        let requested = names(sub);
        let resources = if is_grpc(proxy) {
            match type_url {
                weft_xds::types::LISTENER => {
                    crate::grpcgen::listeners(&push, &view.node.namespace, &requested)
                }
                weft_xds::types::ROUTE => crate::grpcgen::routes(&push, &requested),
                weft_xds::types::CLUSTER => crate::grpcgen::clusters(&push, &requested),
                weft_xds::types::ENDPOINT => crate::grpcgen::endpoints(&view, &requested),
                other => {
                    return Err(format!(
                        "type {other} is not served to proxyless gRPC clients"
                    ));
                }
            }
        } else {
            match type_url {
                weft_xds::types::LISTENER => filter(sidecar::listeners(&view), sub),
                weft_xds::types::ROUTE => sidecar::routes(&view, &requested),
                weft_xds::types::CLUSTER => filter(sidecar::clusters(&view), sub),
                weft_xds::types::ENDPOINT => sidecar::endpoints(&view, &requested),
                other => return Err(format!("type {other} is not served by weft control")),
            }
        };
        Ok(Generated {
            version: push.version.clone(),
            resources,
        })
    }
}
