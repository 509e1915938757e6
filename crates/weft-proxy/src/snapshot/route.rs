//! Route tables: virtual hosts chosen by Host/:authority (exact, then suffix and prefix
//! wildcards, then `*`), routes in order (first match wins) by path prefix / exact path /
//! regex and headers, and their actions.

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use regex::Regex;

use crate::error::ProxyError;

#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub enum HeaderMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex),
    Present(bool),
}

#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    pub name: http::HeaderName,
    pub matcher: HeaderMatch,
    pub invert: bool,
}

#[derive(Debug, Clone)]
pub enum Action {
    Cluster(std::sync::Arc<str>),
    Weighted(Vec<(std::sync::Arc<str>, u32)>),
    Direct { status: u16, body: String },
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub action: Action,
    /// Zero means no timeout (Istio's default for mesh routes).
    pub timeout: Duration,
    /// Extra attempts on connect failure (the retry policy's `connect-failure`).
    pub retries_on_connect_failure: u32,
}

#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct RouteTable {
    pub name: String,
    pub vhosts: Vec<VirtualHost>,
}

fn regex(s: &str, what: &str) -> Result<Regex, ProxyError> {
    regex::RegexBuilder::new(&format!("^(?:{s})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ProxyError::Config(format!("{what}: bad regex {s:?}: {e}")))
}

fn header_matcher(h: &route::HeaderMatcher, what: &str) -> Result<HeaderMatcher, ProxyError> {
    use route::header_matcher::HeaderMatchSpecifier as S;
    let name = http::HeaderName::from_bytes(h.name.as_bytes())
        .map_err(|_| ProxyError::Config(format!("{what}: bad header name {:?}", h.name)))?;
    let string = |m: &matcher::StringMatcher| -> Result<HeaderMatch, ProxyError> {
        use matcher::string_matcher::MatchPattern as P;
        Ok(match &m.match_pattern {
            Some(P::Exact(s)) => HeaderMatch::Exact(s.clone()),
            Some(P::Prefix(s)) => HeaderMatch::Prefix(s.clone()),
            Some(P::Suffix(s)) => HeaderMatch::Suffix(s.clone()),
            Some(P::SafeRegex(r)) => HeaderMatch::Regex(regex(&r.regex, what)?),
            Some(P::Contains(s)) => {
                HeaderMatch::Regex(regex(&format!(".*{}.*", regex::escape(s)), what)?)
            }
            _ => HeaderMatch::Present(true),
        })
    };
    #[allow(deprecated)]
    let matcher = match &h.header_match_specifier {
        Some(S::ExactMatch(s)) => HeaderMatch::Exact(s.clone()),
        Some(S::PrefixMatch(s)) => HeaderMatch::Prefix(s.clone()),
        Some(S::SuffixMatch(s)) => HeaderMatch::Suffix(s.clone()),
        Some(S::SafeRegexMatch(r)) => HeaderMatch::Regex(regex(&r.regex, what)?),
        Some(S::PresentMatch(p)) => HeaderMatch::Present(*p),
        Some(S::StringMatch(m)) => string(m)?,
        _ => HeaderMatch::Present(true),
    };
    Ok(HeaderMatcher {
        name,
        matcher,
        invert: h.invert_match,
    })
}

pub fn compile(rc: &route::RouteConfiguration) -> Result<RouteTable, ProxyError> {
    let mut vhosts = Vec::new();
    for vh in &rc.virtual_hosts {
        let mut routes = Vec::new();
        for (i, r) in vh.routes.iter().enumerate() {
            let what = format!(
                "route config {}: virtual host {}: routes[{i}]",
                rc.name, vh.name
            );
            let m = r.r#match.clone().unwrap_or_default();
            use route::route_match::PathSpecifier as P;
            let path = match m.path_specifier {
                Some(P::Prefix(p)) => PathMatch::Prefix(p),
                Some(P::Path(p)) => PathMatch::Exact(p),
                Some(P::SafeRegex(r)) => PathMatch::Regex(regex(&r.regex, &what)?),
                Some(P::PathSeparatedPrefix(p)) => PathMatch::Prefix(p),
                _ => PathMatch::Prefix(String::new()),
            };
            let headers = m
                .headers
                .iter()
                .map(|h| header_matcher(h, &what))
                .collect::<Result<Vec<_>, _>>()?;
            let mut retries_on_connect_failure = 0;
            let (action, timeout) = match &r.action {
                Some(route::route::Action::Route(ra)) => {
                    use route::route_action::ClusterSpecifier as C;
                    let action = match &ra.cluster_specifier {
                        Some(C::Cluster(c)) => Action::Cluster(c.as_str().into()),
                        Some(C::WeightedClusters(w)) => Action::Weighted(
                            w.clusters
                                .iter()
                                .map(|c| {
                                    (
                                        c.name.as_str().into(),
                                        c.weight.as_ref().map(|w| w.value).unwrap_or(0),
                                    )
                                })
                                .collect(),
                        ),
                        _ => {
                            return Err(ProxyError::Config(format!(
                                "{what}: route action needs cluster or weighted_clusters"
                            )));
                        }
                    };
                    if let Some(rp) = &ra.retry_policy
                        && rp
                            .retry_on
                            .split(',')
                            .any(|s| s.trim() == "connect-failure")
                    {
                        retries_on_connect_failure =
                            rp.num_retries.as_ref().map(|n| n.value).unwrap_or(1);
                    }
                    let timeout = ra
                        .timeout
                        .as_ref()
                        .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
                        .unwrap_or(Duration::from_secs(15));
                    (action, timeout)
                }
                Some(route::route::Action::DirectResponse(d)) => {
                    let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                        Some(envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(s)) => s.clone(),
                        _ => String::new(),
                    };
                    (
                        Action::Direct {
                            status: d.status as u16,
                            body,
                        },
                        Duration::ZERO,
                    )
                }
                _ => {
                    return Err(ProxyError::Config(format!(
                        "{what}: only route and direct_response actions are supported"
                    )));
                }
            };
            routes.push(Route {
                name: r.name.clone(),
                path,
                case_sensitive: m.case_sensitive.as_ref().is_none_or(|b| b.value),
                headers,
                action,
                timeout,
                retries_on_connect_failure,
            });
        }
        vhosts.push(VirtualHost {
            name: vh.name.clone(),
            domains: vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            routes,
        });
    }
    Ok(RouteTable {
        name: rc.name.clone(),
        vhosts,
    })
}

impl RouteTable {
    /// Envoy's virtual host selection: exact domain, then the longest suffix wildcard
    /// (`*.foo.com`), then the longest prefix wildcard (`foo.*`), then `*`.
    pub fn vhost(&self, authority: &str) -> Option<&VirtualHost> {
        let host = authority.to_ascii_lowercase();
        let mut best: Option<(u8, usize, &VirtualHost)> = None;
        for vh in &self.vhosts {
            for d in &vh.domains {
                let score = if *d == host {
                    Some((3u8, d.len()))
                } else if d == "*" {
                    Some((0, 0))
                } else if let Some(suffix) = d.strip_prefix('*') {
                    host.ends_with(suffix).then_some((2, d.len()))
                } else if let Some(prefix) = d.strip_suffix('*') {
                    host.starts_with(prefix).then_some((1, d.len()))
                } else {
                    None
                };
                if let Some((k, len)) = score
                    && best.is_none_or(|(bk, bl, _)| (k, len) > (bk, bl))
                {
                    best = Some((k, len, vh));
                }
            }
        }
        best.map(|(_, _, vh)| vh)
    }
}

impl Route {
    pub fn matches(&self, path: &str, headers: &http::HeaderMap) -> bool {
        let path_only = path.split('?').next().unwrap_or(path);
        let ok = match &self.path {
            PathMatch::Prefix(p) => {
                if self.case_sensitive {
                    path_only.starts_with(p.as_str())
                } else {
                    path_only
                        .to_ascii_lowercase()
                        .starts_with(&p.to_ascii_lowercase())
                }
            }
            PathMatch::Exact(p) => {
                if self.case_sensitive {
                    path_only == p
                } else {
                    path_only.eq_ignore_ascii_case(p)
                }
            }
            PathMatch::Regex(r) => r.is_match(path_only),
        };
        ok && self.headers.iter().all(|h| {
            let v = headers.get(&h.name).and_then(|v| v.to_str().ok());
            let m = match (&h.matcher, v) {
                (HeaderMatch::Present(p), v) => v.is_some() == *p,
                (_, None) => false,
                (HeaderMatch::Exact(e), Some(v)) => v == e,
                (HeaderMatch::Prefix(e), Some(v)) => v.starts_with(e.as_str()),
                (HeaderMatch::Suffix(e), Some(v)) => v.ends_with(e.as_str()),
                (HeaderMatch::Regex(r), Some(v)) => r.is_match(v),
            };
            m != h.invert
        })
    }

    /// The cluster for this request (weighted clusters pick by a random draw).
    pub fn cluster(&self) -> Option<std::sync::Arc<str>> {
        match &self.action {
            Action::Cluster(c) => Some(c.clone()),
            Action::Weighted(ws) => {
                let total: u32 = ws.iter().map(|(_, w)| *w).sum();
                if total == 0 {
                    return ws.first().map(|(c, _)| c.clone());
                }
                let mut n = rand::random::<u32>() % total;
                for (c, w) in ws {
                    if n < *w {
                        return Some(c.clone());
                    }
                    n -= w;
                }
                ws.last().map(|(c, _)| c.clone())
            }
            Action::Direct { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vh(name: &str, domains: &[&str]) -> route::VirtualHost {
        route::VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes: vec![route::Route {
                name: "default".into(),
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::route::Action::Route(route::RouteAction {
                    cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
                        format!("c-{name}"),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn virtual_host_selection_follows_envoy() {
        let rc = route::RouteConfiguration {
            name: "8080".into(),
            virtual_hosts: vec![
                vh(
                    "exact",
                    &["server.default.svc.cluster.local:8080", "server"],
                ),
                vh("suffix", &["*.example.com"]),
                vh("prefix", &["api.*"]),
                vh("any", &["*"]),
            ],
            ..Default::default()
        };
        let t = compile(&rc).unwrap();
        assert_eq!(
            t.vhost("server.default.svc.cluster.local:8080")
                .unwrap()
                .name,
            "exact"
        );
        assert_eq!(t.vhost("SERVER").unwrap().name, "exact", "case-insensitive");
        assert_eq!(t.vhost("a.example.com").unwrap().name, "suffix");
        assert_eq!(t.vhost("api.other").unwrap().name, "prefix");
        assert_eq!(t.vhost("unknown").unwrap().name, "any");
    }

    #[test]
    fn routes_match_path_and_headers_in_order() {
        let mut v = vh("x", &["*"]);
        v.routes.insert(
            0,
            route::Route {
                name: "jason".into(),
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                    headers: vec![route::HeaderMatcher {
                        name: "end-user".into(),
                        header_match_specifier: Some(
                            route::header_matcher::HeaderMatchSpecifier::StringMatch(
                                matcher::StringMatcher {
                                    match_pattern: Some(
                                        matcher::string_matcher::MatchPattern::Exact(
                                            "jason".into(),
                                        ),
                                    ),
                                    ..Default::default()
                                },
                            ),
                        ),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                action: Some(route::route::Action::Route(route::RouteAction {
                    cluster_specifier: Some(
                        route::route_action::ClusterSpecifier::WeightedClusters(
                            route::WeightedCluster {
                                clusters: vec![route::weighted_cluster::ClusterWeight {
                                    name: "v2".into(),
                                    weight: Some(envoy_types::pb::google::protobuf::UInt32Value {
                                        value: 100,
                                    }),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            },
                        ),
                    ),
                    retry_policy: Some(route::RetryPolicy {
                        retry_on: "connect-failure,refused-stream".into(),
                        num_retries: Some(envoy_types::pb::google::protobuf::UInt32Value {
                            value: 2,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            },
        );
        let rc = route::RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![v],
            ..Default::default()
        };
        let t = compile(&rc).unwrap();
        let vh = t.vhost("any").unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("end-user", http::HeaderValue::from_static("jason"));
        let r = vh
            .routes
            .iter()
            .find(|r| r.matches("/productpage", &h))
            .unwrap();
        assert_eq!(r.name, "jason");
        assert_eq!(r.cluster().as_deref(), Some("v2"));
        assert_eq!(r.retries_on_connect_failure, 2);
        let r = vh
            .routes
            .iter()
            .find(|r| r.matches("/productpage?x=1", &http::HeaderMap::new()))
            .unwrap();
        assert_eq!(r.name, "default");
        assert_eq!(r.retries_on_connect_failure, 0);
        assert_eq!(
            r.timeout,
            Duration::from_secs(15),
            "Envoy's default route timeout when unset"
        );
    }

    #[test]
    fn bad_regex_is_a_config_error_naming_the_route() {
        let mut v = vh("x", &["*"]);
        v.routes[0].r#match = Some(route::RouteMatch {
            path_specifier: Some(route::route_match::PathSpecifier::SafeRegex(
                matcher::RegexMatcher {
                    regex: "(".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        });
        let rc = route::RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![v],
            ..Default::default()
        };
        let e = compile(&rc).unwrap_err().to_string();
        assert!(
            e.contains("route config r") && e.contains("virtual host x") && e.contains("regex"),
            "{e}"
        );
    }
}
