//! Envoy's RBAC permission and principal trees, compiled: `any`, `and`/`or`/`not`, headers,
//! URL path, addresses and ports, server name, the peer's certificate, and the dynamic
//! metadata forms Istio emits (`istio_authn`, the RBAC shadow results, `jwt_authn` payloads).

use std::borrow::Cow;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use serde_json::Value;

use super::{Attrs, RbacError};
use crate::snapshot::route::{HeaderKey, HeaderMatch, StrMatch, header_key};

/// A CIDR range: the masked address, IPv4 in the low 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    v4: bool,
    addr: u128,
    len: u8,
}

/// IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`, dual-stack sockets) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask(bits: u32, len: u8) -> u128 {
    let len = u32::from(len).min(bits);
    if len == 0 {
        0
    } else {
        (u128::MAX >> (128 - bits)) & !((1u128 << (bits - len)) - 1)
    }
}

impl Cidr {
    pub fn compile(c: &core::CidrRange, what: &str) -> Result<Cidr, RbacError> {
        let ip: IpAddr = c.address_prefix.parse().map_err(|_| {
            RbacError::Invalid(format!(
                "{what}: {:?} is not an IP address",
                c.address_prefix
            ))
        })?;
        let ip = canonical(ip);
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        // Envoy: an unset prefix_len is 0.
        let len = c.prefix_len.as_ref().map_or(0, |l| l.value);
        if len > bits {
            return Err(RbacError::Invalid(format!(
                "{what}: {}/{len} is longer than the address",
                c.address_prefix
            )));
        }
        let (v4, raw) = match ip {
            IpAddr::V4(a) => (true, u128::from(u32::from(a))),
            IpAddr::V6(a) => (false, u128::from(a)),
        };
        let len = len as u8;
        Ok(Cidr {
            v4,
            addr: raw & mask(bits, len),
            len,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(a) => self.v4 && u128::from(u32::from(a)) & mask(32, self.len) == self.addr,
            IpAddr::V6(a) => !self.v4 && u128::from(a) & mask(128, self.len) == self.addr,
        }
    }
}

/// Envoy's `HeaderMatcher` as RBAC applies it: all values of the header joined with `,`.
#[derive(Debug, Clone)]
pub struct Header {
    key: HeaderKey,
    test: HeaderMatch,
    invert: bool,
    missing_as_empty: bool,
}

fn str_match(m: &matcher::StringMatcher, what: &str) -> Result<StrMatch, RbacError> {
    use matcher::string_matcher::MatchPattern as P;
    match &m.match_pattern {
        Some(P::Custom(c)) => Err(RbacError::Unsupported(format!(
            "{what}: custom string matcher {}",
            c.name
        ))),
        None => Err(RbacError::Unsupported(format!(
            "{what}: string matcher without a pattern"
        ))),
        Some(_) => StrMatch::compile(m, what).map_err(|e| RbacError::Invalid(e.to_string())),
    }
}

fn pattern(p: matcher::string_matcher::MatchPattern) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(p),
        ignore_case: false,
    }
}

impl Header {
    pub fn compile(h: &route::HeaderMatcher, what: &str) -> Result<Header, RbacError> {
        use matcher::string_matcher::MatchPattern as P;
        use route::header_matcher::HeaderMatchSpecifier as S;
        let key = header_key(&h.name)
            .ok_or_else(|| RbacError::Invalid(format!("{what}: bad header name {:?}", h.name)))?;
        #[allow(deprecated)]
        let test = match &h.header_match_specifier {
            Some(S::ExactMatch(s)) => {
                HeaderMatch::Str(str_match(&pattern(P::Exact(s.clone())), what)?)
            }
            Some(S::PrefixMatch(s)) => {
                HeaderMatch::Str(str_match(&pattern(P::Prefix(s.clone())), what)?)
            }
            Some(S::SuffixMatch(s)) => {
                HeaderMatch::Str(str_match(&pattern(P::Suffix(s.clone())), what)?)
            }
            Some(S::ContainsMatch(s)) => {
                HeaderMatch::Str(str_match(&pattern(P::Contains(s.clone())), what)?)
            }
            Some(S::SafeRegexMatch(r)) => {
                HeaderMatch::Str(str_match(&pattern(P::SafeRegex(r.clone())), what)?)
            }
            Some(S::StringMatch(m)) => HeaderMatch::Str(str_match(m, what)?),
            Some(S::PresentMatch(p)) => HeaderMatch::Present(*p),
            Some(S::RangeMatch(_)) => {
                return Err(RbacError::Unsupported(format!(
                    "{what}: header {}: range_match",
                    h.name
                )));
            }
            // Envoy: no specifier matches a present header.
            None => HeaderMatch::Present(true),
        };
        Ok(Header {
            key,
            test,
            invert: h.invert_match,
            missing_as_empty: h.treat_missing_header_as_empty,
        })
    }

