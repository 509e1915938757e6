//! Envoy matchers as istiod 1.14 builds them for authorization (`pilot/pkg/security/authz/matcher`).

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;

use super::AuthzError;
use crate::envoy;

/// `StringMatcher(v)`: `*` ⇒ regex `.+`, `*x` ⇒ suffix, `x*` ⇒ prefix, else exact.
pub fn string(v: &str) -> matcher::StringMatcher {
    string_with_prefix(v, "")
}

/// `StringMatcherRegex(re)` with the RE2 engine, as istiod writes it.
pub fn regex(re: &str) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::SafeRegex(
            regex_matcher(re),
        )),
        ignore_case: false,
    }
}

#[allow(deprecated)]
fn regex_matcher(re: &str) -> matcher::RegexMatcher {
    matcher::RegexMatcher {
        engine_type: Some(matcher::regex_matcher::EngineType::GoogleRe2(
            matcher::regex_matcher::GoogleRe2::default(),
        )),
        regex: re.to_string(),
    }
}

/// `StringMatcherWithPrefix(v, prefix)`: the prefix is ignored for `*`; a suffix match with a
/// prefix becomes the regex `<prefix>.*<x>` (x not escaped, as istiod).
pub fn string_with_prefix(v: &str, prefix: &str) -> matcher::StringMatcher {
    use matcher::string_matcher::MatchPattern;
    let pattern = if v == "*" {
        return regex(".+");
    } else if let Some(rest) = v.strip_prefix('*') {
        if !prefix.is_empty() {
            return regex(&format!("{prefix}.*{rest}"));
        }
        MatchPattern::Suffix(rest.to_string())
    } else if let Some(rest) = v.strip_suffix('*') {
        MatchPattern::Prefix(format!("{prefix}{rest}"))
    } else {
        MatchPattern::Exact(format!("{prefix}{v}"))
    };
    matcher::StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    }
}

