//! `x-forwarded-client-cert` as Envoy's `mutateXfccRequestHeader`: a request that did not
//! arrive over mTLS loses the header (unless `ALWAYS_FORWARD_ONLY`), so a plaintext client
//! cannot forge one; over mTLS, `SANITIZE` removes it, `FORWARD_ONLY` keeps it, and
//! `APPEND_FORWARD`/`SANITIZE_SET` append/set this hop's element:
//! `By=<own URI SAN>;Hash=<sha256 of the peer certificate>;Subject="…";URI=<peer URI SAN>;DNS=…`.

use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::conn::ConnInfo;
use crate::snapshot::{Xfcc, XfccMode};

pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// This hop's XFCC element, from what the handshake kept.
fn element(x: &Xfcc, conn: &ConnInfo, own_uri: Option<&str>) -> Option<String> {
    let cert = conn.peer_cert.as_ref()?;
    let mut parts = Vec::with_capacity(5);
    if let Some(by) = own_uri.filter(|u| !u.is_empty()) {
        parts.push(format!("By={by}"));
    }
    parts.push(format!("Hash={}", cert.sha256));
    if x.subject {
        parts.push(format!("Subject=\"{}\"", cert.subject.replace('"', "\\\"")));
    }
    if x.uri {
        // The key is there even when the certificate has no URI SAN.
        parts.push(format!("URI={}", cert.uri.as_deref().unwrap_or("")));
    }
    if x.dns {
        for d in &cert.dns {
            parts.push(format!("DNS={d}"));
        }
    }
    Some(parts.join(";"))
}

/// This hop's XFCC element as a header value; None when the handshake kept no certificate
/// details (or they make no valid header value). The same for every request of a
/// connection: callers keep it per connection.
pub fn element_value(x: &Xfcc, conn: &ConnInfo, own_uri: Option<&str>) -> Option<HeaderValue> {
    HeaderValue::from_str(&element(x, conn, own_uri)?).ok()
}

/// Applies the HCM's XFCC setting to a request's headers.
#[cfg(test)]
pub fn apply(x: &Xfcc, conn: &ConnInfo, own_uri: Option<&str>, headers: &mut HeaderMap) {
    apply_element(x, conn, || element_value(x, conn, own_uri), headers)
}

