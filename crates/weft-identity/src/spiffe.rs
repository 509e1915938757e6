//! SPIFFE identities in Istio's form `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

use crate::error::IdentityError;

/// The URI scheme prefix of every SPIFFE ID.
pub const SPIFFE_PREFIX: &str = "spiffe://";

/// A workload identity: `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// Trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// Namespace of the workload.
    pub namespace: String,
    /// Service account of the workload.
    pub service_account: String,
}

impl SpiffeId {
    /// Builds an ID from its parts, validating each of them.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        let id = Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        };
        let err = |reason| IdentityError::InvalidSpiffeId {
            id: id.to_string(),
            reason,
        };
        check_trust_domain(&id.trust_domain).map_err(err)?;
        check_segment(&id.namespace).map_err(err)?;
        check_segment(&id.service_account).map_err(err)?;
        Ok(id)
    }

    /// Parses `spiffe://<td>/ns/<ns>/sa/<sa>` strictly (scheme, non-empty segments, exact layout).
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let err = |reason| IdentityError::InvalidSpiffeId {
            id: s.to_string(),
            reason,
        };
        let rest = s
            .strip_prefix(SPIFFE_PREFIX)
            .ok_or_else(|| err("it does not start with spiffe://"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [td, ns_kw, ns, sa_kw, sa] = parts.as_slice() else {
            return Err(err(
                "the path must be exactly /ns/<namespace>/sa/<service-account>",
            ));
        };
        if *ns_kw != "ns" || *sa_kw != "sa" {
            return Err(err(
                "the path must be exactly /ns/<namespace>/sa/<service-account>",
            ));
        }
        check_trust_domain(td).map_err(err)?;
        check_segment(ns).map_err(err)?;
        check_segment(sa).map_err(err)?;
        Ok(Self {
            trust_domain: (*td).to_string(),
            namespace: (*ns).to_string(),
            service_account: (*sa).to_string(),
        })
    }

    /// The ID without the `spiffe://` scheme: Istio's authorization principal form,
    /// e.g. `cluster.local/ns/default/sa/sleep`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// The trust domain (`trust_domain` field).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
}

/// Trust domain characters allowed by the SPIFFE spec: lowercase letters, digits, `.`, `-`, `_`.
fn check_trust_domain(td: &str) -> Result<(), &'static str> {
    if td.is_empty() {
        return Err("the trust domain is empty");
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(
            "the trust domain may only contain lowercase letters, digits, '.', '-' and '_'",
        );
    }
    Ok(())
}

/// Path segment characters allowed by the SPIFFE spec: letters, digits, `.`, `-`, `_`.
fn check_segment(seg: &str) -> Result<(), &'static str> {
    if seg.is_empty() {
        return Err("the namespace and service account must not be empty");
    }
    if seg == "." || seg == ".." {
        return Err("'.' and '..' are not allowed as path segments");
    }
    if !seg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(
            "the namespace and service account may only contain letters, digits, '.', '-' and '_'",
        );
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SPIFFE_PREFIX}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_format_principal() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/sleep"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain, "cluster.local");
        assert_eq!(id.namespace, "default");
        assert_eq!(id.service_account, "sleep");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/sleep");
        assert_eq!(id.principal(), "cluster.local/ns/default/sa/sleep");
        assert_eq!(
            SpiffeId::new("cluster.local", "default", "sleep").unwrap(),
            id
        );
    }

    #[test]
    fn parse_is_strict() {
        for bad in [
            "",
            "cluster.local/ns/default/sa/sleep",
            "SPIFFE://cluster.local/ns/default/sa/sleep",
            "https://cluster.local/ns/default/sa/sleep",
            "spiffe:///ns/default/sa/sleep",
            "spiffe://cluster.local/ns//sa/sleep",
            "spiffe://cluster.local/ns/default/sa/",
            "spiffe://cluster.local/ns/default/sa",
            "spiffe://cluster.local/ns/default/sa/sleep/",
            "spiffe://cluster.local/ns/default/sa/sleep/extra",
            "spiffe://cluster.local/namespace/default/sa/sleep",
            "spiffe://cluster.local/sa/sleep/ns/default",
            "spiffe://Cluster.Local/ns/default/sa/sleep",
            "spiffe://cluster.local/ns/../sa/sleep",
            "spiffe://cluster.local/ns/a b/sa/sleep",
            "spiffe://cluster.local:8080/ns/default/sa/sleep",
        ] {
            let err = SpiffeId::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid SPIFFE ID"), "{err}");
        }
        assert!(SpiffeId::new("cluster.local", "", "sleep").is_err());
    }
}
