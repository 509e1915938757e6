//! Documents that are read but not applied: Kubernetes (non-Istio) resources, and kinds Istio
//! applies that Weft does not implement.
//!
//! A note is not a problem: the rest of the file loads, and `weft validate` still succeeds. An
//! unsupported kind is a warning (Istio would apply it, Weft will not); a non-Istio resource is
//! a plain note (Istio's own `istioctl validate` does not check it either).

use std::fmt;
use std::path::PathBuf;

/// Why a document was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    /// A Kubernetes or other non-Istio resource (Deployment, Service, ConfigMap, RBAC, other
    /// custom resources): it describes the apps, not the mesh configuration.
    NotIstio,
    /// A YAML document that is not a Kubernetes resource at all: no `apiVersion`, `kind`,
    /// `metadata` or `spec` (e.g. an OpenAPI file beside the resources).
    NotAResource,
    /// An Istio kind Weft does not implement (EnvoyFilter, WorkloadGroup, WasmPlugin).
    UnsupportedIstio,
    /// Istio's installer configuration (`install.istio.io` IstioOperator).
    IstioOperator,
    /// A Kubernetes Gateway API kind (`gateway.networking.k8s.io`), which Istio implements.
    GatewayApi,
    /// A Kubernetes Ingress, which Istio serves through its ingress gateway.
    Ingress,
    /// A Kubernetes `List`: Weft reads one resource per YAML document.
    List,
}

impl Skip {
    /// True when Istio would apply the document and Weft will not: reported as a warning.
    pub fn is_warning(self) -> bool {
        !matches!(self, Skip::NotIstio | Skip::NotAResource)
    }
}

/// One document that was read but will not be applied, with the file and line of its `kind`.
///
/// Displayed as `file:line: warning: Kind namespace/name: reason` for kinds Istio applies and
/// Weft does not, and `file:line: note: Kind namespace/name: reason` for everything else; the
/// namespace is shown only when the document names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// File the document came from.
    pub file: PathBuf,
    /// 1-based line of the document's `kind` (or of the document when it has none).
    pub line: usize,
    /// apiVersion as written (empty when absent).
    pub api_version: String,
    /// Kind as written (empty when absent).
    pub kind: String,
    /// `metadata.namespace`, when written.
    pub namespace: Option<String>,
    /// `metadata.name`, when written.
    pub name: Option<String>,
    /// Why it was skipped.
    pub skip: Skip,
}

impl Note {
    /// True for kinds Istio applies and Weft does not (see [`Skip::is_warning`]).
    pub fn is_warning(&self) -> bool {
        self.skip.is_warning()
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = if self.is_warning() { "warning" } else { "note" };
        write!(f, "{}:{}: {level}: ", self.file.display(), self.line)?;
        if !self.kind.is_empty() {
            write!(f, "{}", self.kind)?;
            match (&self.namespace, &self.name) {
                (Some(ns), Some(name)) => write!(f, " {ns}/{name}")?,
                (None, Some(name)) => write!(f, " {name}")?,
                _ => {}
            }
            f.write_str(": ")?;
        }
        let (av, kind) = (&self.api_version, &self.kind);
        match self.skip {
            Skip::NotIstio => write!(f, "not an Istio resource ({av}); skipped"),
            Skip::NotAResource => {
                f.write_str("not a Kubernetes resource (no apiVersion or kind); skipped")
            }
            Skip::UnsupportedIstio => write!(
                f,
                "{av} {kind} is not supported by Weft; skipped, it will not be applied"
            ),
            Skip::IstioOperator => f.write_str(
                "Istio's installer configuration is not read by Weft; skipped, it will not be \
                 applied (give Weft its mesh config as a mesh.yaml file)",
            ),
            Skip::GatewayApi => write!(
                f,
                "the Kubernetes Gateway API ({av}) is not supported by Weft; skipped, it will not \
                 be applied (use an Istio Gateway and VirtualService)"
            ),
            Skip::Ingress => f.write_str(
                "Kubernetes Ingress is not supported by Weft; skipped, it will not be applied \
                 (use an Istio Gateway and VirtualService)",
            ),
            Skip::List => f.write_str(
                "a Kubernetes List is not read by Weft; skipped, its items will not be applied \
                 (write one resource per YAML document)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(kind: &str, av: &str, ns: Option<&str>, name: Option<&str>, skip: Skip) -> Note {
        Note {
            file: PathBuf::from("a.yaml"),
            line: 3,
            api_version: av.into(),
            kind: kind.into(),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
            skip,
        }
    }

    #[test]
    fn display_forms() {
        assert_eq!(
            note(
                "EnvoyFilter",
                "networking.istio.io/v1alpha3",
                Some("istio-system"),
                Some("f"),
                Skip::UnsupportedIstio
            )
            .to_string(),
            "a.yaml:3: warning: EnvoyFilter istio-system/f: networking.istio.io/v1alpha3 EnvoyFilter is not supported by Weft; skipped, it will not be applied"
        );
        assert_eq!(
            note("Service", "v1", None, Some("details"), Skip::NotIstio).to_string(),
            "a.yaml:3: note: Service details: not an Istio resource (v1); skipped"
        );
        assert_eq!(
            note("", "", None, None, Skip::NotAResource).to_string(),
            "a.yaml:3: note: not a Kubernetes resource (no apiVersion or kind); skipped"
        );
        let gw = note(
            "HTTPRoute",
            "gateway.networking.k8s.io/v1",
            None,
            Some("http"),
            Skip::GatewayApi,
        );
        assert!(gw.is_warning());
        assert!(
            gw.to_string().starts_with("a.yaml:3: warning: HTTPRoute http: the Kubernetes Gateway API (gateway.networking.k8s.io/v1) is not supported by Weft;"),
            "{gw}"
        );
        assert!(!note("ConfigMap", "v1", None, None, Skip::NotIstio).is_warning());
        for s in [Skip::IstioOperator, Skip::Ingress, Skip::List] {
            assert!(s.is_warning(), "{s:?}");
        }
    }
}
