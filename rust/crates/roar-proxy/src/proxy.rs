//! One request through the proxy: verify, classify, re-sign, forward, observe, record.
//!
//! Owns the S3 operation model (which requests are lineage edges) and the upstream
//! client. Must not buffer object bodies: only the small XML answers of
//! CompleteMultipartUpload and CopyObject are read whole, to refuse a 200 that
//! carries an `<Error>`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::body::{BoxError, ChunkDecoder, Mode, OnEnd, SignedChunks, Tap};
use crate::events::{EventLog, S3Event};
use crate::sigv4::{self, AuthError, Creds, Payload};

/// Body type of everything the proxy sends.
pub type PBody = BoxBody<Bytes, BoxError>;

/// Largest XML answer read whole (Complete / Copy results are a few hundred bytes).
const MAX_XML: usize = 1 << 20;

/// Shared by every connection.
pub struct State {
    creds: Creds,
    identity: Identity,
    /// The S3 endpoint requests are forwarded to.
    pub upstream: http::Uri,
    /// The region upstream requests are signed for.
    pub region: String,
    /// The upstream HTTP(S) client (shared with active storage).
    pub client: Client<hyper_rustls::HttpsConnector<HttpConnector>, PBody>,
    /// Where lineage events go.
    pub log: Arc<EventLog>,
    /// Hashed parts of multipart uploads in progress.
    uploads: crate::parts::Uploads,
}

