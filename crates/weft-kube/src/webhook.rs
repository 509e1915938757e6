//! The admission webhooks `weft control` serves over TLS (a serving certificate from its own CA,
//! Istio's port 15017): `/inject`, the mutating webhook that adds the sidecar to pods
//! (inject.rs), and `/validate`, the validating webhook that refuses Istio resources Weft
//! cannot apply with the messages of `weft validate`. It writes its CA root into the `caBundle`
//! of the webhook configurations `weft install` creates, at start and whenever it differs (a
//! configuration created later or replaced), so the API server trusts it.
//! A request it cannot decode is allowed unchanged (and logged): the webhook never blocks the
//! cluster beyond the failure policy the configuration chose.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::config;
use crate::inject::{self, InjectOptions};

/// The webhook configurations `weft install` creates.
pub const INJECTOR_CONFIG: &str = "istio-sidecar-injector";
pub fn validator_config(namespace: &str) -> String {
    format!("istio-validator-{namespace}")
}

/// How often the webhook configurations' CA bundle is checked.
const CA_BUNDLE_CHECK: Duration = Duration::from_secs(5);

/// Largest AdmissionReview read.
const MAX_BODY: usize = 8 << 20;

/// Where and how the webhooks serve.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub addr: SocketAddr,
    /// Names the serving certificate is for (`istiod.<ns>.svc`, …).
    pub names: Vec<String>,
    /// The control plane's namespace (its validator configuration's name).
    pub namespace: String,
    pub inject: InjectOptions,
}

struct Hooks {
    inject: InjectOptions,
    /// The mesh config and resources in force (defaultConfig, ProxyConfig resources).
    push: Arc<arc_swap::ArcSwap<weft_control::push::PushContext>>,
}

/// An AdmissionReview response for `uid`.
fn review(uid: &Value, response: Value) -> Value {
    let mut response = response;
    response["uid"] = uid.clone();
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

impl Hooks {
    fn inject(&self, request: &Value) -> Value {
        let pod: Pod = match serde_json::from_value(request["object"].clone()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "injection: cannot decode the pod; admitted without a sidecar");
                return json!({"allowed": true});
            }
        };
        // The configuration's namespace and object selectors chose the pod (as Istio's).
        let ns = request["namespace"].as_str().unwrap_or("default");
        if !inject::should_inject(ns, &pod) {
            return json!({"allowed": true});
        }
        let push = self.push.load();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let annotation = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(inject::proxy_config::ANNOTATION));
        let pc = match inject::proxy_config::effective(
            &push.mesh,
            &push.resources,
            ns,
            &labels,
            annotation.map(String::as_str),
        ) {
            Ok(pc) => pc,
            Err(e) => {
                // The user's own mistake on this pod: refused with the reason, as Istio's
                // injector refuses an annotation it cannot read.
                tracing::warn!(namespace = ns, error = %e, "injection refused");
                return json!({"allowed": false, "status": {
                    "code": 400, "reason": "Invalid", "message": format!("sidecar injection: {e}"),
                }});
            }
        };
        let ops = inject::patch(
            &pod,
            &self.inject,
            &pc,
            push.mesh.prometheus_merge_enabled(),
        );
        let patch = base64::engine::general_purpose::STANDARD.encode(Value::Array(ops).to_string());
        tracing::info!(
            namespace = ns,
            pod = pod
                .metadata
                .name
                .as_deref()
                .or(pod.metadata.generate_name.as_deref())
                .unwrap_or_default(),
            "sidecar injected"
        );
        json!({"allowed": true, "patchType": "JSONPatch", "patch": patch})
    }

    fn validate(&self, request: &Value) -> Value {
        if request["operation"] == "DELETE" {
            return json!({"allowed": true});
        }
        let obj: DynamicObject = match serde_json::from_value(request["object"].clone()) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "validation: cannot decode the object; admitted");
                return json!({"allowed": true});
            }
        };
        let kind = &request["kind"];
        let (group, version, kind) = (
            kind["group"].as_str().unwrap_or_default(),
            kind["version"].as_str().unwrap_or_default(),
            kind["kind"].as_str().unwrap_or_default(),
        );
        let resource = request["resource"]["resource"].as_str().unwrap_or_default();
        let origin = config::origin(resource, group, &obj);
        let parsed = config::parse(&format!("{group}/{version}"), kind, &origin, &obj);
        match config::outcome(&parsed) {
            Ok(_) => json!({"allowed": true}),
            Err(problems) => json!({"allowed": false, "status": {
                "code": 400,
                "reason": "Invalid",
                "message": problems.join("\n"),
            }}),
        }
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    hooks: Arc<Hooks>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let respond = |code: StatusCode, body: Value| {
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = code;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        Ok(r)
    };
    if path != "/inject" && path != "/validate" {
        return respond(
            StatusCode::NOT_FOUND,
            json!({"error": "not a webhook path"}),
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return respond(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("cannot read the request: {e}")}),
            );
        }
    };
    let review_in: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return respond(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("not an AdmissionReview: {e}")}),
            );
        }
    };
    let request = &review_in["request"];
    let response = if path == "/inject" {
        hooks.inject(request)
    } else {
        hooks.validate(request)
    };
    respond(StatusCode::OK, review(&request["uid"], response))
}

