//! JSON Web Tokens as Envoy's `jwt_authn` filter checks them (Google's jwt_verify_lib): parsing
//! with the library's exact error statuses, JWKS parsing (RSA, EC P-256/384/521, oct, OKP
//! Ed25519; keys that don't parse are skipped), `kid`/`alg` key selection, signature
//! verification (RS/PS/ES/HS 256/384/512, EdDSA) with aws-lc-rs, the time window with a clock
//! skew and the audience check.
//!
//! Known difference: aws-lc-rs verifies RSA signatures only with keys of 2048 bits or more
//! (BoringSSL in Envoy also accepts 1024-bit keys); a smaller key fails verification.

use aws_lc_rs::{hmac, signature};
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

/// Envoy's default `clock_skew_seconds`.
pub const CLOCK_SKEW_SECONDS: u64 = 60;

/// base64url as absl's `WebSafeBase64Unescape` reads it: padding optional.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Encodes bytes as unpadded base64url (JWT segments, JWK members).
pub fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unbase64url(s: &str) -> Option<Vec<u8>> {
    B64URL.decode(s).ok()
}

/// jwt_verify_lib's statuses; `Display` is the library's exact string (what Envoy puts in the
/// 401 body and, with spaces as `_`, in the response code details).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum JwtStatus {
    #[error("Jwt is missing")]
    JwtMissed,
    #[error("Jwt not yet valid")]
    JwtNotYetValid,
    #[error("Jwt is expired")]
    JwtExpired,
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    JwtBadFormat,
    #[error("Jwt header is an invalid Base64url encoded")]
    JwtHeaderParseErrorBadBase64,
    #[error("Jwt header is an invalid JSON")]
    JwtHeaderParseErrorBadJson,
    #[error("Jwt header [alg] field is required and must be a string")]
    JwtHeaderBadAlg,
    #[error("Jwt header [alg] is not supported")]
    JwtHeaderNotImplementedAlg,
    #[error("Jwt header [kid] field is not a string")]
    JwtHeaderBadKid,
    #[error("Jwt payload is an invalid Base64url encoded")]
    JwtPayloadParseErrorBadBase64,
    #[error("Jwt ED25519 signature is wrong length")]
    JwtEd25519SignatureWrongLength,
    #[error("Jwt payload is an invalid JSON")]
    JwtPayloadParseErrorBadJson,
    #[error("Jwt payload [iss] field is not a string")]
    JwtPayloadParseErrorIssNotString,
    #[error("Jwt payload [sub] field is not a string")]
    JwtPayloadParseErrorSubNotString,
    #[error("Jwt payload [iat] field is not an integer")]
    JwtPayloadParseErrorIatNotInteger,
    #[error("Jwt payload [iat] field is not a positive 64 bit integer")]
    JwtPayloadParseErrorIatOutOfRange,
    #[error("Jwt payload [nbf] field is not an integer")]
    JwtPayloadParseErrorNbfNotInteger,
    #[error("Jwt payload [nbf] field is not a positive 64 bit integer")]
    JwtPayloadParseErrorNbfOutOfRange,
    #[error("Jwt payload [exp] field is not an integer")]
    JwtPayloadParseErrorExpNotInteger,
    #[error("Jwt payload [exp] field is not a positive 64 bit integer")]
    JwtPayloadParseErrorExpOutOfRange,
    #[error("Jwt payload [jti] field is not a string")]
    JwtPayloadParseErrorJtiNotString,
    #[error("Jwt payload [aud] field is not a string or string list")]
    JwtPayloadParseErrorAudNotString,
    #[error("Jwt signature is an invalid Base64url encoded")]
    JwtSignatureParseErrorBadBase64,
    #[error("Jwt issuer is not configured")]
    JwtUnknownIssuer,
    #[error("Audiences in Jwt are not allowed")]
    JwtAudienceNotAllowed,
    #[error("Jwt verification fails")]
    JwtVerificationFail,
    #[error("Found multiple Jwt tokens")]
    JwtMultipleTokens,
    #[error("Jwks is an invalid JSON")]
    JwksParseError,
    #[error("Jwks does not have [keys] field")]
    JwksNoKeys,
    #[error("[keys] in Jwks is not an array")]
    JwksBadKeys,
    #[error("Jwks doesn't have any valid public key")]
    JwksNoValidKeys,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    JwksKidAlgMismatch,
    #[error("Jwks RSA [n] or [e] field is missing or has a parse error")]
    JwksRsaParseError,
    #[error("Jwks EC create key fail")]
    JwksEcCreateKeyFail,
    #[error("Jwks EC [x] or [y] field is an invalid Base64.")]
    JwksEcXorYBadBase64,
    #[error("Jwks EC [x] and [y] fields have a parse error.")]
    JwksEcParseError,
    #[error("Jwks Oct key is an invalid Base64")]
    JwksOctBadBase64,
    #[error("Jwks OKP [x] field is an invalid Base64.")]
    JwksOkpXBadBase64,
    #[error("Jwks OKP [x] field is wrong length.")]
    JwksOkpXWrongLength,
    #[error("Jwks remote fetch is failed")]
    JwksFetchFail,
    #[error("[kty] is missing in [keys]")]
    JwksMissingKty,
    #[error("[kty] is bad in [keys]")]
    JwksBadKty,
    #[error("[kty] is not supported in [keys]")]
    JwksNotImplementedKty,
    #[error("[alg] is not started with [RS] or [PS] for an RSA key")]
    JwksRsaKeyBadAlg,
    #[error("[n] field is missing for a RSA key")]
    JwksRsaKeyMissingN,
    #[error("[n] field is not string for a RSA key")]
    JwksRsaKeyBadN,
    #[error("[e] field is missing for a RSA key")]
    JwksRsaKeyMissingE,
    #[error("[e] field is not string for a RSA key")]
    JwksRsaKeyBadE,
    #[error("[alg] is not started with [ES] for an EC key")]
    JwksEcKeyBadAlg,
    #[error("[crv] field is not string for an EC key")]
    JwksEcKeyBadCrv,
    #[error("[crv] or [alg] field is not supported for an EC key")]
    JwksEcKeyAlgOrCrvUnsupported,
    #[error("[crv] field specified is not compatible with [alg] for an EC key")]
    JwksEcKeyAlgNotCompatibleWithCrv,
    #[error("[x] field is missing for an EC key")]
    JwksEcKeyMissingX,
    #[error("[x] field is not string for an EC key")]
    JwksEcKeyBadX,
    #[error("[y] field is missing for an EC key")]
    JwksEcKeyMissingY,
    #[error("[y] field is not string for an EC key")]
    JwksEcKeyBadY,
    #[error("[alg] does not start with [HS] for an HMAC key")]
    JwksHmacKeyBadAlg,
    #[error("[k] field is missing for an HMAC key")]
    JwksHmacKeyMissingK,
    #[error("[k] field is not string for an HMAC key")]
    JwksHmacKeyBadK,
    #[error("[alg] is not [EdDSA] for an OKP key")]
    JwksOkpKeyBadAlg,
    #[error("[crv] field is missing for an OKP key")]
    JwksOkpKeyMissingCrv,
    #[error("[crv] field is not string for an OKP key")]
    JwksOkpKeyBadCrv,
    #[error("[crv] field is not supported for an OKP key")]
    JwksOkpKeyCrvUnsupported,
    #[error("[x] field is missing for an OKP key")]
    JwksOkpKeyMissingX,
    #[error("[x] field is not string for an OKP key")]
    JwksOkpKeyBadX,
}

