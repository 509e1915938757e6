//! State-of-the-world ADS streams (`StreamAggregatedResources`).

use std::collections::BTreeMap;
use std::convert::Infallible;

use tokio::sync::mpsc;

use super::{
    AdsClientConfig, Client, Handler, Session, Update, nack_status, ordered_subscriptions,
};
use crate::error::XdsError;
use crate::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use crate::types;

impl<H: Handler> Session<'_, H> {
    /// Runs one state-of-the-world stream until it fails.
    pub(super) async fn sotw(
        &mut self,
        mut client: Client,
        config: &AdsClientConfig,
    ) -> Result<Infallible, XdsError> {
        let (req_tx, req_rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
        // Names last requested per type on this stream, and the last nonce received per type.
        let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut nonces: BTreeMap<String, String> = BTreeMap::new();
        let mut node = Some(config.node.clone());
        for (type_url, names) in ordered_subscriptions(&*self.handler) {
            if names.is_empty() && !types::is_wildcard_type(&type_url) {
                continue;
            }
            let req = DiscoveryRequest {
                version_info: self.memory.acked_version(&type_url),
                node: node.take(),
                resource_names: names.clone(),
                type_url: type_url.clone(),
                ..Default::default()
            };
            tracing::debug!(
                type_url = types::short_name(&type_url),
                ?names,
                "ADS subscribe"
            );
            // The receiver lives until the call below returns; a send cannot fail before.
            let _ = req_tx.send(req);
            sent.insert(type_url, names);
        }
        let mut inbound = client
            .open::<_, DiscoveryResponse>(super::SOTW_PATH, req_rx)
            .await?;
        self.established(config);

        loop {
            let resp = inbound.message().await?;
            self.got_response = true;
            let type_url = resp.type_url.clone();
            nonces.insert(type_url.clone(), resp.nonce.clone());
            let count = resp.resources.len();
            let update =
                Update::state_of_the_world(&type_url, resp.version_info.clone(), resp.resources);
            let result = self.handler.on_response(&type_url, update);
            let names = sent.get(&type_url).cloned().unwrap_or_default();
            let reply = match result {
                Ok(()) => {
                    tracing::debug!(
                        type_url = types::short_name(&type_url),
                        version = %resp.version_info,
                        resources = count,
                        "ADS response applied; ACK"
                    );
                    self.acked(&type_url, &resp.version_info);
                    DiscoveryRequest {
                        version_info: resp.version_info.clone(),
                        resource_names: names,
                        type_url: type_url.clone(),
                        response_nonce: resp.nonce.clone(),
                        ..Default::default()
                    }
                }
                Err(message) => {
                    tracing::warn!(
                        type_url = types::short_name(&type_url),
                        version = %resp.version_info,
                        error = %message,
                        "ADS response rejected; NACK, keeping the previous configuration"
                    );
                    DiscoveryRequest {
                        version_info: self.memory.acked_version(&type_url),
                        resource_names: names,
                        type_url: type_url.clone(),
                        response_nonce: resp.nonce.clone(),
                        error_detail: nack_status(message),
                        ..Default::default()
                    }
                }
            };
            req_tx.send(reply).map_err(|_| XdsError::StreamClosed)?;

            // Follow subscription changes (e.g. EDS for the clusters CDS named).
            let subs = ordered_subscriptions(&*self.handler);
            for (type_url, names) in &subs {
                if sent.get(type_url) == Some(names) {
                    continue;
                }
                if names.is_empty()
                    && !types::is_wildcard_type(type_url)
                    && !sent.contains_key(type_url)
                {
                    continue;
                }
                tracing::debug!(
                    type_url = types::short_name(type_url),
                    ?names,
                    "ADS subscription changed"
                );
                let req = DiscoveryRequest {
                    version_info: self.memory.acked_version(type_url),
                    resource_names: names.clone(),
                    type_url: type_url.clone(),
                    response_nonce: nonces.get(type_url).cloned().unwrap_or_default(),
                    ..Default::default()
                };
                req_tx.send(req).map_err(|_| XdsError::StreamClosed)?;
                sent.insert(type_url.clone(), names.clone());
            }
            // Non-wildcard types no longer wanted at all: unsubscribe from every name.
            let dropped: Vec<String> = sent
                .iter()
                .filter(|(t, names)| {
                    !names.is_empty()
                        && !types::is_wildcard_type(t)
                        && !subs.iter().any(|(s, _)| s == *t)
                })
                .map(|(t, _)| t.clone())
                .collect();
            for type_url in dropped {
                let req = DiscoveryRequest {
                    version_info: self.memory.acked_version(&type_url),
                    type_url: type_url.clone(),
                    response_nonce: nonces.get(&type_url).cloned().unwrap_or_default(),
                    ..Default::default()
                };
                req_tx.send(req).map_err(|_| XdsError::StreamClosed)?;
                sent.insert(type_url, Vec::new());
            }
        }
    }
}