    fn value<'a>(&self, a: &Attrs<'a>) -> Option<Cow<'a, str>> {
        let h = a.http.as_ref()?;
        match &self.key {
            HeaderKey::Method => Some(Cow::Borrowed(h.method)),
            HeaderKey::Authority => Some(Cow::Borrowed(h.authority)),
            HeaderKey::Scheme => Some(Cow::Borrowed(h.scheme)),
            HeaderKey::Path => Some(Cow::Borrowed(h.path)),
            HeaderKey::Header(name) => {
                let mut it = h.headers.get_all(name).iter();
                let first = it.next()?;
                let first = String::from_utf8_lossy(first.as_bytes());
                match it.next() {
                    None => Some(first),
                    Some(second) => {
                        let mut joined = first.into_owned();
                        for v in std::iter::once(second).chain(it) {
                            joined.push(',');
                            joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
                        }
                        Some(Cow::Owned(joined))
                    }
                }
            }
        }
    }

    pub fn matches(&self, a: &Attrs) -> bool {
        let v = self.value(a);
        let v = match v {
            Some(v) => v,
            None if self.missing_as_empty => Cow::Borrowed(""),
            None => {
                // Envoy: an absent header only matches a presence test that expects it absent.
                return match self.test {
                    HeaderMatch::Present(p) => p == self.invert,
                    HeaderMatch::Str(_) => false,
                };
            }
        };
        let m = match &self.test {
            HeaderMatch::Present(p) => *p,
            HeaderMatch::Str(s) => s.matches(&v),
        };
        m != self.invert
    }
}

