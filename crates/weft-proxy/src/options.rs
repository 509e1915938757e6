//! Settings of `weft proxy`, with Istio's defaults, and the node identity they imply.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use weft_telemetry::NodeMetadata;

use crate::error::ProxyError;

#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Control plane `host:port` (Istio's discoveryAddress; plaintext 15010).
    pub control_plane: String,
    pub namespace: String,
    /// The WorkloadEntry this proxy runs for (the pod name in Istio).
    pub workload: String,
    pub pod_ip: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub trust_domain: String,
    pub cluster_id: String,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub cert_ttl: Duration,
    pub outbound_port: u16,
    pub inbound_port: u16,
    pub admin_port: u16,
    pub status_port: u16,
    pub health_port: u16,
    pub prometheus_port: u16,
    pub termination_drain: Duration,
    /// Incremental xDS (Istio's `ISTIO_DELTA_XDS`) instead of state of the world.
    pub delta_xds: bool,
    /// The workload identity provider's SDS socket (a SPIRE agent's): when it is served at
    /// start, the certificate comes from it instead of the Istio CA.
    pub sds_socket: PathBuf,
    /// pilot-agent's DNS proxy (`ISTIO_META_DNS_CAPTURE`): serve 127.0.0.1:15053 from NDS.
    pub dns_capture: bool,
    /// `ISTIO_META_DNS_AUTO_ALLOCATE`: addresses for ServiceEntries without any.
    pub dns_auto_allocate: bool,
    /// Envoy's downstream HTTP limits where the HCM the control plane sends leaves them unset.
    pub http_limits: crate::HttpLimits,
    /// The app's own probes the status port runs (`ISTIO_KUBE_APP_PROBERS`, from the injector).
    pub app_probers: crate::probe::AppProbers,
    /// The app's metrics the status port's `/stats/prometheus` adds to the proxy's
    /// (`ISTIO_PROMETHEUS_ANNOTATIONS`, from the injector).
    pub app_metrics: Option<crate::app_metrics::AppMetrics>,
    /// The root the control plane's TLS port is verified with (Istio's
    /// `/var/run/secrets/istio/root-cert.pem`, from ConfigMap `istio-ca-root-cert`): xDS and the
    /// CA then go over TLS (istiod's 15012) instead of plaintext.
    pub control_plane_root: Option<PathBuf>,
    /// The name the control plane's certificate is verified for (default: the host of
    /// `control_plane`; istiod's is `istiod.<namespace>.svc`).
    pub control_plane_name: Option<String>,
}

impl ProxyOptions {
    pub fn new(control_plane: String, namespace: String, workload: String) -> Self {
        ProxyOptions {
            control_plane,
            namespace,
            workload,
            pod_ip: "127.0.0.1".into(),
            service_account: "default".into(),
            labels: BTreeMap::new(),
            trust_domain: "cluster.local".into(),
            cluster_id: "Kubernetes".into(),
            token: None,
            token_file: None,
            cert_ttl: Duration::from_secs(24 * 3600),
            outbound_port: 15001,
            inbound_port: 15006,
            admin_port: 15000,
            status_port: 15020,
            health_port: 15021,
            prometheus_port: 15090,
            termination_drain: Duration::from_secs(5),
            delta_xds: false,
            sds_socket: PathBuf::from(weft_identity::WORKLOAD_SPIFFE_UDS),
            dns_capture: false,
            dns_auto_allocate: false,
            http_limits: crate::HttpLimits::default(),
            app_probers: Default::default(),
            app_metrics: None,
            control_plane_root: None,
            control_plane_name: None,
        }
    }