/// [`apply`], with this hop's element from `el` (asked for only when it is appended or set).
pub fn apply_element(
    x: &Xfcc,
    conn: &ConnInfo,
    el: impl FnOnce() -> Option<HeaderValue>,
    headers: &mut HeaderMap,
) {
    let mtls = conn.peer_cert.is_some() || conn.peer_principal.is_some();
    if !mtls {
        if x.mode != XfccMode::AlwaysForwardOnly {
            headers.remove(&XFCC);
        }
        return;
    }
    match x.mode {
        XfccMode::ForwardOnly | XfccMode::AlwaysForwardOnly => {}
        XfccMode::Sanitize => {
            headers.remove(&XFCC);
        }
        XfccMode::AppendForward | XfccMode::SanitizeSet => {
            // One lookup of the header's name (a custom name is hashed byte by byte).
            match (headers.entry(&XFCC), el()) {
                (Entry::Vacant(v), Some(el)) => {
                    v.insert(el);
                }
                (Entry::Vacant(_), None) => {}
                // No certificate details kept: never pass on what the client sent.
                (Entry::Occupied(o), None) => {
                    o.remove_entry_mult();
                }
                (Entry::Occupied(mut o), Some(el)) => {
                    let appending = x.mode == XfccMode::AppendForward
                        && o.get().to_str().is_ok_and(|p| !p.is_empty());
                    let value = if appending {
                        // Several headers are one comma-separated list.
                        let mut all: Vec<&[u8]> = o
                            .iter()
                            .filter_map(|v| v.to_str().ok().map(str::as_bytes))
                            .collect();
                        all.push(el.as_bytes());
                        HeaderValue::from_bytes(&all.join(&b","[..])).ok()
                    } else {
                        Some(el)
                    };
                    match value {
                        // Replaces every value it had.
                        Some(v) => {
                            o.insert(v);
                        }
                        None => {
                            o.remove_entry_mult();
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::conn::PeerCert;
    use crate::snapshot::Direction;

    fn conn(cert: bool) -> ConnInfo {
        ConnInfo {
            direction: Direction::Inbound,
            original_dst: "10.0.0.2:8080".parse().unwrap(),
            remote: "10.0.0.1:5000".parse().unwrap(),
            peer_principal: cert.then(|| "spiffe://cluster.local/ns/foo/sa/sleep".into()),
            peer_cert: cert.then(|| {
                Arc::new(PeerCert {
                    sha256: "ab01".into(),
                    subject: String::new(),
                    uri: Some("spiffe://cluster.local/ns/foo/sa/sleep".into()),
                    dns: vec!["a.example".into()],
                })
            }),
            sni: None,
            alpn: None,
        }
    }

    fn istio() -> Xfcc {
        Xfcc {
            mode: XfccMode::AppendForward,
            subject: true,
            uri: true,
            dns: true,
        }
    }

    fn forged() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            XFCC,
            HeaderValue::from_static("URI=spiffe://cluster.local/ns/admin/sa/root"),
        );
        h
    }

    #[test]
    fn plaintext_requests_lose_a_forged_header() {
        for mode in [
            XfccMode::Sanitize,
            XfccMode::ForwardOnly,
            XfccMode::AppendForward,
            XfccMode::SanitizeSet,
        ] {
            let mut h = forged();
            apply(
                &Xfcc { mode, ..istio() },
                &conn(false),
                Some("spiffe://me"),
                &mut h,
            );
            assert!(h.get(XFCC).is_none(), "{mode:?}");
        }
        let mut h = forged();
        let always = Xfcc {
            mode: XfccMode::AlwaysForwardOnly,
            ..istio()
        };
        apply(&always, &conn(false), None, &mut h);
        assert!(h.get(XFCC).is_some());
    }

    #[test]
    fn mtls_appends_this_hop() {
        let mut h = HeaderMap::new();
        apply(
            &istio(),
            &conn(true),
            Some("spiffe://cluster.local/ns/foo/sa/httpbin"),
            &mut h,
        );
        assert_eq!(
            h[XFCC],
            "By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash=ab01;Subject=\"\";URI=spiffe://cluster.local/ns/foo/sa/sleep;DNS=a.example"
        );
        let mut h = forged();
        apply(&istio(), &conn(true), None, &mut h);
        assert_eq!(
            h[XFCC],
            "URI=spiffe://cluster.local/ns/admin/sa/root,Hash=ab01;Subject=\"\";URI=spiffe://cluster.local/ns/foo/sa/sleep;DNS=a.example"
        );
        let mut h = forged();
        let set = Xfcc {
            mode: XfccMode::SanitizeSet,
            subject: false,
            uri: true,
            dns: false,
        };
        apply(&set, &conn(true), None, &mut h);
        assert_eq!(
            h[XFCC],
            "Hash=ab01;URI=spiffe://cluster.local/ns/foo/sa/sleep"
        );
        let mut h = forged();
        apply(&Xfcc::default(), &conn(true), None, &mut h);
        assert!(h.get(XFCC).is_none(), "SANITIZE removes it over mTLS too");
    }

    #[test]
    fn several_headers_are_one_list_and_set_replaces_them_all() {
        let this_hop =
            "Hash=ab01;Subject=\"\";URI=spiffe://cluster.local/ns/foo/sa/sleep;DNS=a.example";
        let mut two = forged();
        two.append(XFCC, HeaderValue::from_static("URI=spiffe://x/second"));

        let mut h = two.clone();
        apply(&istio(), &conn(true), None, &mut h);
        assert_eq!(h.get_all(XFCC).iter().count(), 1);
        assert_eq!(
            h[XFCC],
            format!("URI=spiffe://cluster.local/ns/admin/sa/root,URI=spiffe://x/second,{this_hop}")
        );

        let mut h = two.clone();
        let set = Xfcc {
            mode: XfccMode::SanitizeSet,
            ..istio()
        };
        apply(&set, &conn(true), None, &mut h);
        assert_eq!(h.get_all(XFCC).iter().count(), 1);
        assert_eq!(h[XFCC], this_hop);

        // No certificate details kept: what the client sent is never passed on.
        let mut h = two;
        apply_element(&istio(), &conn(true), || None, &mut h);
        assert!(h.get(XFCC).is_none());
        let mut h = HeaderMap::new();
        apply_element(&istio(), &conn(true), || None, &mut h);
        assert!(h.is_empty());
    }
}
