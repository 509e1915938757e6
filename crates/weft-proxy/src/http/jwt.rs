//! The per-request runtime of `envoy.filters.http.jwt_authn` and Istio's `istio_authn`
//! (compiled in `snapshot/jwt.rs`).
//!
//! jwt_authn, as Envoy 1.22 (`filter.cc`, `extractor.cc`, `authenticator.cc`, `verifier.cc`):
//! every provider's `forward_payload_header` is removed from the request; a CORS preflight
//! passes; the first rule matching the path picks the requirement. Tokens are extracted per
//! provider (or from every provider's locations for `allow_missing`), each checked for format,
//! issuer (declared at its location), time window, audiences and signature. A verified token
//! sets the payload header, removes its header unless `forward`, and records its payload under
//! the issuer. `requires_any` passes when a child passes, otherwise fails with the last status
//! that is neither `Jwt is missing` nor `Jwt issuer is not configured` (then the latter);
//! `requires_all` fails with its first failing child. A failure is a 401 (403 for
//! audiences) with the status string as body and `www-authenticate`.
//!
//! Differences from Envoy: the payload header is removed before the CORS-preflight bypass too;
//! `allow_missing` stops at the first failing token (Envoy reports the last token's status).
//!
//! istio_authn (`http_filter.cc`, `authn_utils.cc`): the payload of the first issuer, in its
//! order, that verified a token becomes `request.auth.*`.

// The router calls these once the lead wires `HttpFilter::JwtAuthn`/`IstioAuthn` in.

use std::sync::Arc;

use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderName, Method, StatusCode};
use serde_json::{Map, Value};
use weft_identity::jwt::{Jwt, JwtStatus, verify_signature};

use crate::authn::{RequestAuth, SecurityCtx};
use crate::snapshot::jwt::{IstioAuthn, JwtAuthn, Locations, Requirement};

/// A request jwt_authn rejects: Envoy's local reply.
#[derive(Debug, Clone)]
pub struct JwtDenied {
    /// 401, or 403 when the token's audiences are not allowed.
    pub status: StatusCode,
    pub jwt_status: JwtStatus,
    /// The body: jwt_verify_lib's status string.
    pub body: String,
    /// `www-authenticate: Bearer realm="<original URI>", error="invalid_token"`.
    pub www_authenticate: HeaderValue,
    /// `%RESPONSE_CODE_DETAILS%`: `jwt_authn_access_denied{Jwt_verification_fails}`.
    pub details: String,
}

impl JwtDenied {
    /// The reply's headers (`www-authenticate`).
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 1] {
        [(WWW_AUTHENTICATE, self.www_authenticate.clone())]
    }
}

/// A token found in the request.
struct Token {
    value: String,
    /// The issuers that declared the location.
    issuers: Vec<String>,
    /// The header it came from (removed on success unless `forward`).
    header: Option<HeaderName>,
}

const JWT_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

/// Envoy's `extractJWT`: from the first base64url-or-dot character at or after `after`, up to
/// the next other character; the whole value when there is none.
fn extract_jwt(value: &str, after: usize) -> &str {
    let bytes = value.as_bytes();
    let Some(start) = (after..bytes.len()).find(|&i| JWT_CHARS.contains(&bytes[i])) else {
        return value;
    };
    let end = (start..bytes.len())
        .find(|&i| !JWT_CHARS.contains(&bytes[i]))
        .unwrap_or(bytes.len());
    &value[start..end]
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn extract(locations: &Locations, parts: &Parts) -> Vec<Token> {
    let mut tokens = Vec::new();
    for loc in &locations.headers {
        let values: Vec<&str> = parts
            .headers
            .get_all(&loc.name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            continue;
        }
        // Envoy reads all values of a header joined with ",".
        let joined = values.join(",");
        let value = if loc.prefix.is_empty() {
            joined.as_str()
        } else {
            match joined.find(&loc.prefix) {
                Some(pos) => extract_jwt(&joined, pos + loc.prefix.len()),
                None => continue,
            }
        };
        tokens.push(Token {
            value: value.to_string(),
            issuers: loc.issuers.clone(),
            header: Some(loc.name.clone()),
        });
    }
    if let Some(query) = parts.uri.query() {
        for loc in &locations.params {
            let found = query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == loc.name).then_some(v)
            });
            if let Some(v) = found {
                tokens.push(Token {
                    value: percent_decode(v),
                    issuers: loc.issuers.clone(),
                    header: None,
                });
            }
        }
    }
    tokens
}