impl State {
    /// Builds the shared state; `creds` serve both client verification and upstream signing.
    /// `tls` is the client configuration for an https upstream.
    pub fn new(
        creds: Creds,
        upstream: http::Uri,
        region: String,
        log: EventLog,
        tls: rustls::ClientConfig,
    ) -> Self {
        let identity = aws_credential_types::Credentials::new(
            creds.access_key.clone(),
            creds.secret_key.clone(),
            creds.session_token.clone(),
            None,
            "roar-proxy",
        )
        .into();
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.enforce_http(false);
        let conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(conn);
        let client = Client::builder(TokioExecutor::new()).build(conn);
        State {
            creds,
            identity,
            upstream,
            region,
            client,
            log: Arc::new(log),
            uploads: Default::default(),
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An S3-style XML error response.
pub fn s3_error(status: u16, code: &str, message: &str, resource: &str) -> Response<PBody> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>roar-proxy</RequestId></Error>",
        xml_escape(code), xml_escape(message), xml_escape(resource)
    );
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/xml"));
    r
}

/// A body of known bytes.
pub fn full(b: Bytes) -> PBody {
    Full::new(b)
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> PBody {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// How long a later part waits for part 1 of its upload to begin (see `parts.rs`).
const PART1_WAIT_MS: u64 = 100;

/// The lineage meaning of a request.
#[derive(Debug, PartialEq, Eq)]
enum Op {
    Get,
    Put,
    Copy {
        src_bucket: String,
        src_key: String,
        src_version: Option<String>,
    },
    /// UploadPartCopy (`PUT ?partNumber&uploadId` with `x-amz-copy-source`): its source is
    /// read (wholly, or the `x-amz-copy-source-range` bytes).
    PartCopy {
        src_bucket: String,
        src_key: String,
        src_version: Option<String>,
        range: Option<String>,
    },
    /// UploadPart: nothing recorded, but its bytes are hashed for the Complete.
    UploadPart {
        upload: String,
        part: u32,
    },
    Complete,
    Delete,
    /// DeleteObjects (`POST /bucket?delete`): the answer lists what was deleted.
    DeleteMany,
    Other,
}

/// Query names that make a request about something other than object data.
const SUBRESOURCES: &[&[u8]] = &[
    b"acl",
    b"tagging",
    b"retention",
    b"legal-hold",
    b"torrent",
    b"restore",
    b"select",
    b"attributes",
    b"uploads",
    b"uploadId",
    b"partNumber",
    b"delete",
    b"versions",
    b"list-type",
    b"location",
];

fn classify(
    method: &Method,
    bucket: &str,
    key: &str,
    query: &[(Vec<u8>, Vec<u8>)],
    headers: &HeaderMap,
) -> Op {
    let has = |n: &[u8]| query.iter().any(|(k, _)| k == n);
    if *method == Method::POST && !bucket.is_empty() && key.is_empty() && has(b"delete") {
        return Op::DeleteMany;
    }
    if bucket.is_empty() || key.is_empty() {
        return Op::Other;
    }
    let sub = query
        .iter()
        .any(|(k, _)| SUBRESOURCES.contains(&k.as_slice()));
    match *method {
        Method::GET if !sub || (has(b"partNumber") && !has(b"uploadId")) => Op::Get,
        Method::PUT if has(b"uploadId") && has(b"partNumber") => match copy_source(headers) {
            Some((src_bucket, src_key, src_version)) => Op::PartCopy {
                src_bucket,
                src_key,
                src_version,
                range: header_str(headers, "x-amz-copy-source-range"),
            },
            None => {
                let val = |n: &[u8]| query.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                match (
                    val(b"uploadId"),
                    val(b"partNumber").and_then(|v| String::from_utf8(v).ok()),
                ) {
                    (Some(u), Some(n)) => match n.parse() {
                        Ok(part) => Op::UploadPart {
                            upload: String::from_utf8_lossy(&u).into_owned(),
                            part,
                        },
                        Err(_) => Op::Other,
                    },
                    _ => Op::Other,
                }
            }
        },
        Method::PUT if !sub => match copy_source(headers) {
            Some((src_bucket, src_key, src_version)) => Op::Copy {
                src_bucket,
                src_key,
                src_version,
            },
            None => Op::Put,
        },
        Method::POST if has(b"uploadId") && !has(b"partNumber") => Op::Complete,
        Method::DELETE if !sub || (has(b"versionId") && !has(b"uploadId")) => Op::Delete,
        _ => Op::Other,
    }
}

/// `x-amz-copy-source` (`/bucket/key?versionId=v`, percent-encoded) as (bucket, key, version).
fn copy_source(headers: &HeaderMap) -> Option<(String, String, Option<String>)> {
    let src = headers
        .get("x-amz-copy-source")
        .and_then(|v| v.to_str().ok())?;
    let (path, q) = src.split_once('?').unwrap_or((src, ""));
    let decoded = sigv4::percent_decode(path).unwrap_or_else(|| path.as_bytes().to_vec());
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    let decoded = decoded.trim_start_matches('/');
    let (b, k) = decoded.split_once('/').unwrap_or((decoded, ""));
    let version = sigv4::query_pairs(Some(q))
        .into_iter()
        .find(|(k, _)| k == b"versionId")
        .map(|(_, v)| String::from_utf8_lossy(&v).into_owned());
    Some((b.to_owned(), k.to_owned(), version))
}

/// A header as a string with surrounding quotes removed (ETags), if present and ASCII.
pub fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim_matches('"').to_owned())
}

/// Headers never forwarded upstream: hop-by-hop ones, and those the re-signing replaces.
fn dropped_request_header(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "upgrade"
            | "transfer-encoding"
            | "expect"
            | "x-amz-date"
            | "x-amz-security-token"
            | "x-amz-content-sha256"
    )
}

fn dropped_response_header(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "transfer-encoding"
    )
}

