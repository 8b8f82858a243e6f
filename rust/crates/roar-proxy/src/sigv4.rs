//! Verifying the client's AWS Signature Version 4 (header auth and presigned URLs).
//!
//! This is our own verifier, not aws-sigv4's signer run backwards: the signer
//! canonicalises what *it* would send, while a verifier must rebuild exactly
//! what the *client* signed from the bytes on the wire (path decoded and
//! re-encoded once, query sorted by name then value, header values trimmed and
//! inner whitespace collapsed). Policies S3 leaves to the server are strict
//! here: every `x-amz-*` header and `host` must be signed (an unsigned
//! `x-amz-copy-source` added to a presigned PUT would turn it into a copy),
//! the scope date must be the request date, the clock skew is at most 15
//! minutes, presigned URLs expire (at most 7 days), and signatures are
//! compared in constant time. It must not log or return secrets.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Maximum clock difference between client and proxy (what S3 allows).
const MAX_SKEW_SECS: i64 = 15 * 60;
/// Longest presigned URL validity S3 accepts.
const MAX_PRESIGN_SECS: i64 = 7 * 24 * 3600;

/// The one key pair the proxy holds: clients must sign with it, and upstream
/// requests are re-signed with it.
#[derive(Clone)]
pub struct Creds {
    /// AWS access key id.
    pub access_key: String,
    /// AWS secret access key (never printed).
    pub secret_key: String,
    /// Session token of temporary credentials, if any.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Creds({}, <secret>)", self.access_key)
    }
}