struct Run<'a> {
    filter: &'a JwtAuthn,
    parts: &'a mut Parts,
    ctx: &'a mut SecurityCtx,
    now: u64,
}

enum Mode {
    /// A named provider (with audiences overriding its own).
    Provider(usize, Option<weft_identity::jwt::Audiences>),
    AllowMissing,
    AllowFailed,
}

impl Run<'_> {
    fn verify_token(&mut self, token: &Token, mode: &Mode) -> Result<(), JwtStatus> {
        let jwt = Jwt::parse(&token.value)?;
        if !token.issuers.iter().any(|i| i.is_empty() || *i == jwt.iss) {
            return Err(JwtStatus::JwtUnknownIssuer);
        }
        let (idx, audiences) = match mode {
            Mode::Provider(i, aud) => (*i, aud.as_ref()),
            _ => (
                self.filter
                    .provider_for_issuer(&jwt.iss)
                    .ok_or(JwtStatus::JwtUnknownIssuer)?,
                None,
            ),
        };
        let provider = &self.filter.providers[idx];
        jwt.verify_time(self.now, provider.clock_skew)?;
        if !audiences
            .unwrap_or(&provider.audiences)
            .allows(&jwt.audiences)
        {
            return Err(JwtStatus::JwtAudienceNotAllowed);
        }
        let jwks = provider.jwks.as_ref().map_err(|s| *s)?;
        verify_signature(&jwt, jwks)?;
        // Good token.
        let headers = &mut self.parts.headers;
        if let Some(h) = &provider.payload_header
            && let Ok(v) = HeaderValue::from_str(jwt.payload_b64())
        {
            headers.insert(h.clone(), v);
        }
        if !provider.forward
            && let Some(h) = &token.header
        {
            headers.remove(h);
        }
        if let Some(key) = &provider.payload_in_metadata {
            let payload = Arc::new(Value::Object(jwt.payload));
            match self.ctx.jwt_payloads.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = payload,
                None => self.ctx.jwt_payloads.push((key.clone(), payload)),
            }
        }
        Ok(())
    }

    /// One authenticator (Envoy's `AuthenticatorImpl`).
    fn authenticate(&mut self, mode: Mode) -> Result<(), JwtStatus> {
        let filter = self.filter;
        let locations = match &mode {
            Mode::Provider(i, _) => &filter.providers[*i].locations,
            _ => &filter.all_locations,
        };
        let tokens = extract(locations, self.parts);
        if tokens.is_empty() {
            return match mode {
                Mode::Provider(..) => Err(JwtStatus::JwtMissed),
                _ => Ok(()),
            };
        }
        // Envoy verifies from the last token found.
        for token in tokens.iter().rev() {
            match self.verify_token(token, &mode) {
                Ok(()) => {}
                Err(status) => {
                    tracing::debug!(target: "jwt", %status, "JWT verification failed");
                    if !matches!(mode, Mode::AllowFailed) {
                        return Err(status);
                    }
                }
            }
        }
        Ok(())
    }

    fn eval(&mut self, r: &Requirement) -> Result<(), JwtStatus> {
        match r {
            Requirement::Provider(i, aud) => self.authenticate(Mode::Provider(*i, aud.clone())),
            Requirement::AllowMissing => self.authenticate(Mode::AllowMissing),
            Requirement::AllowMissingOrFailed => self.authenticate(Mode::AllowFailed),
            Requirement::All(children) => children.iter().try_for_each(|c| self.eval(c)),
            Requirement::Any(children) => {
                let mut last_real = None;
                let mut unknown_issuer = false;
                for c in children {
                    match self.eval(c) {
                        Ok(()) => return Ok(()),
                        Err(JwtStatus::JwtMissed) => {}
                        Err(JwtStatus::JwtUnknownIssuer) => unknown_issuer = true,
                        Err(s) => last_real = Some(s),
                    }
                }
                Err(last_real.unwrap_or(if unknown_issuer {
                    JwtStatus::JwtUnknownIssuer
                } else {
                    JwtStatus::JwtMissed
                }))
            }
        }
    }
}

fn is_cors_preflight(parts: &Parts) -> bool {
    let present = |h: &str| parts.headers.get(h).is_some_and(|v| !v.is_empty());
    parts.method == Method::OPTIONS && present("origin") && present("access-control-request-method")
}

