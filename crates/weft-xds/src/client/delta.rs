//! Incremental ADS streams (`DeltaAggregatedResources`).
//!
//! Per type the stream tracks what it subscribed to (wildcard or explicit names) and sends only
//! changes: names to add and names to drop. The client remembers the version of every resource
//! the handler accepted and offers them as `initial_resource_versions` when it reconnects, so the
//! control plane sends only what changed while it was away.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;

use tokio::sync::mpsc;

use super::{
    AdsClientConfig, Client, Handler, Session, Update, nack_status, ordered_subscriptions,
};
use crate::error::XdsError;
use crate::pb::envoy::config::core::v3::Node;
use crate::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use crate::types;

/// A type and the names of the resources a response brought.
type Fresh = (String, Vec<String>);

/// The name that subscribes to every resource of a type.
const WILDCARD: &str = "*";

/// What a stream has subscribed to for one type.
#[derive(Debug, Default, PartialEq)]
struct Sub {
    wildcard: bool,
    names: BTreeSet<String>,
}

impl Sub {
    /// A handler subscription: no names for a wildcard type means all of it.
    fn from_names(type_url: &str, names: Vec<String>) -> Sub {
        Sub {
            wildcard: names.is_empty() && types::is_wildcard_type(type_url),
            names: names.into_iter().collect(),
        }
    }

    fn is_empty(&self) -> bool {
        !self.wildcard && self.names.is_empty()
    }