    /// The credential, from `--token` or `--token-file`.
    pub fn token(&self) -> Result<String, ProxyError> {
        if let Some(t) = &self.token {
            return Ok(t.trim().to_string());
        }
        match &self.token_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|source| ProxyError::Credential {
                    path: path.clone(),
                    source,
                }),
            None => Err(ProxyError::Config(
                "no credential: pass --token-file (issue one with `weft control token --workload NS/NAME`)".into(),
            )),
        }
    }

    fn url(&self) -> String {
        if self.control_plane.contains("://") {
            self.control_plane.clone()
        } else if self.control_plane_root.is_some() {
            format!("https://{}", self.control_plane)
        } else {
            format!("http://{}", self.control_plane)
        }
    }

    /// The TLS client config for the control plane, when `control_plane_root` is set: the root
    /// file is read now (a missing or bad one stops the start) and again at each dial, as
    /// pilot-agent reads it, so a root the platform replaced (Kubernetes updates the mounted
    /// ConfigMap `istio-ca-root-cert` when the CA changes) is trusted from the next connection;
    /// a file that cannot be read then keeps the last good root, with a warning.
    pub fn control_plane_tls(
        &self,
    ) -> Result<Option<weft_xds::transport::TlsConfig>, crate::error::ProxyError> {
        let Some(path) = self.control_plane_root.clone() else {
            return Ok(None);
        };
        let read_pem = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| crate::error::ProxyError::ControlPlaneRoot {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        };
        let pem = read_pem(&path)?;
        let config = root_client_config(&path, &pem)?;
        // The last good root and the config made of it, kept while the file is unchanged (the
        // same config keeps its TLS session cache). The file is read outside the lock.
        let last = std::sync::Arc::new(std::sync::Mutex::new((pem, config)));
        let read = move || -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
            let lock = || {
                last.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            };
            let fresh = read_pem(&path).and_then(|pem| {
                if lock().0 == pem {
                    return Ok(None);
                }
                Ok(Some((root_client_config(&path, &pem)?, pem)))
            });
            let mut last = lock();
            match fresh {
                Ok(Some((config, pem))) => *last = (pem, config),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "dialling the control plane with the root read before")
                }
            }
            Ok(last.1.clone())
        };
        Ok(Some(weft_xds::transport::TlsConfig::PerDial(
            std::sync::Arc::new(read),
        )))
    }

    pub fn xds_address(&self) -> String {
        self.url()
    }

    pub fn ca_address(&self) -> String {
        self.url()
    }

    /// Istio's node id: `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`.
    pub fn node_id(&self) -> String {
        weft_telemetry::peer::node_id(
            "sidecar",
            &self.pod_ip,
            &self.workload,
            &self.namespace,
            "cluster.local",
        )
    }

    pub fn node_metadata(&self) -> NodeMetadata {
        NodeMetadata {
            name: self.workload.clone(),
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            service_account: self.service_account.clone(),
            workload_name: self.workload.clone(),
            cluster_id: self.cluster_id.clone(),
            mesh_id: self.trust_domain.clone(),
            instance_ips: vec![self.pod_ip.clone()],
            ..NodeMetadata::default()
        }
    }

    pub fn node(&self) -> Node {
        let md = self.node_metadata();
        let mut metadata = to_envoy_struct(&md.to_struct());
        // What the control plane reads to serve the DNS proxy (Istio's proxy metadata).
        for (key, on) in [
            ("DNS_CAPTURE", self.dns_capture),
            ("DNS_AUTO_ALLOCATE", self.dns_auto_allocate),
        ] {
            if on {
                metadata.fields.insert(
                    key.to_string(),
                    envoy_types::pb::google::protobuf::Value {
                        kind: Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
                            "true".into(),
                        )),
                    },
                );
            }
        }
        Node {
            id: self.node_id(),
            cluster: format!("{}.{}", self.workload, self.namespace),
            metadata: Some(metadata),
            user_agent_name: "weft".into(),
            user_agent_version_type: Some(
                envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(
                    env!("CARGO_PKG_VERSION").into(),
                ),
            ),
            ..Default::default()
        }
    }
}

/// prost-types Struct → envoy-types Struct (same wire format).
fn to_envoy_struct(s: &prost_types::Struct) -> envoy_types::pb::google::protobuf::Struct {
    use prost::Message;
    envoy_types::pb::google::protobuf::Struct::decode(s.encode_to_vec().as_slice())
        .unwrap_or_default()
}

/// A client config trusting the PEM certificates `pem` read from `path` (the control plane's
/// root), offering ALPN `h2` (gRPC), so that the transport uses it as it is.
fn root_client_config(
    path: &std::path::Path,
    pem: &[u8],
) -> Result<std::sync::Arc<rustls::ClientConfig>, crate::error::ProxyError> {
    let bad = |reason: String| crate::error::ProxyError::ControlPlaneRoot {
        path: path.to_path_buf(),
        reason,
    };
    let roots: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::pem::PemObject::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("not PEM certificates: {e:?}")))?;
    if roots.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    let config = weft_identity::root_client_config(&roots).map_err(|e| bad(e.to_string()))?;
    let mut config = std::sync::Arc::unwrap_or_clone(config);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(std::sync::Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_plane_root_is_needed_at_start_and_kept_when_it_goes_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root-cert.pem");
        let mut o = ProxyOptions::new("istiod:15012".into(), "ns".into(), "w".into());
        o.control_plane_root = Some(path.clone());
        let err = o.control_plane_tls().unwrap_err().to_string();
        assert!(err.contains("root-cert.pem"), "{err}");
        std::fs::write(&path, "not a certificate").unwrap();
        assert!(o.control_plane_tls().is_err());

        let ca = weft_identity::CertificateAuthority::load_or_create(
            &dir.path().join("ca"),
            "cluster.local",
        )
        .unwrap();
        std::fs::write(&path, ca.root_pem()).unwrap();
        let Some(weft_xds::transport::TlsConfig::PerDial(read)) = o.control_plane_tls().unwrap()
        else {
            panic!("a root file gives a config read at each dial");
        };
        let first = read().unwrap();
        // Unchanged: the same config (and its TLS session cache).
        assert!(std::sync::Arc::ptr_eq(&first, &read().unwrap()));
        assert_eq!(first.alpn_protocols, [b"h2".to_vec()]);
        // A new root (the CA changed): the next dial trusts it.
        let other = weft_identity::CertificateAuthority::load_or_create(
            &dir.path().join("other-ca"),
            "cluster.local",
        )
        .unwrap();
        std::fs::write(&path, other.root_pem()).unwrap();
        let second = read().unwrap();
        assert!(!std::sync::Arc::ptr_eq(&first, &second));
        // Replaced by something unreadable, or gone: the last good root stays.
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\ngarbage").unwrap();
        assert!(std::sync::Arc::ptr_eq(&read().unwrap(), &second));
        std::fs::remove_file(&path).unwrap();
        assert!(std::sync::Arc::ptr_eq(&read().unwrap(), &second));
        assert_eq!(o.xds_address(), "https://istiod:15012");
    }
}