/// What the client declared about its body in `x-amz-content-sha256`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A hex sha256 of the whole body: checked by the proxy before the last bytes go upstream.
    Hex(String),
    /// `UNSIGNED-PAYLOAD` (presigned requests, or clients that skip hashing).
    Unsigned,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: aws-chunked framing without signatures; forwarded as is.
    StreamingUnsignedTrailer,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`: signed chunks, each verified before release.
    StreamingSigned(ChunkSigner),
}

/// What verifying a chain of signed aws-chunks needs: the request's signing key and scope,
/// and the seed (the request signature) that the first chunk's signature chains from.
#[derive(Clone)]
pub struct ChunkSigner {
    key: Vec<u8>,
    amz_date: String,
    scope: String,
    /// Signature of the previous chunk (initially the request's).
    pub seed: String,
    /// Whether trailers (with `x-amz-trailer-signature`) follow the last chunk.
    pub trailer: bool,
}

impl std::fmt::Debug for ChunkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkSigner(trailer: {})", self.trailer)
    }
}

impl PartialEq for ChunkSigner {
    fn eq(&self, other: &Self) -> bool {
        self.seed == other.seed
    }
}

impl Eq for ChunkSigner {}

/// sha256 of the empty string, part of every chunk's string to sign.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl ChunkSigner {
    /// Checks one chunk's signature (chained from `prev`), in constant time.
    pub fn chunk_ok(&self, prev: &str, data: &[u8], sig: &str) -> bool {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            prev,
            EMPTY_SHA256,
            hex::encode(Sha256::digest(data))
        );
        bool::from(
            hex::encode(hmac(&self.key, sts.as_bytes()))
                .as_bytes()
                .ct_eq(sig.as_bytes()),
        )
    }

    /// Checks `x-amz-trailer-signature` over the canonical trailer block (`name:value\n` lines).
    pub fn trailer_ok(&self, prev: &str, canonical_trailers: &str, sig: &str) -> bool {
        let sts = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            prev,
            hex::encode(Sha256::digest(canonical_trailers.as_bytes()))
        );
        bool::from(
            hex::encode(hmac(&self.key, sts.as_bytes()))
                .as_bytes()
                .ct_eq(sig.as_bytes()),
        )
    }
}

/// A request whose signature checked out.
#[derive(Debug)]
pub struct Verified {
    /// How the body is declared.
    pub payload: Payload,
    /// Whether the auth came from the query string (presigned URL).
    pub presigned: bool,
}

/// Why a request was refused: maps one to one onto an S3 error.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthError {
    /// HTTP status S3 would answer.
    pub status: u16,
    /// S3 error code.
    pub code: &'static str,
    /// Human-readable message (no secrets).
    pub message: String,
}

fn err(status: u16, code: &'static str, message: impl Into<String>) -> AuthError {
    AuthError {
        status,
        code,
        message: message.into(),
    }
}

fn access_denied(message: impl Into<String>) -> AuthError {
    err(403, "AccessDenied", message)
}

fn mismatch() -> AuthError {
    err(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided.",
    )
}

/// Characters left as is by S3's URI encoding (RFC 3986 unreserved).
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Percent-encodes `bytes` the way SigV4 wants (uppercase hex); `/` kept when `keep_slash`.
pub fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    for &b in bytes {
        if unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (a `+` stays a `+`: S3 paths and botocore queries escape spaces as `%20`).
/// None if an escape is malformed.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The canonical (single-encoded) form of a request path: decoded, then encoded once.
/// Falls back to the raw path when it holds a malformed escape.
pub fn canonical_path(raw: &str) -> String {
    match percent_decode(raw) {
        Some(bytes) => uri_encode(&bytes, true),
        None => raw.to_string(),
    }
}

/// Query parameters as decoded (name, value) pairs, in wire order.
pub fn query_pairs(raw: Option<&str>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(q) = raw else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(k).unwrap_or_else(|| k.as_bytes().to_vec()),
                percent_decode(v).unwrap_or_else(|| v.as_bytes().to_vec()),
            )
        })
        .collect()
}

/// The canonical query string of `pairs`: encoded, sorted by name then value.
pub fn canonical_query<'a>(pairs: impl Iterator<Item = &'a (Vec<u8>, Vec<u8>)>) -> String {
    let mut enc: Vec<(String, String)> = pairs
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    enc.sort();
    enc.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header's canonical value: every value of that name, trimmed, inner whitespace collapsed,
/// joined with `,`. None if the header is absent or not visible ASCII/UTF-8.
fn canonical_header_value(parts: &Parts, name: &str) -> Option<String> {
    let mut vals = Vec::new();
    for v in parts.headers.get_all(name) {
        let s = std::str::from_utf8(v.as_bytes()).ok()?;
        vals.push(s.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    if vals.is_empty() {
        None
    } else {
        Some(vals.join(","))
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The SigV4 signing key for a scope.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// Seconds since the epoch of an ISO 8601 basic timestamp `YYYYMMDDTHHMMSSZ`.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = std::str::from_utf8(&b[r]).ok()?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

/// The parsed `Credential=` scope.
struct Scope<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

fn parse_scope(cred: &str) -> Result<Scope<'_>, AuthError> {
    let p: Vec<&str> = cred.split('/').collect();
    if p.len() != 5 || p[4] != "aws4_request" {
        return Err(err(
            400,
            "AuthorizationHeaderMalformed",
            "malformed credential scope",
        ));
    }
    if p[3] != "s3" {
        return Err(err(
            400,
            "AuthorizationHeaderMalformed",
            format!("wrong service '{}' in credential scope", p[3]),
        ));
    }
    Ok(Scope {
        access_key: p[0],
        date: p[1],
        region: p[2],
        service: p[3],
    })
}

/// Everything the string to sign needs, gathered from either auth location.
struct Claim<'a> {
    scope: Scope<'a>,
    amz_date: String,
    signed_headers: Vec<String>,
    signature: String,
    payload_line: String,
}

fn now_secs(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Verifies the request's SigV4 signature (header or presigned) against `creds`.
pub fn verify(parts: &Parts, creds: &Creds, now: SystemTime) -> Result<Verified, AuthError> {
    let query = query_pairs(parts.uri.query());
    let auth_header = parts.headers.get(http::header::AUTHORIZATION);
    let presigned = query.iter().any(|(k, _)| k == b"X-Amz-Algorithm");
    let content_sha = parts
        .headers
        .get("x-amz-content-sha256")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| err(400, "InvalidArgument", "x-amz-content-sha256 is not ASCII"))
        })
        .transpose()?;
    let auth_value;
    let claim = if let Some(h) = auth_header {
        if presigned {
            return Err(err(
                400,
                "InvalidArgument",
                "only one auth mechanism allowed",
            ));
        }
        auth_value = h
            .to_str()
            .map_err(|_| err(400, "AuthorizationHeaderMalformed", "not ASCII"))?
            .to_owned();
        let Some(rest) = auth_value.strip_prefix("AWS4-HMAC-SHA256 ") else {
            if auth_value.starts_with("AWS ") {
                return Err(err(
                    501,
                    "NotImplemented",
                    "SigV2 header authentication is not supported by roar-proxy yet",
                ));
            }
            return Err(err(
                400,
                "AuthorizationHeaderMalformed",
                "unsupported authorization type",
            ));
        };
        let (mut cred, mut sh, mut sig) = (None, None, None);
        for item in rest.split(',') {
            match item.trim().split_once('=') {
                Some(("Credential", v)) => cred = Some(v),
                Some(("SignedHeaders", v)) => sh = Some(v),
                Some(("Signature", v)) => sig = Some(v),
                _ => {}
            }
        }
        let (Some(cred), Some(sh), Some(sig)) = (cred, sh, sig) else {
            return Err(err(
                400,
                "AuthorizationHeaderMalformed",
                "missing Credential, SignedHeaders or Signature",
            ));
        };
        let amz_date = parts
            .headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| access_denied("AWS authentication requires a valid x-amz-date header"))?
            .to_owned();
        let payload_line = content_sha.clone().ok_or_else(|| {
            err(
                400,
                "InvalidRequest",
                "Missing required header for this request: x-amz-content-sha256",
            )
        })?;
        Claim {
            scope: parse_scope(cred)?,
            amz_date,
            signed_headers: sh.split(';').map(str::to_owned).collect(),
            signature: sig.to_owned(),
            payload_line,
        }
    } else if presigned {
        let get = |name: &str| query_param(&query, name);
        let missing = missing_presign_params;
        if get("X-Amz-Algorithm").as_deref() != Some("AWS4-HMAC-SHA256") {
            return Err(err(
                400,
                "AuthorizationQueryParametersError",
                "X-Amz-Algorithm must be AWS4-HMAC-SHA256",
            ));
        }
        let amz_date = get("X-Amz-Date").ok_or_else(missing)?;
        let expires: i64 = get("X-Amz-Expires")
            .and_then(|e| e.parse().ok())
            .ok_or_else(missing)?;
        if !(1..=MAX_PRESIGN_SECS).contains(&expires) {
            return Err(err(
                400,
                "AuthorizationQueryParametersError",
                "X-Amz-Expires must be between 1 and 604800 seconds",
            ));
        }
        let t = parse_amz_date(&amz_date).ok_or_else(|| access_denied("malformed X-Amz-Date"))?;
        let now = now_secs(now);
        if now > t + expires {
            return Err(access_denied("Request has expired"));
        }
        if t > now + MAX_SKEW_SECS {
            return Err(err(
                403,
                "RequestTimeTooSkewed",
                "The difference between the request time and the server's time is too large.",
            ));
        }
        // Leak-free: these become owned strings so `cred` can borrow from `auth_value`.
        auth_value = get("X-Amz-Credential").ok_or_else(missing)?;
        Claim {
            scope: parse_scope(&auth_value)?,
            amz_date,
            signed_headers: get("X-Amz-SignedHeaders")
                .ok_or_else(missing)?
                .split(';')
                .map(str::to_owned)
                .collect(),
            signature: get("X-Amz-Signature").ok_or_else(missing)?,
            payload_line: get("X-Amz-Content-Sha256").unwrap_or_else(|| "UNSIGNED-PAYLOAD".into()),
        }
    } else if query.iter().any(|(k, _)| k == b"AWSAccessKeyId")
        && query.iter().any(|(k, _)| k == b"Signature")
    {
        return verify_v2_query(parts, &query, creds, now);
    } else {
        return Err(access_denied(
            "Anonymous requests are not accepted by roar-proxy",
        ));
    };

    // Scope and time.
    let t = parse_amz_date(&claim.amz_date).ok_or_else(|| access_denied("malformed x-amz-date"))?;
    if claim.scope.date != &claim.amz_date[..8] {
        return Err(err(
            400,
            "AuthorizationHeaderMalformed",
            "credential scope date is not the request date",
        ));
    }
    if !presigned && (now_secs(now) - t).abs() > MAX_SKEW_SECS {
        return Err(err(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the server's time is too large.",
        ));
    }
    if claim.scope.access_key != creds.access_key {
        return Err(err(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        ));
    }

    // Every x-amz-* header and host must be covered by the signature.
    if !claim.signed_headers.iter().any(|h| h == "host") {
        return Err(access_denied("the host header must be signed"));
    }
    for name in parts.headers.keys() {
        let n = name.as_str();
        if n.starts_with("x-amz-") && !claim.signed_headers.iter().any(|h| h == n) {
            return Err(access_denied(format!("header {n} is not signed")));
        }
    }
    if let Some(token) = &creds.session_token {
        let got = parts
            .headers
            .get("x-amz-security-token")
            .map(|v| v.as_bytes().to_vec())
            .or_else(|| {
                query
                    .iter()
                    .find(|(k, _)| k == b"X-Amz-Security-Token")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_default();
        if !bool::from(got.ct_eq(token.as_bytes())) {
            return Err(err(
                403,
                "InvalidToken",
                "The provided token is malformed or otherwise invalid.",
            ));
        }
    }

    // Canonical request: try the path re-encoded once, then the raw wire path (a client that
    // left reserved characters unencoded signs them as sent).
    let mut headers_block = String::new();
    for h in &claim.signed_headers {
        headers_block.push_str(h);
        headers_block.push(':');
        headers_block.push_str(&canonical_header_value(parts, h).unwrap_or_default());
        headers_block.push('\n');
    }
    let cq = canonical_query(
        query
            .iter()
            .filter(|(k, _)| !(presigned && k == b"X-Amz-Signature")),
    );
    let raw_path = parts.uri.path();
    let mut paths = vec![canonical_path(raw_path)];
    if paths[0] != raw_path {
        paths.push(raw_path.to_owned());
    }
    let key = signing_key(
        &creds.secret_key,
        claim.scope.date,
        claim.scope.region,
        claim.scope.service,
    );
    let scope = format!(
        "{}/{}/{}/aws4_request",
        claim.scope.date, claim.scope.region, claim.scope.service
    );
    let provided = claim.signature.as_bytes();
    let mut ok = false;
    for p in &paths {
        let creq = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            parts.method.as_str(),
            p,
            cq,
            headers_block,
            claim.signed_headers.join(";"),
            claim.payload_line
        );
        let sts = format!(
            "AWS4-HMAC-SHA256\n{}\n{}\n{}",
            claim.amz_date,
            scope,
            hex::encode(Sha256::digest(creq.as_bytes()))
        );
        let expected = hex::encode(hmac(&key, sts.as_bytes()));
        ok |= bool::from(expected.as_bytes().ct_eq(provided));
    }
    if !ok {
        return Err(mismatch());
    }

    let payload = match content_sha.as_deref() {
        None | Some("UNSIGNED-PAYLOAD") => Payload::Unsigned,
        Some("STREAMING-UNSIGNED-PAYLOAD-TRAILER") => Payload::StreamingUnsignedTrailer,
        Some(m @ ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD" | "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"))
            if !presigned =>
        {
            Payload::StreamingSigned(ChunkSigner {
                key: key.clone(),
                amz_date: claim.amz_date.clone(),
                scope: scope.clone(),
                seed: claim.signature.to_ascii_lowercase(),
                trailer: m.ends_with("-TRAILER"),
            })
        }
        Some(s) if s.starts_with("STREAMING-") => {
            return Err(err(
                501,
                "NotImplemented",
                format!("x-amz-content-sha256 {s} is not supported by roar-proxy yet"),
            ))
        }
        Some(s) if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) => Payload::Hex(s.to_ascii_lowercase()),
        Some(_) => {
            return Err(err(
                400,
                "InvalidArgument",
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER or a hex sha256",
            ))
        }
    };
    Ok(Verified { payload, presigned })
}

/// The decoded value of query parameter `name`, if present and UTF-8.
fn query_param(query: &[(Vec<u8>, Vec<u8>)], name: &str) -> Option<String> {
    query
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
}

fn missing_presign_params() -> AuthError {
    err(
        400,
        "AuthorizationQueryParametersError",
        "missing presigned URL parameters",
    )
}

/// Sub-resources that SigV2 signs as part of the resource (botocore's `QSAOfInterest`).
const V2_SUBRESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "cors",
    "defaultObjectAcl",
    "location",
    "logging",
    "partNumber",
    "policy",
    "requestPayment",
    "torrent",
    "versioning",
    "versionId",
    "versions",
    "website",
    "uploads",
    "uploadId",
    "response-content-type",
    "response-content-language",
    "response-expires",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "delete",
    "lifecycle",
    "tagging",
    "restore",
    "storageClass",
    "notification",
    "replication",
    "analytics",
    "metrics",
    "inventory",
    "select",
    "select-type",
    "object-lock",
];

/// SigV2 query-string auth (`AWSAccessKeyId`, `Expires`, `Signature`): what boto3's
/// `generate_presigned_url` makes by default in us-east-1. HMAC-SHA1 over
/// method, Content-MD5, Content-Type, Expires, the `x-amz-*` headers and the resource.
fn verify_v2_query(
    parts: &Parts,
    query: &[(Vec<u8>, Vec<u8>)],
    creds: &Creds,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    let get = |name: &str| query_param(query, name);
    let missing = missing_presign_params;
    let ak = get("AWSAccessKeyId").ok_or_else(missing)?;
    let expires = get("Expires").ok_or_else(missing)?;
    let signature = get("Signature").ok_or_else(missing)?;
    let exp: i64 = expires
        .parse()
        .map_err(|_| access_denied("malformed Expires"))?;
    if now_secs(now) > exp {
        return Err(access_denied("Request has expired"));
    }
    if ak != creds.access_key {
        return Err(err(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        ));
    }
    let std_header = |n: &str| canonical_header_value(parts, n).unwrap_or_default();
    let mut amz: Vec<String> = parts
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-amz-"))
        .map(|k| format!("{}:{}", k.as_str(), std_header(k.as_str())))
        .collect();
    amz.sort();
    amz.dedup();
    // Sub-resources exactly as sent (a name without `=` stays bare), values decoded, sorted by name.
    let mut subs: Vec<(String, Option<String>)> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| {
            let (k, v) = match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p, None),
            };
            V2_SUBRESOURCES.contains(&k).then(|| {
                let v = v.map(|v| {
                    String::from_utf8_lossy(
                        &percent_decode(v).unwrap_or_else(|| v.as_bytes().to_vec()),
                    )
                    .into_owned()
                });
                (k.to_owned(), v)
            })
        })
        .collect();
    subs.sort_by(|a, b| a.0.cmp(&b.0));
    let subs = subs
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect::<Vec<_>>()
        .join("&");
    let raw_path = parts.uri.path();
    let mut ok = false;
    for path in [raw_path.to_owned(), canonical_path(raw_path)] {
        let mut sts = format!(
            "{}\n{}\n{}\n{}\n",
            parts.method.as_str(),
            std_header("content-md5"),
            std_header("content-type"),
            expires
        );
        for h in &amz {
            sts.push_str(h);
            sts.push('\n');
        }
        sts.push_str(&path);
        if !subs.is_empty() {
            sts.push('?');
            sts.push_str(&subs);
        }
        let mut m = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(creds.secret_key.as_bytes())
            .expect("any key length");
        m.update(sts.as_bytes());
        let expected = crate::body::base64(&m.finalize().into_bytes());
        ok |= bool::from(expected.as_bytes().ct_eq(signature.as_bytes()));
    }
    if !ok {
        return Err(mismatch());
    }
    let payload = match parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        Some(s) if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) => {
            Payload::Hex(s.to_ascii_lowercase())
        }
        _ => Payload::Unsigned,
    };
    Ok(Verified {
        payload,
        presigned: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Creds {
        Creds {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    fn at(s: &str) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_secs(parse_amz_date(s).unwrap() as u64)
    }

    /// AWS documentation example "GET Object" (sigv4-header-based-auth), signature f0e8bdb8...
    fn aws_get_example(sig: &str) -> Parts {
        let req = http::Request::get("/test.txt")
            .header("host", "examplebucket.s3.amazonaws.com")
            .header("range", "bytes=0-9")
            .header("x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            .header("x-amz-date", "20130524T000000Z")
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature={sig}"),
            )
            .body(())
            .unwrap();
        req.into_parts().0
    }

    const GOOD: &str = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";

    #[test]
    fn aws_documentation_vector_verifies() {
        let v = verify(&aws_get_example(GOOD), &creds(), at("20130524T000500Z")).unwrap();
        assert_eq!(
            v.payload,
            Payload::Hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into())
        );
    }

    #[test]
    fn one_changed_hex_digit_is_refused() {
        let bad = format!("{}0", &GOOD[..63]);
        let e = verify(&aws_get_example(&bad), &creds(), at("20130524T000500Z")).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn wrong_secret_and_unknown_key_are_refused() {
        let mut c = creds();
        c.secret_key.push('x');
        assert_eq!(
            verify(&aws_get_example(GOOD), &c, at("20130524T000500Z"))
                .unwrap_err()
                .code,
            "SignatureDoesNotMatch"
        );
        let mut c = creds();
        c.access_key = "OTHER".into();
        assert_eq!(
            verify(&aws_get_example(GOOD), &c, at("20130524T000500Z"))
                .unwrap_err()
                .code,
            "InvalidAccessKeyId"
        );
    }

    #[test]
    fn skew_is_refused() {
        let e = verify(&aws_get_example(GOOD), &creds(), at("20130524T002000Z")).unwrap_err();
        assert_eq!(e.code, "RequestTimeTooSkewed");
    }

    #[test]
    fn unsigned_amz_header_is_refused() {
        let mut p = aws_get_example(GOOD);
        p.headers
            .insert("x-amz-copy-source", "other/key".parse().unwrap());
        let e = verify(&p, &creds(), at("20130524T000500Z")).unwrap_err();
        assert_eq!(e.code, "AccessDenied");
    }

    #[test]
    fn aws_presigned_vector_verifies_and_expires() {
        // AWS documentation example "presigned URL" (sigv4-query-string-auth), expires 86400 s.
        let uri = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
        let req = http::Request::get(uri)
            .header("host", "examplebucket.s3.amazonaws.com")
            .body(())
            .unwrap();
        let p = req.into_parts().0;
        let v = verify(&p, &creds(), at("20130524T100000Z")).unwrap();
        assert!(v.presigned);
        assert_eq!(
            verify(&p, &creds(), at("20130525T000001Z"))
                .unwrap_err()
                .message,
            "Request has expired"
        );
    }

    #[test]
    fn aws_signed_chunk_vectors() {
        // AWS documentation example (sigv4-streaming): 65536 + 1024 bytes of 'a', seed 4f232c43...
        let c = creds();
        let signer = ChunkSigner {
            key: signing_key(&c.secret_key, "20130524", "us-east-1", "s3"),
            amz_date: "20130524T000000Z".into(),
            scope: "20130524/us-east-1/s3/aws4_request".into(),
            seed: "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9".into(),
            trailer: false,
        };
        let s1 = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648";
        let s2 = "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497";
        let s3 = "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9";
        assert!(signer.chunk_ok(&signer.seed, &[b'a'; 65536], s1));
        assert!(signer.chunk_ok(s1, &[b'a'; 1024], s2));
        assert!(signer.chunk_ok(s2, b"", s3));
        assert!(!signer.chunk_ok(s1, &[b'a'; 1023], s2));
        assert!(
            !signer.chunk_ok(&signer.seed, &[b'a'; 1024], s2),
            "chain order matters"
        );
    }

    #[test]
    fn encoding_round_trips() {
        assert_eq!(
            canonical_path("/b/a%20b%2Bc%3Dd.bin"),
            "/b/a%20b%2Bc%3Dd.bin"
        );
        assert_eq!(canonical_path("/b/a b+c=d.bin"), "/b/a%20b%2Bc%3Dd.bin");
        assert_eq!(canonical_path("/b/%C3%A9t%C3%A9"), "/b/%C3%A9t%C3%A9");
        let q = query_pairs(Some("uploads&b=2&a=%2B1"));
        assert_eq!(canonical_query(q.iter()), "a=%2B1&b=2&uploads=");
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20130524T000000Z"), Some(1369353600));
    }
}