impl JwtStatus {
    /// The status string with spaces as `_`, as Envoy writes it in response code details
    /// (`jwt_authn_access_denied{Jwt_verification_fails}`).
    pub fn details(self) -> String {
        self.to_string()
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect()
    }
}

const ALGS: [&str; 13] = [
    "ES256", "ES384", "ES512", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
    "PS384", "PS512", "EdDSA",
];

/// A parsed (not yet verified) JWT.
#[derive(Debug, Clone)]
pub struct Jwt {
    pub alg: String,
    /// `kid`; empty when absent.
    pub kid: String,
    /// `iss`; empty when absent.
    pub iss: String,
    /// `sub`; empty when absent.
    pub sub: String,
    /// `aud`, a string or a list of strings.
    pub audiences: Vec<String>,
    /// `iat`, `nbf`, `exp`; 0 when absent.
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// `jti`; empty when absent.
    pub jti: String,
    /// The payload as JSON.
    pub payload: Map<String, Value>,
    header_b64: String,
    payload_b64: String,
    signature: Vec<u8>,
}

enum Get<T> {
    Ok(T),
    Missing,
    WrongType,
    OutOfRange,
}

fn get_string(obj: &Map<String, Value>, key: &str) -> Get<String> {
    match obj.get(key) {
        None => Get::Missing,
        Some(Value::String(s)) => Get::Ok(s.clone()),
        Some(_) => Get::WrongType,
    }
}