/// Signs `req` with `identity` for S3 in `region` (header auth, S3 canonicalisation settings).
/// Shared by the proxy's upstream requests and active storage (which signs with the
/// credentials its client passed in).
pub fn sign_request(
    req: &mut Request<PBody>,
    identity: &Identity,
    region: &str,
    body: SignableBody<'_>,
) -> Result<(), String> {
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let uri = req.uri().to_string();
    let mut hdrs = Vec::with_capacity(req.headers().len());
    for (k, v) in req.headers() {
        hdrs.push((
            k.as_str(),
            v.to_str().map_err(|_| format!("header {k} is not ASCII"))?,
        ));
    }
    let signable = SignableRequest::new(req.method().as_str(), uri, hdrs.into_iter(), body)
        .map_err(|e| e.to_string())?;
    let (instr, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (headers, _) = instr.into_parts();
    for h in headers {
        let mut v = HeaderValue::from_str(h.value()).map_err(|e| e.to_string())?;
        v.set_sensitive(h.sensitive());
        req.headers_mut().insert(h.name(), v);
    }
    Ok(())
}

impl State {
    /// Signs `req` for the upstream with the proxy's own credentials.
    fn sign_upstream(
        &self,
        req: &mut Request<PBody>,
        body: SignableBody<'_>,
    ) -> Result<(), String> {
        sign_request(req, &self.identity, &self.region, body)
    }

    fn upstream_uri(&self, path: &str, query: &str) -> String {
        let base = format!(
            "{}://{}",
            self.upstream.scheme_str().unwrap_or("http"),
            self.upstream.authority().map(|a| a.as_str()).unwrap_or("")
        );
        if query.is_empty() {
            format!("{base}{path}")
        } else {
            format!("{base}{path}?{query}")
        }
    }

    fn host(&self) -> HeaderValue {
        HeaderValue::from_str(self.upstream.authority().map(|a| a.as_str()).unwrap_or(""))
            .unwrap_or(HeaderValue::from_static(""))
    }

    /// Reads an object back from upstream to hash it (multipart and copy results, a whole
    /// UploadPartCopy source). Returns (blake3, size, etag, version id).
    async fn rehash(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<(String, u64, Option<String>, Option<String>), String> {
        let (resp, etag, vid) = self
            .object_request(Method::GET, bucket, key, version)
            .await?;
        let mut body = resp.into_body();
        let mut h = blake3::Hasher::new();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(d) = frame.data_ref() {
                h.update(d);
                n += d.len() as u64;
            }
        }
        Ok((h.finalize().to_hex().to_string(), n, etag, vid))
    }

    /// HEAD of an object (the source of a ranged UploadPartCopy): (size, etag, version id).
    async fn head(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<(Option<u64>, Option<String>, Option<String>), String> {
        let (resp, etag, vid) = self
            .object_request(Method::HEAD, bucket, key, version)
            .await?;
        let size = header_str(resp.headers(), "content-length").and_then(|s| s.parse().ok());
        Ok((size, etag, vid))
    }

    /// A GET or HEAD of one object, signed by the proxy; an answer other than 200 is an error.
    /// Returns the response, its ETag and version id.
    async fn object_request(
        &self,
        method: Method,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<(Response<Incoming>, Option<String>, Option<String>), String> {
        let path = format!(
            "/{}/{}",
            sigv4::uri_encode(bucket.as_bytes(), false),
            sigv4::uri_encode(key.as_bytes(), true)
        );
        let query = version
            .map(|v| format!("versionId={}", sigv4::uri_encode(v.as_bytes(), false)))
            .unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(self.upstream_uri(&path, &query))
            .body(empty())
            .map_err(|e| e.to_string())?;
        req.headers_mut().insert("host", self.host());
        self.sign_upstream(&mut req, SignableBody::Bytes(b""))?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != StatusCode::OK {
            return Err(format!("reading the object answered {}", resp.status()));
        }
        let etag = header_str(resp.headers(), "etag");
        let vid = header_str(resp.headers(), "x-amz-version-id");
        Ok((resp, etag, vid))
    }
}

fn split_path(raw: &str) -> (String, String) {
    let decoded = sigv4::percent_decode(raw).unwrap_or_else(|| raw.as_bytes().to_vec());
    let s = String::from_utf8_lossy(&decoded).into_owned();
    let s = s.strip_prefix('/').unwrap_or(&s);
    match s.split_once('/') {
        Some((b, k)) => (b.to_owned(), k.to_owned()),
        None => (s.to_owned(), String::new()),
    }
}

/// Reads a small XML answer whole: (bytes, whether it carries an `<Error>`, as a failed
/// Complete or Copy may under a 200), or the 502 to send when it cannot be read.
async fn read_xml(body: Incoming, resource: &str) -> Result<(Bytes, bool), Response<PBody>> {
    let bytes = match Limited::new(body, MAX_XML).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(s3_error(
                502,
                "BadGateway",
                &format!("upstream answer unreadable: {e}"),
                resource,
            ))
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let is_error = text.contains("<Error>") || text.contains("<Error ");
    Ok((bytes, is_error))
}

/// Handles one client request (never fails: errors become S3 XML responses).
pub async fn handle(req: Request<Incoming>, st: Arc<State>) -> Result<Response<PBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let resource = parts.uri.path().to_owned();
    let verified = match sigv4::verify(&parts, &st.creds, SystemTime::now()) {
        Ok(v) => v,
        Err(AuthError {
            status,
            code,
            message,
        }) => return Ok(s3_error(status, code, &message, &resource)),
    };
    let query = sigv4::query_pairs(parts.uri.query());
    let (bucket, key) = split_path(parts.uri.path());
    let op = classify(&parts.method, &bucket, &key, &query, &parts.headers);

    // The upstream target, already canonical (aws-sigv4 signs the path as given and
    // re-parses the query, so neither may hold anything it would re-encode).
    // Presigned auth parameters (V4 `X-Amz-*`, V2 `AWSAccessKeyId`/`Expires`/`Signature`) are
    // replaced by the proxy's header auth.
    let up_query = sigv4::canonical_query(query.iter().filter(|(k, _)| {
        !(verified.presigned
            && (k.starts_with(b"X-Amz-")
                || matches!(k.as_slice(), b"AWSAccessKeyId" | b"Expires" | b"Signature")))
    }));
    let up_path = sigv4::canonical_path(parts.uri.path());
    let mut up = match Request::builder()
        .method(parts.method.clone())
        .uri(st.upstream_uri(&up_path, &up_query))
        .body(empty())
    {
        Ok(r) => r,
        Err(e) => return Ok(s3_error(400, "InvalidURI", &e.to_string(), &resource)),
    };
    for (k, v) in parts.headers.iter() {
        if !dropped_request_header(k.as_str()) {
            up.headers_mut().append(k.clone(), v.clone());
        }
    }
    up.headers_mut().insert("host", st.host());
    let content_length = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let (observed, chunked, signable) = if let Payload::StreamingSigned(signer) = &verified.payload
    {
        // Signed chunks are verified and stripped here; upstream gets the object's bytes
        // (plain) or unsigned aws-chunks with the trailers (trailer mode).
        let decoded = parts
            .headers
            .get("x-amz-decoded-content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok());
        let h = up.headers_mut();
        h.remove("content-length");
        let signable = if signer.trailer {
            SignableBody::StreamingUnsignedPayloadTrailer
        } else {
            let Some(n) = decoded else {
                return Ok(s3_error(
                    411,
                    "MissingContentLength",
                    "x-amz-decoded-content-length is required.",
                    &resource,
                ));
            };
            h.insert("content-length", HeaderValue::from(n));
            h.remove("x-amz-decoded-content-length");
            let enc: Vec<String> = h
                .get_all("content-encoding")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
                .collect();
            h.remove("content-encoding");
            if let Ok(v) = HeaderValue::from_str(&enc.join(",")) {
                if !enc.is_empty() {
                    h.insert("content-encoding", v);
                }
            }
            SignableBody::UnsignedPayload
        };
        let trailer = parts
            .headers
            .get("x-amz-trailer")
            .and_then(|v| v.to_str().ok());
        let (b, observed) = SignedChunks::new(body, signer.clone(), trailer);
        *up.body_mut() = b.boxed();
        (observed, true, signable)
    } else {
        let (mode, signable) = match &verified.payload {
            // An empty body yields no data frame to check: check it here.
            Payload::Hex(h) if content_length.unwrap_or(0) == 0 && h != EMPTY_SHA256 => {
                return Ok(s3_error(
                    400,
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                    &resource,
                ));
            }
            Payload::Hex(h) => (
                Mode::sha256(content_length.unwrap_or(0), h.clone()),
                SignableBody::Precomputed(h.clone()),
            ),
            Payload::Unsigned => {
                if content_length.is_none() && matches!(parts.method, Method::PUT | Method::POST) {
                    return Ok(s3_error(
                        411,
                        "MissingContentLength",
                        "You must provide the Content-Length HTTP header.",
                        &resource,
                    ));
                }
                (Mode::Plain, SignableBody::UnsignedPayload)
            }
            Payload::StreamingUnsignedTrailer => (
                Mode::Chunked(Box::new(ChunkDecoder::with_trailer(
                    parts
                        .headers
                        .get("x-amz-trailer")
                        .and_then(|v| v.to_str().ok()),
                ))),
                SignableBody::StreamingUnsignedPayloadTrailer,
            ),
            Payload::StreamingSigned(_) => {
                return Ok(s3_error(500, "InternalError", "payload mode", &resource))
            }
        };
        let chunked = matches!(mode, Mode::Chunked(_));
        if let Op::UploadPart { upload, part } = &op {
            // Clients send parts concurrently: a later part (the short last one above all)
            // placed before part 1 began would be hashed at the wrong offset. Wait briefly for
            // part 1 (bounded; a client that sends it much later only gets the read-back).
            let mut waited = 0;
            while *part > 1 && !chunked && !st.uploads.has_first(upload) && waited < PART1_WAIT_MS {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                waited += 5;
            }
        }
        let (tap, observed) = Tap::new(body, mode, None);
        {
            let mut o = observed.lock().unwrap_or_else(|p| p.into_inner());
            match &op {
                // Plain and hex part bodies are the part's bytes: hashed as subtrees for the Complete.
                Op::UploadPart { upload, part } if !chunked => {
                    o.part = content_length.and_then(|n| st.uploads.begin(upload, *part, n));
                }
                Op::Complete if !chunked => o.keep = Some(Vec::new()),
                _ => {}
            }
        }
        *up.body_mut() = tap
            .with_length(if chunked { None } else { content_length })
            .boxed();
        (observed, chunked, signable)
    };

    if let Err(e) = st.sign_upstream(&mut up, signable) {
        return Ok(s3_error(
            400,
            "InvalidRequest",
            &format!("cannot re-sign the request: {e}"),
            &resource,
        ));
    }
    // Prime: wait for the body's first checked frame before contacting the upstream, so a
    // request refused early (bad first chunk, a small body with a wrong hash) never reaches
    // it at all (SeaweedFS stores an empty object when a body is cut before its first byte).
    let mut body = std::mem::replace(up.body_mut(), empty());
    let first = match body.frame().await {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            return Ok(body_refusal(&observed, &resource).unwrap_or_else(|| {
                s3_error(
                    400,
                    "IncompleteBody",
                    &format!("request body unreadable: {e}"),
                    &resource,
                )
            }))
        }
    };
    *up.body_mut() = Primed { first, rest: body }.boxed();
    let resp = match st.client.request(up).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(r) = body_refusal(&observed, &resource) {
                return Ok(r);
            }
            return Ok(s3_error(
                502,
                "BadGateway",
                &format!("upstream S3 endpoint unreachable: {}", root_cause(&e)),
                &resource,
            ));
        }
    };
    let (mut rparts, rbody) = resp.into_parts();
    rparts.headers.retain_drop(dropped_response_header);
    let status = rparts.status;
    let etag = header_str(&rparts.headers, "etag");
    let version_id = header_str(&rparts.headers, "x-amz-version-id");
    let log = st.log.clone();

    let out_body: PBody = match op {
        Op::Get if status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT => {
            let range = parts
                .headers
                .get("range")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let partial = status == StatusCode::PARTIAL_CONTENT || range.is_some();
            let (bucket, key) = (bucket.clone(), key.clone());
            let on_end: OnEnd = Box::new(move |o| {
                log.write(&S3Event {
                    op: "get",
                    dir: "in",
                    bucket,
                    key,
                    version_id,
                    size: Some(o.bytes),
                    etag,
                    blake3: if partial { None } else { o.blake3() },
                    range: if partial {
                        Some(range.unwrap_or_else(|| "partNumber".into()))
                    } else {
                        None
                    },
                });
            });
            let len = rparts
                .headers
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse().ok());
            Tap::new(rbody, Mode::Plain, Some(on_end))
                .0
                .with_length(len)
                .boxed()
        }
        Op::Put if status == StatusCode::OK => {
            let (blake, size) = {
                let o = observed.lock().unwrap_or_else(|p| p.into_inner());
                // An empty body is never polled, so it never "ends": its count says it is whole.
                let whole =
                    o.complete || (!chunked && content_length == Some(o.bytes) && !o.sha_mismatch);
                (
                    whole.then(|| o.hasher.finalize().to_hex().to_string()),
                    o.bytes,
                )
            };
            log.write(&S3Event {
                op: "put",
                dir: "out",
                bucket,
                key,
                version_id,
                size: Some(size),
                etag,
                blake3: blake,
                range: None,
            });
            rbody.map_err(BoxError::from).boxed()
        }
        Op::UploadPart { upload, part } if status == StatusCode::OK => {
            let hashed = {
                let mut o = observed.lock().unwrap_or_else(|p| p.into_inner());
                let whole = o.complete || (content_length == Some(o.bytes) && !o.sha_mismatch);
                o.part.take().filter(|_| whole)
            };
            if let (Some(h), Some(etag)) = (hashed, etag.as_deref()) {
                st.uploads.finish(&upload, part, etag, h);
            }
            rbody.map_err(BoxError::from).boxed()
        }
        Op::Complete | Op::Copy { .. } if status == StatusCode::OK => {
            let (bytes, is_error) = match read_xml(rbody, &resource).await {
                Ok(x) => x,
                Err(r) => return Ok(r),
            };
            let upload = query
                .iter()
                .find(|(k, _)| k == b"uploadId")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
            // Multipart: merge the parts' subtrees (no second read of the object) when they
            // fit together; otherwise the read-back below.
            let merged = match (&op, &upload, is_error) {
                (Op::Complete, Some(u), false) => {
                    let listed = observed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .keep
                        .take()
                        .and_then(|k| crate::parts::listed_parts(&String::from_utf8_lossy(&k)));
                    let m = listed.and_then(|l| st.uploads.merge(u, &l));
                    if m.is_none() {
                        crate::events::stderr_line(
                            "roar-proxy: multipart blake3: the parts do not merge (shape or body mode); reading the object back",
                        );
                    }
                    m
                }
                _ => None,
            };
            if let (Op::Complete, Some(u)) = (&op, &upload) {
                if !is_error {
                    st.uploads.forget(u);
                }
            }
            if let Some((blake, size)) = merged {
                let text = String::from_utf8_lossy(&bytes);
                let etag = xml_element(&text, "ETag", 0)
                    .map(|(e, _)| xml_unescape(e).trim_matches('"').to_owned())
                    .or(etag);
                log.write(&S3Event {
                    op: "complete",
                    dir: "out",
                    bucket,
                    key,
                    version_id,
                    size: Some(size),
                    etag,
                    blake3: Some(blake),
                    range: None,
                });
            } else if !is_error {
                // The parts could not be merged (or this is a copy): the simple correct way
                // to a whole-object blake3 whatever the part sizes is to read the object back.
                let out_op = if op == Op::Complete {
                    "complete"
                } else {
                    "copy"
                };
                match st.rehash(&bucket, &key, version_id.as_deref()).await {
                    Ok((blake, size, etag2, vid)) => {
                        if let Op::Copy {
                            src_bucket,
                            src_key,
                            src_version,
                        } = &op
                        {
                            log.write(&S3Event {
                                op: "copy",
                                dir: "in",
                                bucket: src_bucket.clone(),
                                key: src_key.clone(),
                                version_id: src_version.clone(),
                                size: Some(size),
                                etag: etag2.clone(),
                                blake3: Some(blake.clone()),
                                range: None,
                            });
                        }
                        log.write(&S3Event {
                            op: out_op,
                            dir: "out",
                            bucket,
                            key,
                            version_id: vid.or(version_id),
                            size: Some(size),
                            etag: etag2,
                            blake3: Some(blake),
                            range: None,
                        });
                    }
                    Err(e) => {
                        log.write(&S3Event {
                            op: out_op,
                            dir: "out",
                            bucket,
                            key,
                            version_id,
                            size: None,
                            etag: None,
                            blake3: None,
                            range: None,
                        });
                        crate::events::stderr_line(&format!(
                            "roar-proxy: could not hash the finished object: {e}"
                        ));
                    }
                }
            }
            rparts
                .headers
                .insert("content-length", HeaderValue::from(bytes.len()));
            full(bytes)
        }
        Op::PartCopy {
            src_bucket,
            src_key,
            src_version,
            range,
        } if status == StatusCode::OK => {
            let (bytes, is_error) = match read_xml(rbody, &resource).await {
                Ok(x) => x,
                Err(r) => return Ok(r),
            };
            if !is_error {
                // A whole-object part copy reads the whole source: its blake3 is that of the
                // object, read back like a CopyObject's. A ranged one read only some bytes: its
                // edge carries the range and the source's ETag (the intake maps a known ETag to
                // its blake3), as a Range GET's does; a HEAD gets that ETag.
                let sv = src_version.as_deref();
                let got = match &range {
                    None => st
                        .rehash(&src_bucket, &src_key, sv)
                        .await
                        .map(|(b, n, e, v)| (Some(b), Some(n), e, v)),
                    Some(_) => st
                        .head(&src_bucket, &src_key, sv)
                        .await
                        .map(|(n, e, v)| (None, n, e, v)),
                };
                let (blake, size, etag, vid) = got.unwrap_or_else(|e| {
                    crate::events::stderr_line(&format!(
                        "roar-proxy: could not read the copied part's source: {e}"
                    ));
                    (None, None, None, None)
                });
                log.write(&S3Event {
                    op: "copy",
                    dir: "in",
                    bucket: src_bucket,
                    key: src_key,
                    version_id: vid.or(src_version),
                    size,
                    etag,
                    blake3: blake,
                    range,
                });
            }
            rparts
                .headers
                .insert("content-length", HeaderValue::from(bytes.len()));
            full(bytes)
        }
        Op::Delete if status.is_success() => {
            let vid = query
                .iter()
                .find(|(k, _)| k == b"versionId")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
            log.write(&S3Event {
                op: "delete",
                dir: "del",
                bucket,
                key,
                version_id: vid.or(version_id),
                ..Default::default()
            });
            rbody.map_err(BoxError::from).boxed()
        }
        Op::DeleteMany if status == StatusCode::OK => {
            let (bytes, _) = match read_xml(rbody, &resource).await {
                Ok(x) => x,
                Err(r) => return Ok(r),
            };
            for (key, version_id) in deleted_objects(&String::from_utf8_lossy(&bytes)) {
                log.write(&S3Event {
                    op: "delete",
                    dir: "del",
                    bucket: bucket.clone(),
                    key,
                    version_id,
                    ..Default::default()
                });
            }
            rparts
                .headers
                .insert("content-length", HeaderValue::from(bytes.len()));
            full(bytes)
        }
        _ => rbody.map_err(BoxError::from).boxed(),
    };
    Ok(Response::from_parts(rparts, out_body))
}

