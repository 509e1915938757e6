//! What the HTTP security filters of one request share: the JWT payloads `jwt_authn` verified,
//! the request authentication `istio_authn` derived from them (Envoy's dynamic metadata under
//! `envoy.filters.http.jwt_authn` and `istio_authn`), and the RBAC shadow results that decide
//! whether the external authorizer is called (`envoy.filters.http.rbac` metadata).

use std::sync::Arc;

use serde_json::{Map, Value};

/// Istio's request authentication of one request (the `istio_authn` metadata).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestAuth {
    /// `request.auth.principal`: `iss/sub`, when the token has both.
    pub principal: Option<String>,
    /// `request.auth.audiences`: the token's first `aud`.
    pub audiences: Option<String>,
    /// `request.auth.presenter`: `azp`.
    pub presenter: Option<String>,
    /// `request.auth.claims`, as Istio processes them: a string claim becomes the list of its
    /// space-separated words, a list of strings stays a list, an object recurses, numbers,
    /// booleans and mixed lists are left out.
    pub claims: Map<String, Value>,
    /// `request.auth.raw_claims`: the payload JSON.
    pub raw_claims: String,
}

impl RequestAuth {
    /// The claim at `path` (`request.auth.claims[a][b]` is `["a", "b"]`) as the list of
    /// strings RBAC's `list_match.one_of` looks at; None when absent or not a list.
    pub fn claim(&self, path: &[String]) -> Option<Vec<&str>> {
        let (first, rest) = path.split_first()?;
        let mut v = self.claims.get(first)?;
        for key in rest {
            v = v.as_object()?.get(key)?;
        }
        v.as_array()?.iter().map(Value::as_str).collect()
    }
}

/// The result of one RBAC shadow engine (dry-run policies, or CUSTOM triggers).
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowResult {
    /// The filter's `shadow_rules_stat_prefix` (`istio_dry_run_allow_`, `istio_ext_authz_`, …).
    pub prefix: Arc<str>,
    /// `<prefix>shadow_effective_policy_id`: the policy that matched, if one did.
    pub policy: Option<Arc<str>>,
    /// `<prefix>shadow_engine_result`: whether the shadow engine would have allowed.
    pub allowed: bool,
}

/// The security state of one HTTP request, filled in filter order.
#[derive(Debug, Default)]
pub struct SecurityCtx {
    /// Verified JWT payloads by issuer (`jwt_authn`'s `payload_in_metadata`).
    pub jwt_payloads: Vec<(Arc<str>, Arc<Value>)>,
    /// Set by `istio_authn` when a verified token's issuer is one of its origins.
    pub auth: Option<RequestAuth>,
    pub shadow: Vec<ShadowResult>,
    /// An AUDIT (RBAC `LOG`) engine's verdict: whether a policy matched (`access_log_hint`).
    pub access_log_hint: Option<bool>,
}

impl SecurityCtx {
    /// The shadow policy id a filter with `prefix` recorded (for `filter_enabled_metadata`).
    pub fn shadow_policy(&self, prefix: &str) -> Option<&str> {
        self.shadow
            .iter()
            .find(|s| &*s.prefix == prefix)
            .and_then(|s| s.policy.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_read_by_path() {
        let claims = serde_json::json!({
            "groups": ["group1", "group2"],
            "nested": {"key1": ["valueA", "valueB"]},
            "scope": ["scope1"],
        });
        let auth = RequestAuth {
            claims: claims.as_object().cloned().unwrap_or_default(),
            ..Default::default()
        };
        let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(auth.claim(&p(&["groups"])), Some(vec!["group1", "group2"]));
        assert_eq!(
            auth.claim(&p(&["nested", "key1"])),
            Some(vec!["valueA", "valueB"])
        );
        assert_eq!(auth.claim(&p(&["nested"])), None, "an object is no list");
        assert_eq!(auth.claim(&p(&["absent"])), None);
        assert_eq!(auth.claim(&[]), None);
    }
}