/// protobuf Struct numbers are doubles: negative or ≥ 2^64 is out of range, fractions truncate.
fn get_u64(obj: &Map<String, Value>, key: &str) -> Get<u64> {
    match obj.get(key) {
        None => Get::Missing,
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Get::Ok(u)
            } else {
                match n.as_f64() {
                    Some(f) if (0.0..18_446_744_073_709_551_616.0).contains(&f) => {
                        Get::Ok(f as u64)
                    }
                    _ => Get::OutOfRange,
                }
            }
        }
        Some(_) => Get::WrongType,
    }
}

fn get_u64_or(
    obj: &Map<String, Value>,
    key: &str,
    wrong: JwtStatus,
    range: JwtStatus,
) -> Result<u64, JwtStatus> {
    match get_u64(obj, key) {
        Get::Ok(v) => Ok(v),
        Get::Missing => Ok(0),
        Get::WrongType => Err(wrong),
        Get::OutOfRange => Err(range),
    }
}

fn get_string_or(
    obj: &Map<String, Value>,
    key: &str,
    wrong: JwtStatus,
) -> Result<String, JwtStatus> {
    match get_string(obj, key) {
        Get::Ok(s) => Ok(s),
        Get::WrongType => Err(wrong),
        _ => Ok(String::new()),
    }
}

