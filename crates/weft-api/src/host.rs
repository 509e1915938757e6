//! Host name helpers (Istio `host.Name` and `ResolveShortnameToFQDN`).

use std::net::IpAddr;

/// Expands a host written in configuration to the name used in the service registry.
///
/// Exactly Istio 1.14's `ResolveShortnameToFQDN`: `*` and IP addresses are returned unchanged;
/// a name **without any dot** becomes `<name>.<namespace>.svc.<domain_suffix>`
/// (`reviews` in `default` → `reviews.default.svc.cluster.local`); every name containing a
/// dot is treated as fully qualified and returned unchanged. In particular `reviews.default`
/// is *not* expanded (Kubernetes DNS search paths would resolve it, Istio config does not).
/// An empty namespace or domain suffix skips that part, as in Istio.
pub fn resolve_host(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host == "*" || host.parse::<IpAddr>().is_ok() || host.contains('.') {
        return host.to_owned();
    }
    let mut out = host.to_owned();
    if !namespace.is_empty() {
        out.push('.');
        out.push_str(namespace);
    }
    if !domain_suffix.is_empty() {
        out.push_str(".svc.");
        out.push_str(domain_suffix);
    }
    out
}

/// True when the host starts with the `*` wildcard.
pub fn is_wildcard(host: &str) -> bool {
    host.starts_with('*')
}

/// Istio `host.Name.Matches`: the two hosts have a non-empty intersection
/// (`*.com` matches `foo.com` and `*.foo.com`; `foo.com` matches only itself or a covering wildcard).
pub fn matches(a: &str, b: &str) -> bool {
    match (is_wildcard(a), is_wildcard(b)) {
        (true, true) => {
            if a.len() < b.len() {
                b[1..].ends_with(&a[1..])
            } else {
                a[1..].ends_with(&b[1..])
            }
        }
        (true, false) => b.ends_with(&a[1..]),
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// Istio `host.Name.SubsetOf`: every name matched by `a` is also matched by `b`.
pub fn subset_of(a: &str, b: &str) -> bool {
    match (is_wildcard(a), is_wildcard(b)) {
        (true, true) => a.len() >= b.len() && a[1..].ends_with(&b[1..]),
        (true, false) => false,
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_istio() {
        assert_eq!(
            resolve_host("reviews", "default", "cluster.local"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("reviews.default", "bookinfo", "cluster.local"),
            "reviews.default"
        );
        assert_eq!(
            resolve_host("reviews.default.svc.cluster.local", "x", "cluster.local"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("*.example.com", "default", "cluster.local"),
            "*.example.com"
        );
        assert_eq!(resolve_host("*", "default", "cluster.local"), "*");
        assert_eq!(
            resolve_host("10.0.0.1", "default", "cluster.local"),
            "10.0.0.1"
        );
        assert_eq!(resolve_host("::1", "default", "cluster.local"), "::1");
        assert_eq!(
            resolve_host("reviews", "", "cluster.local"),
            "reviews.svc.cluster.local"
        );
    }

    #[test]
    fn matching() {
        assert!(matches("*.com", "foo.com"));
        assert!(matches("*.foo.com", "*.com"));
        assert!(matches("foo.com", "foo.com"));
        assert!(!matches("foo.com", "bar.com"));
        assert!(subset_of("foo.com", "*.com"));
        assert!(subset_of("*.foo.com", "*.com"));
        assert!(!subset_of("*.com", "*.foo.com"));
        assert!(!subset_of("*.com", "foo.com"));
    }
}
