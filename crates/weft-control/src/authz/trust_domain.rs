//! Trust-domain aliases in `source.principal` values, as istiod 1.14's
//! `pilot/pkg/security/trustdomain` (`Bundle.ReplaceTrustDomainAliases`).

/// Kubernetes' default domain: a principal in it stands for the local trust domain and aliases.
const DEFAULT_DOMAIN: &str = "cluster.local";

/// Expands each principal `td/ns/x/sa/y` whose trust domain is one of `trust_domains` (the
/// mesh trust domain followed by its aliases; `*` patterns match both ways) or `cluster.local`
/// into one principal per trust domain. Principals that are not five `/`-parts, whose trust
/// domain is `*`, or whose trust domain is foreign are kept as they are.
pub fn expand(principals: &[String], trust_domains: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for p in principals {
        let parts: Vec<&str> = p.split('/').collect();
        if parts.len() != 5 || parts[0] == "*" {
            out.push(p.clone());
            continue;
        }
        let td = parts[0];
        if string_match(td, trust_domains) || td == DEFAULT_DOMAIN {
            let mut mine: Vec<String> = Vec::new();
            for t in trust_domains {
                let new = if suffix_match(t, td) {
                    p.clone()
                } else {
                    format!("{t}/{}", parts[1..].join("/"))
                };
                if !mine.contains(&new) {
                    mine.push(new);
                }
            }
            out.extend(mine);
        } else {
            tracing::warn!(
                trust_domain = td,
                principal = %p,
                "trust domain of the principal does not match the mesh trust domain or its aliases"
            );
            out.push(p.clone());
        }
    }
    out
}

fn string_match(a: &str, list: &[String]) -> bool {
    list.iter().any(|s| {
        a == s
            || s == "*"
            || prefix_match(a, s)
            || prefix_match(s, a)
            || suffix_match(a, s)
            || suffix_match(s, a)
    })
}

/// `pattern` ends with `*` and `a` starts with the rest.
fn prefix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_suffix('*').is_some_and(|p| a.starts_with(p))
}

/// `pattern` starts with `*` and `a` ends with the rest.
fn suffix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_prefix('*').is_some_and(|p| a.ends_with(p))
}
