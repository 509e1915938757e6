//! Envoy's `maybeNormalizePath` (`conn_manager_utility.cc`), applied before routing and the
//! filters, and to the path sent upstream: (1) escaped slashes (`%2F`, `%5C`) kept, rejected or
//! unescaped; (2) `normalize_path`: Chromium's `CanonicalizePath` as Envoy uses it — `\` → `/`,
//! percent-escapes of unreserved characters (`A-Za-z0-9-._~`) decoded, other escapes copied as
//! they are, `.` and `..` segments (also written `%2e`) removed as RFC 3986 says; (3)
//! `merge_slashes`. The query is left alone.

use crate::snapshot::{EscapedSlashes, PathNormalization};

/// Why a path cannot be normalized (Envoy: 400, `path_normalization_failed`).
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The escape `%XY` at `i`, decoded.
fn escape_at(p: &[u8], i: usize) -> Option<u8> {
    if p.get(i) != Some(&b'%') {
        return None;
    }
    Some(hex(*p.get(i + 1)?)? << 4 | hex(*p.get(i + 2)?)?)
}

fn has_escaped_slash(p: &str) -> bool {
    let b = p.as_bytes();
    (0..b.len()).any(|i| matches!(escape_at(b, i), Some(b'/' | b'\\')))
}

fn unescape_slashes(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match escape_at(b, i) {
            Some(c @ (b'/' | b'\\')) => {
                out.push(c);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Chromium's path canonicalization as Envoy applies it.
pub fn canonicalize(path: &str) -> Result<String, Invalid> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(Invalid);
    }
    // Pass 1: backslashes and the escapes of unreserved characters.
    let mut flat = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], escape_at(b, i)) {
            (_, Some(0)) => return Err(Invalid),
            (_, Some(c)) if unreserved(c) => {
                flat.push(c);
                i += 3;
            }
            (b'\\', _) => {
                flat.push(b'/');
                i += 1;
            }
            (c, _) => {
                flat.push(c);
                i += 1;
            }
        }
    }
    let flat = String::from_utf8(flat).map_err(|_| Invalid)?;
    // Pass 2: dot segments. A trailing `.` or `..` leaves the path ending with `/`.
    let segments: Vec<&str> = flat[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.into_iter().enumerate() {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        if i == last {
            out.push("");
        }
    }
    let mut result = String::with_capacity(flat.len());
    for seg in out {
        result.push('/');
        result.push_str(seg);
    }
    if result.is_empty() {
        result.push('/');
    }
    Ok(result)
}

/// Whether [`canonicalize`] would return `path` unchanged: no escapes, no backslashes, no
/// `.` or `..` segment (the common case, checked without allocating).
fn is_canonical(path: &str) -> bool {
    path.starts_with('/')
        && !path.bytes().any(|b| b == b'%' || b == b'\\')
        && !path[1..].split('/').any(|seg| seg == "." || seg == "..")
}