impl Jwt {
    /// Parses a compact JWS as jwt_verify_lib's `Jwt::parseFromString` does.
    pub fn parse(token: &str) -> Result<Jwt, JwtStatus> {
        let parts: Vec<&str> = token.split('.').filter(|p| !p.is_empty()).collect();
        let [header_b64, payload_b64, signature_b64] = parts[..] else {
            return Err(JwtStatus::JwtBadFormat);
        };
        let header_raw = unbase64url(header_b64).ok_or(JwtStatus::JwtHeaderParseErrorBadBase64)?;
        let header: Map<String, Value> = serde_json::from_slice(&header_raw)
            .map_err(|_| JwtStatus::JwtHeaderParseErrorBadJson)?;
        let Get::Ok(alg) = get_string(&header, "alg") else {
            return Err(JwtStatus::JwtHeaderBadAlg);
        };
        if !ALGS.contains(&alg.as_str()) {
            return Err(JwtStatus::JwtHeaderNotImplementedAlg);
        }
        let kid = get_string_or(&header, "kid", JwtStatus::JwtHeaderBadKid)?;
        let payload_raw =
            unbase64url(payload_b64).ok_or(JwtStatus::JwtPayloadParseErrorBadBase64)?;
        let payload: Map<String, Value> = serde_json::from_slice(&payload_raw)
            .map_err(|_| JwtStatus::JwtPayloadParseErrorBadJson)?;
        let iss = get_string_or(&payload, "iss", JwtStatus::JwtPayloadParseErrorIssNotString)?;
        let sub = get_string_or(&payload, "sub", JwtStatus::JwtPayloadParseErrorSubNotString)?;
        let iat = get_u64_or(
            &payload,
            "iat",
            JwtStatus::JwtPayloadParseErrorIatNotInteger,
            JwtStatus::JwtPayloadParseErrorIatOutOfRange,
        )?;
        let nbf = get_u64_or(
            &payload,
            "nbf",
            JwtStatus::JwtPayloadParseErrorNbfNotInteger,
            JwtStatus::JwtPayloadParseErrorNbfOutOfRange,
        )?;
        let exp = get_u64_or(
            &payload,
            "exp",
            JwtStatus::JwtPayloadParseErrorExpNotInteger,
            JwtStatus::JwtPayloadParseErrorExpOutOfRange,
        )?;
        let jti = get_string_or(&payload, "jti", JwtStatus::JwtPayloadParseErrorJtiNotString)?;
        let audiences = match payload.get("aud") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(JwtStatus::JwtPayloadParseErrorAudNotString)?,
            Some(_) => return Err(JwtStatus::JwtPayloadParseErrorAudNotString),
        };
        let signature =
            unbase64url(signature_b64).ok_or(JwtStatus::JwtSignatureParseErrorBadBase64)?;
        Ok(Jwt {
            alg,
            kid,
            iss,
            sub,
            audiences,
            iat,
            nbf,
            exp,
            jti,
            payload,
            header_b64: header_b64.to_string(),
            payload_b64: payload_b64.to_string(),
            signature,
        })
    }

    /// The payload segment as it appeared in the token (base64url, unpadded as sent); what
    /// Envoy writes into `forward_payload_header`.
    pub fn payload_b64(&self) -> &str {
        &self.payload_b64
    }

    /// `nbf` and `exp` against `now` (Unix seconds) with `skew` seconds of tolerance; a token
    /// without `exp` never expires.
    pub fn verify_time(&self, now: u64, skew: u64) -> Result<(), JwtStatus> {
        if now.saturating_add(skew) < self.nbf {
            return Err(JwtStatus::JwtNotYetValid);
        }
        if self.exp != 0 && now > self.exp.saturating_add(skew) {
            return Err(JwtStatus::JwtExpired);
        }
        Ok(())
    }
}

/// The audiences a provider accepts (jwt_verify_lib `CheckAudience`): `http://`/`https://` and
/// one trailing `/` are ignored on both sides; none configured accepts any token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audiences(Vec<String>);

fn sanitize_audience(aud: &str) -> &str {
    let a = aud
        .strip_prefix("http://")
        .or_else(|| aud.strip_prefix("https://"))
        .unwrap_or(aud);
    a.strip_suffix('/').unwrap_or(a)
}

impl Audiences {
    pub fn new<S: AsRef<str>>(configured: &[S]) -> Self {
        Audiences(
            configured
                .iter()
                .map(|a| sanitize_audience(a.as_ref()).to_string())
                .collect(),
        )
    }