/// Text between `<tag>` and `</tag>` in `xml`, from `from` on: (text, end offset).
fn xml_element<'a>(xml: &'a str, tag: &str, from: usize) -> Option<(&'a str, usize)> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml[from..].find(&open)? + from + open.len();
    let end = xml[start..].find(&close)? + start;
    Some((&xml[start..end], end + close.len()))
}

/// XML character data with its five entities and numeric references decoded.
fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(j) = rest.find(';') else { break };
        let ent = &rest[1..j];
        let c = match ent {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if ent.starts_with("#x") => u32::from_str_radix(&ent[2..], 16)
                .ok()
                .and_then(char::from_u32),
            _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[j + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// (key, version id) of every `<Deleted>` entry of a DeleteObjects answer (errors are skipped).
fn deleted_objects(xml: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((entry, end)) = xml_element(xml, "Deleted", at) {
        if let Some((key, _)) = xml_element(entry, "Key", 0) {
            let vid = xml_element(entry, "VersionId", 0).map(|(v, _)| xml_unescape(v));
            out.push((xml_unescape(key), vid));
        }
        at = end;
    }
    out
}

/// The S3 error for a request body the proxy refused (hash, signature, checksum, framing).
fn body_refusal(observed: &crate::body::Shared, resource: &str) -> Option<Response<PBody>> {
    let o = observed.lock().unwrap_or_else(|p| p.into_inner());
    if o.sha_mismatch {
        return Some(s3_error(
            400,
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            resource,
        ));
    }
    if o.bad_signature {
        return Some(s3_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
            resource,
        ));
    }
    if let Some(m) = &o.bad_digest {
        return Some(s3_error(400, "BadDigest", m, resource));
    }
    o.framing_error
        .as_ref()
        .map(|f| s3_error(400, "IncompleteBody", f, resource))
}

/// A body whose first frame was already read (see `handle`), then the rest.
struct Primed {
    first: Option<http_body::Frame<Bytes>>,
    rest: PBody,
}

impl http_body::Body for Primed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(f)));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let first = self
            .first
            .as_ref()
            .and_then(|f| f.data_ref())
            .map_or(0, |d| d.len() as u64);
        let rest = self.rest.size_hint();
        match rest.exact() {
            Some(n) => http_body::SizeHint::with_exact(n + first),
            None => http_body::SizeHint::default(),
        }
    }
}