/// A dynamic metadata value, as RBAC's metadata matchers see it.
enum Meta<'a> {
    Missing,
    Str(&'a str),
    List(Vec<&'a str>),
    /// Something else (a number, an object…): present, matched by no string test.
    Other,
}

/// Which metadata a matcher reads.
#[derive(Debug, Clone)]
enum MetaKey {
    /// `istio_authn`: `request.auth.principal|audiences|presenter`.
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    /// `istio_authn`: `request.auth.claims` and the claim path.
    AuthClaims(Vec<String>),
    /// `envoy.filters.http.rbac`: `<prefix>shadow_effective_policy_id`.
    ShadowPolicy(String),
    /// `envoy.filters.http.rbac`: `<prefix>shadow_engine_result`.
    ShadowResult(String),
    /// `envoy.filters.http.jwt_authn`: the payload of `issuer`, then a path in it.
    JwtPayload(String, Vec<String>),
}

#[derive(Debug, Clone)]
enum ValueTest {
    Str(StrMatch),
    OneOf(StrMatch),
    Present(bool),
}

#[derive(Debug, Clone)]
pub struct Metadata {
    key: MetaKey,
    test: ValueTest,
    invert: bool,
}

pub const ISTIO_AUTHN: &str = "istio_authn";
pub const HTTP_RBAC: &str = "envoy.filters.http.rbac";
pub const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";

impl Metadata {
    pub fn compile(m: &matcher::MetadataMatcher, what: &str) -> Result<Metadata, RbacError> {
        use matcher::metadata_matcher::path_segment::Segment;
        let unsupported = |why: &str| {
            Err(RbacError::Unsupported(format!(
                "{what}: metadata {} {why}",
                m.filter
            )))
        };
        let mut path = Vec::with_capacity(m.path.len());
        for seg in &m.path {
            match &seg.segment {
                Some(Segment::Key(k)) => path.push(k.clone()),
                None => return unsupported("path segment without a key"),
            }
        }
        let key = match (m.filter.as_str(), path.split_first()) {
            (ISTIO_AUTHN, Some((k, rest))) => match (k.as_str(), rest.is_empty()) {
                ("request.auth.principal", true) => MetaKey::AuthPrincipal,
                ("request.auth.audiences", true) => MetaKey::AuthAudiences,
                ("request.auth.presenter", true) => MetaKey::AuthPresenter,
                ("request.auth.claims", false) => MetaKey::AuthClaims(rest.to_vec()),
                _ => return unsupported(&format!("key {path:?}")),
            },
            (HTTP_RBAC, Some((k, []))) => {
                if let Some(p) = k.strip_suffix("shadow_effective_policy_id") {
                    MetaKey::ShadowPolicy(p.to_string())
                } else if let Some(p) = k.strip_suffix("shadow_engine_result") {
                    MetaKey::ShadowResult(p.to_string())
                } else {
                    return unsupported(&format!("key {k:?}"));
                }
            }
            (JWT_AUTHN, Some((issuer, rest))) => MetaKey::JwtPayload(issuer.clone(), rest.to_vec()),
            _ => return unsupported("(filter or path)"),
        };
        use matcher::list_matcher::MatchPattern as L;
        use matcher::value_matcher::MatchPattern as V;
        let test = match m.value.as_ref().and_then(|v| v.match_pattern.as_ref()) {
            Some(V::StringMatch(s)) => ValueTest::Str(str_match(s, what)?),
            Some(V::PresentMatch(p)) => ValueTest::Present(*p),
            Some(V::ListMatch(l)) => match &l.match_pattern {
                Some(L::OneOf(v)) => match &v.match_pattern {
                    Some(V::StringMatch(s)) => ValueTest::OneOf(str_match(s, what)?),
                    _ => return unsupported("list_match.one_of other than string_match"),
                },
                None => return unsupported("list_match without one_of"),
            },
            _ => return unsupported("value matcher other than string, list or present"),
        };
        Ok(Metadata {
            key,
            test,
            invert: m.invert,
        })
    }

    fn lookup<'a>(&self, a: &Attrs<'a>) -> Meta<'a> {
        let Some(sec) = a.sec else {
            return Meta::Missing;
        };
        let opt = |s: Option<&'a String>| s.map_or(Meta::Missing, |s| Meta::Str(s));
        match &self.key {
            MetaKey::AuthPrincipal => opt(sec.auth.as_ref().and_then(|x| x.principal.as_ref())),
            MetaKey::AuthAudiences => opt(sec.auth.as_ref().and_then(|x| x.audiences.as_ref())),
            MetaKey::AuthPresenter => opt(sec.auth.as_ref().and_then(|x| x.presenter.as_ref())),
            MetaKey::AuthClaims(path) => match &sec.auth {
                None => Meta::Missing,
                Some(auth) => match auth.claim(path) {
                    Some(l) => Meta::List(l),
                    None if claim_present(&auth.claims, path) => Meta::Other,
                    None => Meta::Missing,
                },
            },
            MetaKey::ShadowPolicy(prefix) => sec
                .shadow
                .iter()
                .find(|s| &*s.prefix == prefix)
                .and_then(|s| s.policy.as_deref())
                .map_or(Meta::Missing, Meta::Str),
            MetaKey::ShadowResult(prefix) => sec
                .shadow
                .iter()
                .find(|s| &*s.prefix == prefix)
                .map_or(Meta::Missing, |s| {
                    Meta::Str(if s.allowed { "allowed" } else { "denied" })
                }),
            MetaKey::JwtPayload(issuer, path) => sec
                .jwt_payloads
                .iter()
                .find(|(i, _)| &**i == issuer)
                .and_then(|(_, v)| json_at(v, path))
                .map_or(Meta::Missing, json_meta),
        }
    }

    pub fn matches(&self, a: &Attrs) -> bool {
        let v = self.lookup(a);
        let m = match (&self.test, &v) {
            (ValueTest::Present(p), Meta::Missing) => !*p,
            (ValueTest::Present(p), _) => *p,
            (ValueTest::Str(s), Meta::Str(v)) => s.matches(v),
            (ValueTest::OneOf(s), Meta::List(l)) => l.iter().any(|v| s.matches(v)),
            _ => false,
        };
        m != self.invert
    }
}