/// `HeaderMatcher(k, v)` with the deprecated one-of forms istiod 1.14 still emits:
/// `*` ⇒ present, `*x` ⇒ suffix, `x*` ⇒ prefix, else exact.
#[allow(deprecated)]
pub fn header(name: &str, v: &str) -> route::HeaderMatcher {
    use route::header_matcher::HeaderMatchSpecifier as S;
    let spec = if v == "*" {
        S::PresentMatch(true)
    } else if let Some(rest) = v.strip_prefix('*') {
        S::SuffixMatch(rest.to_string())
    } else if let Some(rest) = v.strip_suffix('*') {
        S::PrefixMatch(rest.to_string())
    } else {
        S::ExactMatch(v.to_string())
    };
    route::HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

/// `HostMatcher(k, v)`: `*` ⇒ present, else a case-insensitive string match (the port, if
/// written, is part of the value).
pub fn host(name: &str, v: &str) -> route::HeaderMatcher {
    use matcher::string_matcher::MatchPattern;
    use route::header_matcher::HeaderMatchSpecifier as S;
    let spec = if v == "*" {
        S::PresentMatch(true)
    } else {
        let pattern = if let Some(rest) = v.strip_prefix('*') {
            MatchPattern::Suffix(rest.to_string())
        } else if let Some(rest) = v.strip_suffix('*') {
            MatchPattern::Prefix(rest.to_string())
        } else {
            MatchPattern::Exact(v.to_string())
        };
        S::StringMatch(matcher::StringMatcher {
            match_pattern: Some(pattern),
            ignore_case: true,
        })
    };
    route::HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

/// `PathMatcher(v)`: `{path: StringMatcher(v)}`.
pub fn path(v: &str) -> matcher::PathMatcher {
    matcher::PathMatcher {
        rule: Some(matcher::path_matcher::Rule::Path(string(v))),
    }
}

/// `CidrRange(v)`: a CIDR keeps the address as written (canonical form, not masked); a bare
/// address gets /32 when it contains a `.` and /128 when it contains a `:`.
pub fn cidr(v: &str) -> Result<core::CidrRange, AuthzError> {
    let bad = || AuthzError::Cidr(v.to_string());
    let (address, len) = match v.split_once('/') {
        Some((ip, len)) => {
            let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let len: u32 = len.parse().map_err(|_| bad())?;
            if len > if ip.is_ipv4() { 32 } else { 128 } {
                return Err(bad());
            }
            (ip, len)
        }
        None => {
            let ip: std::net::IpAddr = v.parse().map_err(|_| bad())?;
            let len = if v.contains('.') {
                32
            } else if v.contains(':') {
                128
            } else {
                return Err(bad());
            };
            (ip, len)
        }
    };
    // Go's net.IP.String() prints an IPv4-mapped IPv6 address as dotted IPv4.
    let address = match address {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        v4 => v4.to_string(),
    };
    Ok(core::CidrRange {
        address_prefix: address,
        prefix_len: Some(envoy::u32v(len)),
    })
}

fn key_path(keys: &[&str]) -> Vec<matcher::metadata_matcher::PathSegment> {
    keys.iter()
        .map(|k| matcher::metadata_matcher::PathSegment {
            segment: Some(matcher::metadata_matcher::path_segment::Segment::Key(
                k.to_string(),
            )),
        })
        .collect()
}

/// `MetadataStringMatcher(filter, key, m)`.
pub fn metadata_string(
    filter: &str,
    key: &str,
    m: matcher::StringMatcher,
) -> matcher::MetadataMatcher {
    matcher::MetadataMatcher {
        filter: filter.to_string(),
        path: key_path(&[key]),
        value: Some(matcher::ValueMatcher {
            match_pattern: Some(matcher::value_matcher::MatchPattern::StringMatch(m)),
        }),
        invert: false,
    }
}

/// `MetadataListMatcher(filter, keys, m)`: the value at the path is a list, one element of
/// which must match.
pub fn metadata_list(
    filter: &str,
    keys: &[&str],
    m: matcher::StringMatcher,
) -> matcher::MetadataMatcher {
    let one_of = matcher::ValueMatcher {
        match_pattern: Some(matcher::value_matcher::MatchPattern::StringMatch(m)),
    };
    matcher::MetadataMatcher {
        filter: filter.to_string(),
        path: key_path(keys),
        value: Some(matcher::ValueMatcher {
            match_pattern: Some(matcher::value_matcher::MatchPattern::ListMatch(Box::new(
                matcher::ListMatcher {
                    match_pattern: Some(matcher::list_matcher::MatchPattern::OneOf(Box::new(
                        one_of,
                    ))),
                },
            ))),
        }),
        invert: false,
    }
}

/// `[<NAME>]` ⇒ NAME (`extractNameInBrackets`).
pub fn name_in_brackets(s: &str) -> Result<&str, AuthzError> {
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| AuthzError::Brackets(s.to_string()))
}

/// `[a][b]` ⇒ `[a, b]`; anything that is not a clean sequence of brackets falls back to the
/// content of the outer brackets (`[a.b]` ⇒ `a.b`, `[a[b]]` ⇒ `a[b]`), as
/// `extractNameInNestedBrackets`.
pub fn names_in_nested_brackets(s: &str) -> Result<Vec<&str>, AuthzError> {
    let bytes = s.as_bytes();
    let end_of = |begin: usize| -> Option<usize> {
        if bytes.get(begin) != Some(&b'[') {
            return None;
        }
        for (i, b) in bytes.iter().enumerate().skip(begin + 1) {
            match b {
                b'[' => return None,
                b']' => return Some(i),
                _ => {}
            }
        }
        None
    };
    let mut out = Vec::new();
    let mut begin = 0;
    while begin < s.len() {
        match end_of(begin) {
            Some(end) => {
                out.push(&s[begin + 1..end]);
                begin = end + 1;
            }
            None => return Ok(vec![name_in_brackets(s)?]),
        }
    }
    Ok(out)
}