/// Envoy's `buildOriginalUri` with the 256-byte path limit jwt_authn uses.
fn original_uri(parts: &Parts) -> String {
    let scheme = parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.scheme_str())
        .unwrap_or("http");
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("");
    let path = parts
        .headers
        .get("x-envoy-original-path")
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.path_and_query().map(|p| p.as_str()))
        .unwrap_or("/");
    let mut end = path.len().min(256);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{scheme}://{host}{}", &path[..end])
}

fn denied(status: JwtStatus, parts: &Parts) -> JwtDenied {
    let mut realm = format!("Bearer realm=\"{}\"", original_uri(parts));
    if status != JwtStatus::JwtMissed {
        realm.push_str(", error=\"invalid_token\"");
    }
    JwtDenied {
        status: if status == JwtStatus::JwtAudienceNotAllowed {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        },
        jwt_status: status,
        body: status.to_string(),
        www_authenticate: HeaderValue::from_str(&realm)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer")),
        details: format!("jwt_authn_access_denied{{{}}}", status.details()),
    }
}

/// Runs jwt_authn on a request: `Ok` lets it continue (with tokens removed / payload headers
/// set as configured and verified payloads in `ctx`), `Err` is the local reply to send.
pub fn authenticate(
    filter: &JwtAuthn,
    parts: &mut Parts,
    ctx: &mut SecurityCtx,
) -> Result<(), JwtDenied> {
    authenticate_at(filter, parts, ctx, weft_identity::jwt::now_secs())
}

/// [`authenticate`] at Unix time `now`.
pub fn authenticate_at(
    filter: &JwtAuthn,
    parts: &mut Parts,
    ctx: &mut SecurityCtx,
    now: u64,
) -> Result<(), JwtDenied> {
    for h in &filter.payload_headers {
        parts.headers.remove(h);
    }
    if filter.bypass_cors_preflight && is_cors_preflight(parts) {
        tracing::debug!(target: "jwt", "CORS preflight request bypassed regardless of JWT requirements");
        return Ok(());
    }
    let path = parts.uri.path().to_string();
    let Some(rule) = filter.rules.iter().find(|r| r.matcher.matches(&path)) else {
        return Ok(());
    };
    let Some(requires) = &rule.requires else {
        return Ok(());
    };
    let mut run = Run {
        filter,
        parts,
        ctx,
        now,
    };
    match run.eval(requires) {
        Ok(()) => Ok(()),
        Err(status) => {
            tracing::debug!(target: "jwt", %status, "jwt_authn denied the request");
            Err(denied(status, run.parts))
        }
    }
}

/// Istio's claim processing: a string becomes its space-separated words, a list of strings
/// stays, an object recurses; numbers, booleans, null and mixed lists are left out.
fn process_claims(payload: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in payload {
        let processed = match v {
            Value::String(s) => Some(Value::Array(
                s.split(' ')
                    .filter(|w| !w.is_empty())
                    .map(|w| Value::String(w.to_string()))
                    .collect(),
            )),
            Value::Array(items) if items.iter().all(Value::is_string) => Some(v.clone()),
            Value::Object(obj) => Some(Value::Object(process_claims(obj))),
            _ => None,
        };
        if let Some(p) = processed {
            out.insert(k.clone(), p);
        }
    }
    out
}

fn first(claims: &Map<String, Value>, key: &str) -> Option<String> {
    claims
        .get(key)?
        .as_array()?
        .first()?
        .as_str()
        .map(str::to_string)
}

/// The request authentication Istio derives from a verified payload.
pub fn request_auth(payload: &Value) -> Option<RequestAuth> {
    let obj = payload.as_object()?;
    let claims = process_claims(obj);
    let principal = match (first(&claims, "iss"), first(&claims, "sub")) {
        (Some(iss), Some(sub)) => Some(format!("{iss}/{sub}")),
        _ => None,
    };
    Some(RequestAuth {
        principal,
        audiences: first(&claims, "aud"),
        presenter: first(&claims, "azp"),
        raw_claims: payload.to_string(),
        claims,
    })
}

/// Runs istio_authn: the first origin issuer (in order) with a verified, non-empty payload sets
/// `ctx.auth`; none leaves it unset (origins are optional: the request continues).
pub fn istio_authn(filter: &IstioAuthn, ctx: &mut SecurityCtx) {
    for issuer in &filter.issuers {
        let payload = ctx
            .jwt_payloads
            .iter()
            .find(|(k, _)| **k == **issuer)
            .map(|(_, p)| p.clone());
        if let Some(p) = payload
            && p.as_object().is_some_and(|o| !o.is_empty())
        {
            ctx.auth = request_auth(&p);
            return;
        }
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