    /// Whether a resource the client holds is still covered.
    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

impl<H: Handler> Session<'_, H> {
    /// Runs one delta stream until it fails.
    pub(super) async fn delta(
        &mut self,
        mut client: Client,
        config: &AdsClientConfig,
    ) -> Result<Infallible, XdsError> {
        let (req_tx, req_rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
        let mut sent: BTreeMap<String, Sub> = BTreeMap::new();
        let mut node = Some(config.node.clone());
        for (type_url, names) in ordered_subscriptions(&*self.handler) {
            let sub = Sub::from_names(&type_url, names);
            if sub.is_empty() {
                continue;
            }
            let req = self.first_request(&type_url, &sub, node.take());
            // The receiver lives until the call below returns; a send cannot fail before.
            let _ = req_tx.send(req);
            sent.insert(type_url, sub);
        }
        let mut inbound = client
            .open::<_, DeltaDiscoveryResponse>(super::DELTA_PATH, req_rx)
            .await?;
        self.established(config);

        loop {
            let resp = inbound.message().await?;
            self.got_response = true;
            let (reply, fresh) = self.apply(resp);
            req_tx.send(reply).map_err(|_| XdsError::StreamClosed)?;
            for req in self.subscription_changes(&mut sent, fresh.as_ref()) {
                req_tx.send(req).map_err(|_| XdsError::StreamClosed)?;
            }
        }
    }

    /// The first request for a type on a stream: its subscription and the versions of the
    /// resources of it the client already holds. Held resources the subscription no longer
    /// covers are forgotten.
    fn first_request(
        &mut self,
        type_url: &str,
        sub: &Sub,
        node: Option<Node>,
    ) -> DeltaDiscoveryRequest {
        let held = self.memory.held.entry(type_url.to_string()).or_default();
        held.retain(|name, _| sub.covers(name));
        let initial: HashMap<String, String> =
            held.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        tracing::debug!(
            type_url = types::short_name(type_url),
            wildcard = sub.wildcard,
            names = sub.names.len(),
            held = initial.len(),
            "delta ADS subscribe"
        );
        DeltaDiscoveryRequest {
            node,
            type_url: type_url.to_string(),
            // No names on the first request of a wildcard type subscribes to all of it (the
            // legacy wildcard every control plane understands).
            resource_names_subscribe: sub.names.iter().cloned().collect(),
            initial_resource_versions: initial,
            ..Default::default()
        }
    }

    /// Hands a response to the handler and returns the ACK or NACK, and for an ACK the type
    /// and names of the resources the client now holds from it.
    fn apply(&mut self, resp: DeltaDiscoveryResponse) -> (DeltaDiscoveryRequest, Option<Fresh>) {
        let DeltaDiscoveryResponse {
            system_version_info,
            resources,
            type_url,
            removed_resources,
            nonce,
            ..
        } = resp;
        let mut versions = Vec::with_capacity(resources.len());
        let mut bodies = Vec::with_capacity(resources.len());
        for r in resources {
            if let Some(body) = r.resource {
                versions.push((r.name, r.version));
                bodies.push(body);
            }
        }
        let count = bodies.len();
        let update = Update::delta(
            system_version_info.clone(),
            bodies,
            removed_resources.clone(),
        );
        match self.handler.on_response(&type_url, update) {
            Ok(()) => {
                tracing::debug!(
                    type_url = types::short_name(&type_url),
                    version = %system_version_info,
                    resources = count,
                    removed = removed_resources.len(),
                    "delta ADS response applied; ACK"
                );
                let held = self.memory.held.entry(type_url.clone()).or_default();
                let names = versions.iter().map(|(n, _)| n.clone()).collect();
                held.extend(versions);
                for name in &removed_resources {
                    held.remove(name);
                }
                self.acked(&type_url, &system_version_info);
                let ack = DeltaDiscoveryRequest {
                    type_url: type_url.clone(),
                    response_nonce: nonce,
                    ..Default::default()
                };
                (ack, Some((type_url, names)))
            }
            Err(message) => {
                tracing::warn!(
                    type_url = types::short_name(&type_url),
                    version = %system_version_info,
                    error = %message,
                    "delta ADS response rejected; NACK, keeping the previous configuration"
                );
                let nack = DeltaDiscoveryRequest {
                    type_url,
                    response_nonce: nonce,
                    error_detail: nack_status(message),
                    ..Default::default()
                };
                (nack, None)
            }
        }
    }

    /// Requests that bring the stream's subscriptions in line with the handler's. `fresh` is
    /// what the response just applied brought.
    fn subscription_changes(
        &mut self,
        sent: &mut BTreeMap<String, Sub>,
        fresh: Option<&Fresh>,
    ) -> Vec<DeltaDiscoveryRequest> {
        let mut wanted: BTreeMap<String, Sub> = ordered_subscriptions(&*self.handler)
            .into_iter()
            .map(|(t, names)| {
                let sub = Sub::from_names(&t, names);
                (t, sub)
            })
            .collect();
        // Types no longer wanted at all are unsubscribed from everything.
        for t in sent.keys() {
            wanted.entry(t.clone()).or_default();
        }
        let mut out = Vec::new();
        for (type_url, sub) in wanted {
            let Some(cur) = sent.get_mut(&type_url) else {
                if !sub.is_empty() {
                    out.push(self.first_request(&type_url, &sub, None));
                    sent.insert(type_url, sub);
                }
                continue;
            };
            if *cur == sub {
                // Only what the last response carried can lie outside an unchanged
                // subscription (e.g. an assignment that arrived after its cluster went away):
                // it is not held, so subscribing again, or reconnecting, fetches it again.
                if let (Some((t, names)), Some(held)) = (fresh, self.memory.held.get_mut(&type_url))
                    && *t == type_url
                {
                    for name in names.iter().filter(|n| !sub.covers(n)) {
                        held.remove(name);
                    }
                }
                continue;
            }
            // What is unsubscribed is no longer held: subscribing again fetches it again.
            if let Some(held) = self.memory.held.get_mut(&type_url) {
                held.retain(|name, _| sub.covers(name));
            }
            let mut subscribe: Vec<String> = sub.names.difference(&cur.names).cloned().collect();
            let mut unsubscribe: Vec<String> = cur.names.difference(&sub.names).cloned().collect();
            if sub.wildcard && !cur.wildcard {
                subscribe.push(WILDCARD.to_string());
            }
            if cur.wildcard && !sub.wildcard {
                unsubscribe.push(WILDCARD.to_string());
            }
            tracing::debug!(
                type_url = types::short_name(&type_url),
                subscribe = subscribe.len(),
                unsubscribe = unsubscribe.len(),
                "delta ADS subscription changed"
            );
            out.push(DeltaDiscoveryRequest {
                type_url: type_url.clone(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                ..Default::default()
            });
            *cur = sub;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::watch;

    use super::*;
    use crate::client::{ClientState, Memory};
    use crate::types::ENDPOINT;

    /// A handler with fixed subscriptions.
    struct Fixed(Vec<(String, Vec<String>)>);

    impl Handler for Fixed {
        fn on_response(&mut self, _: &str, _: Update) -> Result<(), String> {
            Ok(())
        }

        fn subscriptions(&self) -> Vec<(String, Vec<String>)> {
            self.0.clone()
        }
    }

    #[test]
    fn held_versions_follow_the_handlers_subscriptions() {
        let ab = vec!["a".to_string(), "b".to_string()];
        let mut handler = Fixed(vec![(ENDPOINT.to_string(), ab.clone())]);
        let mut memory = Memory::default();
        // "x" arrived after the client had unsubscribed it; the handler dropped it.
        memory.held.insert(
            ENDPOINT.to_string(),
            ["a", "b", "x"]
                .iter()
                .map(|n| (n.to_string(), "v1".to_string()))
                .collect(),
        );
        let fresh = (ENDPOINT.to_string(), vec!["x".to_string()]);
        let (status, _rx) = watch::channel(ClientState::default());
        let mut session = Session {
            handler: &mut handler,
            memory: &mut memory,
            status: &status,
            got_response: false,
        };
        let mut sent = BTreeMap::from([(ENDPOINT.to_string(), Sub::from_names(ENDPOINT, ab))]);
        let requests = session.subscription_changes(&mut sent, Some(&fresh));
        assert!(requests.is_empty(), "the subscription did not change");
        let held: Vec<&String> = memory.held[ENDPOINT].keys().collect();
        assert_eq!(held, ["a", "b"]);
    }
}