fn claim_present(claims: &serde_json::Map<String, Value>, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    claims
        .get(first)
        .is_some_and(|v| json_at(v, rest).is_some())
}

fn json_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

fn json_meta(v: &Value) -> Meta<'_> {
    match v {
        Value::String(s) => Meta::Str(s),
        Value::Array(items) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .map_or(Meta::Other, Meta::List),
        Value::Null => Meta::Missing,
        _ => Meta::Other,
    }
}

/// A permission: what the request does.
#[derive(Debug, Clone)]
pub enum Perm {
    Any,
    And(Vec<Perm>),
    Or(Vec<Perm>),
    Not(Box<Perm>),
    Header(Header),
    UrlPath(StrMatch),
    DstIp(Cidr),
    DstPort(u32),
    /// `[start, end)`, as Envoy's Int32Range.
    DstPortRange(i32, i32),
    Sni(StrMatch),
    Metadata(Metadata),
}

/// A principal: who sends the request.
#[derive(Debug, Clone)]
pub enum Princ {
    Any,
    And(Vec<Princ>),
    Or(Vec<Princ>),
    Not(Box<Princ>),
    /// The peer certificate's URI SAN; None: any authenticated peer.
    Authenticated(Option<StrMatch>),
    /// The TCP peer (`direct_remote_ip`, and the deprecated `source_ip`).
    DirectRemoteIp(Cidr),
    /// The client address (HTTP: from `x-forwarded-for`).
    RemoteIp(Cidr),
    Header(Header),
    UrlPath(StrMatch),
    Metadata(Metadata),
}

fn url_path(p: &matcher::PathMatcher, what: &str) -> Result<StrMatch, RbacError> {
    match &p.rule {
        Some(matcher::path_matcher::Rule::Path(s)) => str_match(s, what),
        None => Err(RbacError::Unsupported(format!(
            "{what}: url_path without a rule"
        ))),
    }
}

/// The path RBAC matches: `:path` without query and fragment.
fn path_only(p: &str) -> &str {
    let end = p.find(['?', '#']).unwrap_or(p.len());
    &p[..end]
}

impl Perm {
    #[allow(deprecated)]
    pub fn compile(p: &rbac::Permission, what: &str) -> Result<Perm, RbacError> {
        use rbac::permission::Rule as R;
        let set = |s: &rbac::permission::Set| -> Result<Vec<Perm>, RbacError> {
            s.rules.iter().map(|r| Perm::compile(r, what)).collect()
        };
        Ok(match &p.rule {
            Some(R::Any(true)) => Perm::Any,
            Some(R::AndRules(s)) => Perm::And(set(s)?),
            Some(R::OrRules(s)) => Perm::Or(set(s)?),
            Some(R::NotRule(r)) => Perm::Not(Box::new(Perm::compile(r, what)?)),
            Some(R::Header(h)) => Perm::Header(Header::compile(h, what)?),
            Some(R::UrlPath(u)) => Perm::UrlPath(url_path(u, what)?),
            Some(R::DestinationIp(c)) => Perm::DstIp(Cidr::compile(c, what)?),
            Some(R::DestinationPort(port)) => Perm::DstPort(*port),
            Some(R::DestinationPortRange(r)) => Perm::DstPortRange(r.start, r.end),
            Some(R::RequestedServerName(s)) => Perm::Sni(str_match(s, what)?),
            Some(R::Metadata(m)) => Perm::Metadata(Metadata::compile(m, what)?),
            Some(R::Any(false)) => {
                return Err(RbacError::Unsupported(format!(
                    "{what}: permission any: false"
                )));
            }
            Some(R::Matcher(c) | R::UriTemplate(c)) => {
                return Err(RbacError::Unsupported(format!(
                    "{what}: permission extension {}",
                    c.name
                )));
            }
            Some(R::SourcedMetadata(_)) => {
                return Err(RbacError::Unsupported(format!(
                    "{what}: permission sourced_metadata"
                )));
            }
            None => return Err(RbacError::Unsupported(format!("{what}: empty permission"))),
        })
    }