/// The innermost error of a chain (the useful part of hyper's errors).
pub fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

trait RetainDrop {
    fn retain_drop(&mut self, drop: fn(&str) -> bool);
}

impl RetainDrop for HeaderMap {
    fn retain_drop(&mut self, drop: fn(&str) -> bool) {
        let names: Vec<_> = self.keys().filter(|k| drop(k.as_str())).cloned().collect();
        for n in names {
            self.remove(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        sigv4::query_pairs(Some(s))
    }

    #[test]
    fn operations_are_classified() {
        let h = HeaderMap::new();
        assert_eq!(classify(&Method::GET, "b", "k", &q(""), &h), Op::Get);
        assert_eq!(
            classify(&Method::GET, "b", "k", &q("versionId=3"), &h),
            Op::Get
        );
        assert_eq!(classify(&Method::GET, "b", "k", &q("acl"), &h), Op::Other);
        assert_eq!(
            classify(&Method::GET, "b", "", &q("list-type=2"), &h),
            Op::Other
        );
        assert_eq!(classify(&Method::PUT, "b", "k", &q(""), &h), Op::Put);
        assert_eq!(
            classify(&Method::PUT, "b", "k", &q("partNumber=1&uploadId=x"), &h),
            Op::UploadPart {
                upload: "x".into(),
                part: 1
            }
        );
        assert_eq!(
            classify(&Method::PUT, "b", "k", &q("partNumber=z&uploadId=x"), &h),
            Op::Other
        );
        assert_eq!(
            classify(&Method::PUT, "b", "k", &q("tagging"), &h),
            Op::Other
        );
        assert_eq!(
            classify(&Method::POST, "b", "k", &q("uploadId=x"), &h),
            Op::Complete
        );
        assert_eq!(
            classify(&Method::POST, "b", "k", &q("uploads"), &h),
            Op::Other
        );
        assert_eq!(classify(&Method::DELETE, "b", "k", &q(""), &h), Op::Delete);
        assert_eq!(
            classify(&Method::DELETE, "b", "k", &q("uploadId=x"), &h),
            Op::Other
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-copy-source",
            HeaderValue::from_static("/src/a%20b.bin?versionId=v1"),
        );
        assert_eq!(
            classify(&Method::PUT, "b", "k", &q(""), &h),
            Op::Copy {
                src_bucket: "src".into(),
                src_key: "a b.bin".into(),
                src_version: Some("v1".into())
            }
        );
        h.insert(
            "x-amz-copy-source-range",
            HeaderValue::from_static("bytes=0-9"),
        );
        assert_eq!(
            classify(&Method::PUT, "b", "k", &q("partNumber=2&uploadId=x"), &h),
            Op::PartCopy {
                src_bucket: "src".into(),
                src_key: "a b.bin".into(),
                src_version: Some("v1".into()),
                range: Some("bytes=0-9".into()),
            }
        );
    }

    #[test]
    fn delete_objects_answer_is_parsed() {
        let xml = "<DeleteResult><Deleted><Key>a &amp; b&#x2B;.bin</Key></Deleted>\
                   <Error><Key>nope</Key><Code>AccessDenied</Code></Error>\
                   <Deleted><Key>v</Key><VersionId>3&lt;</VersionId></Deleted></DeleteResult>";
        assert_eq!(
            deleted_objects(xml),
            vec![
                ("a & b+.bin".to_string(), None),
                ("v".to_string(), Some("3<".to_string()))
            ]
        );
        assert_eq!(
            classify(&Method::POST, "b", "", &q("delete"), &HeaderMap::new()),
            Op::DeleteMany
        );
    }

    #[test]
    fn paths_split_into_bucket_and_key() {
        assert_eq!(
            split_path("/b/a%20b%2Bc%3Dd.bin"),
            ("b".into(), "a b+c=d.bin".into())
        );
        assert_eq!(
            split_path("/b/dir/%C3%A9.txt"),
            ("b".into(), "dir/\u{e9}.txt".into())
        );
        assert_eq!(split_path("/b"), ("b".into(), String::new()));
    }
}