    pub fn allows(&self, token_audiences: &[String]) -> bool {
        self.0.is_empty()
            || token_audiences
                .iter()
                .any(|a| self.0.iter().any(|c| c == sanitize_audience(a)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

#[derive(Debug, Clone)]
enum KeyMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed point `04 ‖ x ‖ y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Oct(Vec<u8>),
    Ed25519(Vec<u8>),
}

/// One usable key of a JWKS.
#[derive(Debug, Clone)]
pub struct Jwk {
    /// `kid`; empty when absent.
    pub kid: String,
    /// `alg`; empty when absent.
    pub alg: String,
    key: KeyMaterial,
}

/// A parsed key set: the keys that parsed, in document order.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

fn strip_leading_zeros(mut b: Vec<u8>) -> Vec<u8> {
    let zeros = b.iter().take_while(|x| **x == 0).count();
    b.drain(..zeros.min(b.len().saturating_sub(1)));
    b
}

fn required_string(
    obj: &Map<String, Value>,
    key: &str,
    missing: JwtStatus,
    wrong: JwtStatus,
) -> Result<String, JwtStatus> {
    match get_string(obj, key) {
        Get::Ok(s) => Ok(s),
        Get::Missing => Err(missing),
        _ => Err(wrong),
    }
}

fn parse_jwk(obj: &Map<String, Value>) -> Result<Jwk, JwtStatus> {
    let kty = match get_string(obj, "kty") {
        Get::Ok(k) => k,
        Get::Missing => return Err(JwtStatus::JwksMissingKty),
        _ => return Err(JwtStatus::JwksBadKty),
    };
    let kid = match get_string(obj, "kid") {
        Get::Ok(k) => k,
        _ => String::new(),
    };
    let alg = match get_string(obj, "alg") {
        Get::Ok(a) => a,
        _ => String::new(),
    };
    let key = match kty.as_str() {
        "RSA" => {
            if !alg.is_empty() && !alg.starts_with("RS") && !alg.starts_with("PS") {
                return Err(JwtStatus::JwksRsaKeyBadAlg);
            }
            let n = required_string(
                obj,
                "n",
                JwtStatus::JwksRsaKeyMissingN,
                JwtStatus::JwksRsaKeyBadN,
            )?;
            let e = required_string(
                obj,
                "e",
                JwtStatus::JwksRsaKeyMissingE,
                JwtStatus::JwksRsaKeyBadE,
            )?;
            let n = unbase64url(&n).ok_or(JwtStatus::JwksRsaParseError)?;
            let e = unbase64url(&e).ok_or(JwtStatus::JwksRsaParseError)?;
            if n.is_empty() || e.is_empty() {
                return Err(JwtStatus::JwksRsaParseError);
            }
            KeyMaterial::Rsa {
                n: strip_leading_zeros(n),
                e: strip_leading_zeros(e),
            }
        }
        "EC" => {
            if !alg.is_empty() && !alg.starts_with("ES") {
                return Err(JwtStatus::JwksEcKeyBadAlg);
            }
            let crv = match get_string(obj, "crv") {
                Get::Ok(c) => c,
                Get::Missing => String::new(),
                _ => return Err(JwtStatus::JwksEcKeyBadCrv),
            };
            let from_alg = match alg.as_str() {
                "ES256" => Some(Curve::P256),
                "ES384" => Some(Curve::P384),
                "ES512" => Some(Curve::P521),
                "" => None,
                _ => return Err(JwtStatus::JwksEcKeyAlgOrCrvUnsupported),
            };
            let from_crv = match crv.as_str() {
                "P-256" => Some(Curve::P256),
                "P-384" => Some(Curve::P384),
                "P-521" => Some(Curve::P521),
                "" => None,
                _ => return Err(JwtStatus::JwksEcKeyAlgOrCrvUnsupported),
            };
            let curve = match (from_alg, from_crv) {
                (Some(a), Some(c)) if a != c => {
                    return Err(JwtStatus::JwksEcKeyAlgNotCompatibleWithCrv);
                }
                (_, Some(c)) => c,
                (Some(a), None) => a,
                (None, None) => return Err(JwtStatus::JwksEcKeyAlgOrCrvUnsupported),
            };
            let x = required_string(
                obj,
                "x",
                JwtStatus::JwksEcKeyMissingX,
                JwtStatus::JwksEcKeyBadX,
            )?;
            let y = required_string(
                obj,
                "y",
                JwtStatus::JwksEcKeyMissingY,
                JwtStatus::JwksEcKeyBadY,
            )?;
            let x = unbase64url(&x).ok_or(JwtStatus::JwksEcXorYBadBase64)?;
            let y = unbase64url(&y).ok_or(JwtStatus::JwksEcXorYBadBase64)?;
            let len = curve.field_len();
            let x = strip_leading_zeros(x);
            let y = strip_leading_zeros(y);
            if x.len() > len || y.len() > len {
                return Err(JwtStatus::JwksEcParseError);
            }
            let mut point = vec![4u8];
            point.extend(std::iter::repeat_n(0, len - x.len()));
            point.extend(&x);
            point.extend(std::iter::repeat_n(0, len - y.len()));
            point.extend(&y);
            // The point must be on the curve.
            let check = match curve {
                Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
                Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
                Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
            };
            signature::ParsedPublicKey::new(check, &point)
                .map_err(|_| JwtStatus::JwksEcCreateKeyFail)?;
            KeyMaterial::Ec { curve, point }
        }
        "oct" => {
            if !alg.is_empty() && !alg.starts_with("HS") {
                return Err(JwtStatus::JwksHmacKeyBadAlg);
            }
            let k = required_string(
                obj,
                "k",
                JwtStatus::JwksHmacKeyMissingK,
                JwtStatus::JwksHmacKeyBadK,
            )?;
            let k = unbase64url(&k).ok_or(JwtStatus::JwksOctBadBase64)?;
            if k.is_empty() {
                return Err(JwtStatus::JwksOctBadBase64);
            }
            KeyMaterial::Oct(k)
        }
        "OKP" => {
            if !alg.is_empty() && alg != "EdDSA" {
                return Err(JwtStatus::JwksOkpKeyBadAlg);
            }
            let crv = required_string(
                obj,
                "crv",
                JwtStatus::JwksOkpKeyMissingCrv,
                JwtStatus::JwksOkpKeyBadCrv,
            )?;
            if crv != "Ed25519" {
                return Err(JwtStatus::JwksOkpKeyCrvUnsupported);
            }
            let x = required_string(
                obj,
                "x",
                JwtStatus::JwksOkpKeyMissingX,
                JwtStatus::JwksOkpKeyBadX,
            )?;
            let x = unbase64url(&x).ok_or(JwtStatus::JwksOkpXBadBase64)?;
            if x.len() != signature::ED25519_PUBLIC_KEY_LEN {
                return Err(JwtStatus::JwksOkpXWrongLength);
            }
            KeyMaterial::Ed25519(x)
        }
        _ => return Err(JwtStatus::JwksNotImplementedKty),
    };
    Ok(Jwk { kid, alg, key })
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys that don't parse are skipped (logged at
    /// debug); the set is an error when no key is usable.
    pub fn parse(json: &str) -> Result<Jwks, JwtStatus> {
        let doc: Value = serde_json::from_str(json).map_err(|_| JwtStatus::JwksParseError)?;
        let Value::Object(doc) = doc else {
            return Err(JwtStatus::JwksParseError);
        };
        let keys = match doc.get("keys") {
            None => return Err(JwtStatus::JwksNoKeys),
            Some(Value::Array(keys)) => keys,
            Some(_) => return Err(JwtStatus::JwksBadKeys),
        };
        let mut out = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let Value::Object(obj) = key else { continue };
            match parse_jwk(obj) {
                Ok(k) => out.push(k),
                Err(status) => tracing::debug!(index = i, %status, "JWKS key skipped"),
            }
        }
        if out.is_empty() {
            return Err(JwtStatus::JwksNoValidKeys);
        }
        Ok(Jwks { keys: out })
    }
}

fn rsa_params(alg: &str) -> Option<&'static signature::RsaParameters> {
    Some(match alg {
        "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
        "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
        "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
        "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
        "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn ec_alg(curve: Curve, alg: &str) -> Option<&'static signature::EcdsaVerificationAlgorithm> {
    // jwt_verify_lib hashes with the token's algorithm (SHA-256 unless ES384/ES512) and
    // verifies with the key's curve; aws-lc-rs has fixed pairs, the usual ones among them.
    Some(match (curve, alg) {
        (Curve::P256, "ES256") => &signature::ECDSA_P256_SHA256_FIXED,
        (Curve::P384, "ES384") => &signature::ECDSA_P384_SHA384_FIXED,
        (Curve::P521, "ES512") => &signature::ECDSA_P521_SHA512_FIXED,
        (Curve::P521, "ES384") => &signature::ECDSA_P521_SHA384_FIXED,
        (Curve::P521, _) => &signature::ECDSA_P521_SHA256_FIXED,
        _ => return None,
    })
}

fn hmac_alg(alg: &str) -> hmac::Algorithm {
    match alg {
        "HS384" => hmac::HMAC_SHA384,
        "HS512" => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    }
}

/// Verifies the signature with the candidate keys (jwt_verify_lib
/// `verifyJwtWithoutTimeChecking`): a key is a candidate when its `kid` equals the token's (or
/// either has none) and its `alg`, if set, is the token's.
pub fn verify_signature(jwt: &Jwt, jwks: &Jwks) -> Result<(), JwtStatus> {
    let signed = format!("{}.{}", jwt.header_b64, jwt.payload_b64);
    let signed = signed.as_bytes();
    let sig = jwt.signature.as_slice();
    let mut matched = false;
    for jwk in &jwks.keys {
        if !jwt.kid.is_empty() && !jwk.kid.is_empty() && jwk.kid != jwt.kid {
            continue;
        }
        if !jwk.alg.is_empty() && jwk.alg != jwt.alg {
            continue;
        }
        matched = true;
        let ok = match &jwk.key {
            KeyMaterial::Ec { curve, point } => ec_alg(*curve, &jwt.alg).is_some_and(|alg| {
                signature::UnparsedPublicKey::new(alg, point)
                    .verify(signed, sig)
                    .is_ok()
            }),
            KeyMaterial::Rsa { n, e } => rsa_params(&jwt.alg).is_some_and(|params| {
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, signed, sig)
                    .is_ok()
            }),
            KeyMaterial::Oct(k) => {
                let key = hmac::Key::new(hmac_alg(&jwt.alg), k);
                hmac::verify(&key, signed, sig).is_ok()
            }
            KeyMaterial::Ed25519(x) => {
                if sig.len() != 64 {
                    return Err(JwtStatus::JwtEd25519SignatureWrongLength);
                }
                signature::UnparsedPublicKey::new(&signature::ED25519, x)
                    .verify(signed, sig)
                    .is_ok()
            }
        };
        if ok {
            return Ok(());
        }
    }
    Err(if matched {
        JwtStatus::JwtVerificationFail
    } else {
        JwtStatus::JwksKidAlgMismatch
    })
}

/// Everything jwt_verify_lib's `verifyJwt(jwt, jwks, audiences, now)` checks, in Envoy's
/// order: time window (with `skew`), audiences, then the signature.
pub fn verify(
    jwt: &Jwt,
    jwks: &Jwks,
    audiences: &Audiences,
    now: u64,
    skew: u64,
) -> Result<(), JwtStatus> {
    jwt.verify_time(now, skew)?;
    if !audiences.allows(&jwt.audiences) {
        return Err(JwtStatus::JwtAudienceNotAllowed);
    }
    verify_signature(jwt, jwks)
}

/// An HS256-signed token for `header` and `payload` with `secret` (tests and tools: a token
/// with any claims; pair it with `{"keys":[{"kty":"oct","k":"<base64url(secret)>"}]}`).
pub fn hs256_token(secret: &[u8], header: &Value, payload: &Value) -> String {
    let h = base64url(header.to_string().as_bytes());
    let p = base64url(payload.to_string().as_bytes());
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        format!("{h}.{p}").as_bytes(),
    );
    format!("{h}.{p}.{}", base64url(tag.as_ref()))
}

/// Current Unix time in seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