fn merge_slashes(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// The normalized `path?query`, or None when it does not change.
pub fn normalize(path_and_query: &str, cfg: &PathNormalization) -> Result<Option<String>, Invalid> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    // `*` (OPTIONS) and authority forms are not paths.
    if !path.starts_with('/') {
        return Ok(None);
    }
    let mut p = std::borrow::Cow::Borrowed(path);
    match cfg.escaped_slashes {
        EscapedSlashes::Keep => {}
        EscapedSlashes::Reject if has_escaped_slash(&p) => return Err(Invalid),
        EscapedSlashes::Reject => {}
        EscapedSlashes::Unescape => {
            if has_escaped_slash(&p) {
                p = unescape_slashes(&p).into();
            }
        }
    }
    if cfg.normalize && !is_canonical(&p) {
        p = canonicalize(&p)?.into();
    }
    if cfg.merge_slashes && p.contains("//") {
        p = merge_slashes(&p).into();
    }
    if p == path {
        return Ok(None);
    }
    Ok(Some(match query {
        Some(q) => format!("{p}?{q}"),
        None => p.into_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: PathNormalization = PathNormalization {
        normalize: true,
        merge_slashes: false,
        escaped_slashes: EscapedSlashes::Keep,
    };
    const MERGE: PathNormalization = PathNormalization {
        merge_slashes: true,
        ..BASE
    };
    const DECODE: PathNormalization = PathNormalization {
        escaped_slashes: EscapedSlashes::Unescape,
        ..MERGE
    };
    const NONE: PathNormalization = PathNormalization {
        normalize: false,
        merge_slashes: false,
        escaped_slashes: EscapedSlashes::Keep,
    };

    fn n(p: &str, cfg: &PathNormalization) -> Result<String, Invalid> {
        normalize(p, cfg).map(|o| o.unwrap_or_else(|| p.to_string()))
    }

    #[test]
    fn bypasses_of_admin_per_mesh_setting() {
        // (path, NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES)
        let cases = [
            ("/admin", "/admin", "/admin", "/admin", "/admin"),
            ("/%61dmin", "/%61dmin", "/admin", "/admin", "/admin"),
            (
                "/admin/../admin",
                "/admin/../admin",
                "/admin",
                "/admin",
                "/admin",
            ),
            ("/./admin", "/./admin", "/admin", "/admin", "/admin"),
            ("/%2e/admin", "/%2e/admin", "/admin", "/admin", "/admin"),
            (
                "/x/%2E%2e/admin",
                "/x/%2E%2e/admin",
                "/admin",
                "/admin",
                "/admin",
            ),
            ("//admin", "//admin", "//admin", "/admin", "/admin"),
            (
                "/x%2F..%2Fadmin",
                "/x%2F..%2Fadmin",
                "/x%2F..%2Fadmin",
                "/x%2F..%2Fadmin",
                "/admin",
            ),
            ("/%2Fadmin", "/%2Fadmin", "/%2Fadmin", "/%2Fadmin", "/admin"),
            ("\\admin", "\\admin", "\\admin", "\\admin", "\\admin"),
            (
                "/x\\..\\admin",
                "/x\\..\\admin",
                "/admin",
                "/admin",
                "/admin",
            ),
        ];
        for (p, none, base, merge, decode) in cases {
            assert_eq!(n(p, &NONE).as_deref(), Ok(none), "NONE {p}");
            assert_eq!(n(p, &BASE).as_deref(), Ok(base), "BASE {p}");
            assert_eq!(n(p, &MERGE).as_deref(), Ok(merge), "MERGE {p}");
            assert_eq!(n(p, &DECODE).as_deref(), Ok(decode), "DECODE {p}");
        }
    }

    #[test]
    fn the_fast_path_only_skips_paths_canonicalize_keeps() {
        for p in [
            "/",
            "/admin",
            "/a//b",
            "/a/",
            "/a.b/..c/.d",
            "/ünïcode",
            "/x?y",
        ] {
            assert!(is_canonical(p), "{p}");
            assert_eq!(canonicalize(p).as_deref(), Ok(p), "{p}");
        }
        for p in ["/./a", "/a/..", "/%61", "/a\\b", "/a/."] {
            assert!(!is_canonical(p), "{p}");
        }
    }

    #[test]
    fn canonical_paths_follow_rfc3986_and_chromium() {
        for (p, want) in [
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/..", "/"),
            ("/../../x", "/x"),
            ("/a/./b/../c", "/a/c"),
            ("/a/..b/c", "/a/..b/c"),
            ("/%7euser/%41%2d", "/~user/A-"),
            // Reserved or other escapes are copied as they are (case included).
            ("/a%2fb%3A%3a%20", "/a%2fb%3A%3a%20"),
            ("/100%", "/100%"),
            ("/%zz", "/%zz"),
        ] {
            assert_eq!(canonicalize(p).as_deref(), Ok(want), "{p}");
        }
        assert_eq!(canonicalize("/a%00b"), Err(Invalid));
    }

    #[test]
    fn the_query_is_untouched_and_unchanged_paths_stay_borrowed() {
        assert_eq!(
            normalize("/a/../b?x=/../%61&y=//", &MERGE),
            Ok(Some("/b?x=/../%61&y=//".into()))
        );
        assert_eq!(normalize("/a/b?x=1", &DECODE), Ok(None));
        assert_eq!(normalize("*", &DECODE), Ok(None));
    }

    #[test]
    fn escaped_slashes_can_be_rejected() {
        let reject = PathNormalization {
            escaped_slashes: EscapedSlashes::Reject,
            ..BASE
        };
        assert_eq!(normalize("/a%2fb", &reject), Err(Invalid));
        assert_eq!(normalize("/a%5Cb", &reject), Err(Invalid));
        assert_eq!(normalize("/a%2eb", &reject), Ok(Some("/a.b".into())));
        assert_eq!(n("/a%5cb/..", &DECODE).as_deref(), Ok("/a/"));
    }
}