    pub fn matches(&self, a: &Attrs) -> bool {
        match self {
            Perm::Any => true,
            Perm::And(v) => v.iter().all(|p| p.matches(a)),
            Perm::Or(v) => v.iter().any(|p| p.matches(a)),
            Perm::Not(p) => !p.matches(a),
            Perm::Header(h) => h.matches(a),
            Perm::UrlPath(m) => a
                .http
                .as_ref()
                .is_some_and(|h| m.matches(path_only(h.path))),
            Perm::DstIp(c) => c.contains(a.local.ip()),
            Perm::DstPort(p) => u32::from(a.local.port()) == *p,
            Perm::DstPortRange(start, end) => {
                let p = i32::from(a.local.port());
                *start <= p && p < *end
            }
            Perm::Sni(m) => m.matches(a.sni),
            Perm::Metadata(m) => m.matches(a),
        }
    }
}

impl Princ {
    #[allow(deprecated)]
    pub fn compile(p: &rbac::Principal, what: &str) -> Result<Princ, RbacError> {
        use rbac::principal::Identifier as I;
        let set = |s: &rbac::principal::Set| -> Result<Vec<Princ>, RbacError> {
            s.ids.iter().map(|r| Princ::compile(r, what)).collect()
        };
        Ok(match &p.identifier {
            Some(I::Any(true)) => Princ::Any,
            Some(I::AndIds(s)) => Princ::And(set(s)?),
            Some(I::OrIds(s)) => Princ::Or(set(s)?),
            Some(I::NotId(r)) => Princ::Not(Box::new(Princ::compile(r, what)?)),
            Some(I::Authenticated(x)) => Princ::Authenticated(
                x.principal_name
                    .as_ref()
                    .map(|m| str_match(m, what))
                    .transpose()?,
            ),
            Some(I::SourceIp(c) | I::DirectRemoteIp(c)) => {
                Princ::DirectRemoteIp(Cidr::compile(c, what)?)
            }
            Some(I::RemoteIp(c)) => Princ::RemoteIp(Cidr::compile(c, what)?),
            Some(I::Header(h)) => Princ::Header(Header::compile(h, what)?),
            Some(I::UrlPath(u)) => Princ::UrlPath(url_path(u, what)?),
            Some(I::Metadata(m)) => Princ::Metadata(Metadata::compile(m, what)?),
            Some(I::Any(false)) => {
                return Err(RbacError::Unsupported(format!(
                    "{what}: principal any: false"
                )));
            }
            Some(I::FilterState(f)) => {
                return Err(RbacError::Unsupported(format!(
                    "{what}: principal filter_state {}",
                    f.key
                )));
            }
            Some(I::Custom(c)) => {
                return Err(RbacError::Unsupported(format!(
                    "{what}: principal extension {}",
                    c.name
                )));
            }
            Some(I::SourcedMetadata(_)) => {
                return Err(RbacError::Unsupported(format!(
                    "{what}: principal sourced_metadata"
                )));
            }
            None => return Err(RbacError::Unsupported(format!("{what}: empty principal"))),
        })
    }

    pub fn matches(&self, a: &Attrs) -> bool {
        match self {
            Princ::Any => true,
            Princ::And(v) => v.iter().all(|p| p.matches(a)),
            Princ::Or(v) => v.iter().any(|p| p.matches(a)),
            Princ::Not(p) => !p.matches(a),
            Princ::Authenticated(m) => match (a.principal, m) {
                (Some(_), None) => true,
                (Some(p), Some(m)) => m.matches(p),
                (None, _) => false,
            },
            Princ::DirectRemoteIp(c) => c.contains(a.peer.ip()),
            Princ::RemoteIp(c) => c.contains(a.remote_ip),
            Princ::Header(h) => h.matches(a),
            Princ::UrlPath(m) => a
                .http
                .as_ref()
                .is_some_and(|h| m.matches(path_only(h.path))),
            Princ::Metadata(m) => m.matches(a),
        }
    }
}