/// Writes `bundle` into every client config of the webhook configuration `name` when one
/// differs (absent configurations are skipped). `configs` lists a configuration's client
/// configs (mutating and validating webhooks are distinct types with the same field).
async fn keep_bundle<K>(
    api: Api<K>,
    name: &str,
    bundle: &k8s_openapi::ByteString,
    configs: impl Fn(&mut K) -> Vec<&mut WebhookClientConfig>,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let Ok(mut c) = api.get(name).await else {
        return;
    };
    let mut stale = false;
    for cc in configs(&mut c) {
        stale |= cc.ca_bundle.as_ref() != Some(bundle);
        cc.ca_bundle = Some(bundle.clone());
    }
    if stale && let Err(e) = api.replace(name, &PostParams::default(), &c).await {
        tracing::warn!(error = %e, "cannot write the CA bundle of {name} (grant update on {})", K::plural(&Default::default()));
    }
}

/// Writes `ca_pem` into the configurations `weft install` created.
async fn keep_ca_bundle(client: &kube::Client, namespace: &str, ca_pem: &str) {
    let bundle = k8s_openapi::ByteString(ca_pem.as_bytes().to_vec());
    keep_bundle(
        Api::<MutatingWebhookConfiguration>::all(client.clone()),
        INJECTOR_CONFIG,
        &bundle,
        |c| {
            c.webhooks
                .iter_mut()
                .flatten()
                .map(|w| &mut w.client_config)
                .collect()
        },
    )
    .await;
    keep_bundle(
        Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        &validator_config(namespace),
        &bundle,
        |c| {
            c.webhooks
                .iter_mut()
                .flatten()
                .map(|w| &mut w.client_config)
                .collect()
        },
    )
    .await;
}

/// Serves the webhooks until the process ends.
pub async fn serve(
    client: kube::Client,
    o: WebhookOptions,
    ca: Arc<weft_identity::CertificateAuthority>,
    push: Arc<arc_swap::ArcSwap<weft_control::push::PushContext>>,
) {
    let tls = match weft_control::tls::server_config(
        &ca,
        &o.names,
        Duration::from_secs(365 * 24 * 3600),
    ) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot make the webhooks' serving certificate; no injection or validation");
            return;
        }
    };
    let listener = match tokio::net::TcpListener::bind(o.addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %o.addr, error = %e, "cannot listen for the admission webhooks; no injection or validation");
            return;
        }
    };
    // The configurations may come (or be replaced) after the control plane starts: their
    // CA bundle is checked again every CA_BUNDLE_CHECK and written when it differs.
    let (namespace, root) = (o.namespace.clone(), ca.root_pem());
    keep_ca_bundle(&client, &namespace, &root).await;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(CA_BUNDLE_CHECK).await;
            keep_ca_bundle(&client, &namespace, &root).await;
        }
    });
    tracing::info!(addr = %o.addr, "serving the admission webhooks (/inject, /validate)");
    let hooks = Arc::new(Hooks {
        inject: o.inject,
        push,
    });
    let mut incoming = weft_control::tls::incoming(listener, tls);
    use futures::StreamExt;
    while let Some(conn) = incoming.next().await {
        let Ok(stream) = conn else { continue };
        let hooks = hooks.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, hooks.clone()));
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
        });
    }
}
