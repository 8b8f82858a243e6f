//! Active storage: numeric reductions of S3 objects, on a listener of their own.
//!
//! Owns the wire API (`POST /v1/{op}` with a JSON body and `x-activestorage-*` headers,
//! `POST /v2/{op}` answering CBOR, `/.well-known/reductionist-schema`, `/metrics`,
//! `/openapi.json`), request validation, the ranged GET (signed with the HTTP Basic
//! credentials of the caller through the proxy's own upstream client and signer, or
//! anonymous), the memory and thread budgets, and the lineage event of each reduction.
//! The arithmetic lives in `reduce.rs`, decompression and filters in `codec.rs`. Must not
//! log or keep credentials, and must not run CPU work on the async runtime's threads.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sigv4::http_request::SignableBody;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::Number;

use crate::events::S3Event;
use crate::proxy::{empty, full, header_str, root_cause, sign_request, PBody, State};
use crate::reduce::{self, DType, Missing, Op, Output, Spec};

/// Largest request body read (a request is a few hundred bytes of JSON).
const MAX_REQUEST: usize = 1 << 20;

/// Frames in flight between the upstream body and a streaming fold's thread.
const STREAM_FRAMES: usize = 4;

/// Memory a streaming fold takes from the budget: its frames in flight (hyper's reads are
/// mostly 8-64 KiB here) and the decompressor's 32 KiB window.
const STREAM_HOLD: u64 = 1 << 20;

/// Budgets and the port, from the command line and the environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bytes of object data (fetched and decompressed) all requests may hold at once.
    pub memory: u64,
    /// Reductions computing at once (each on a blocking thread).
    pub threads: usize,
    /// Requests allowed to wait for a thread; beyond them: 503 at once.
    pub queue: usize,
}

/// A failed request: status, message and causes (the contract's JSON error body).
#[derive(Debug)]
pub struct ApiError {
    status: u16,
    message: String,
    caused_by: Vec<String>,
}

/// An error answer with this status.
pub fn err(status: u16, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
        caused_by: vec![],
    }
}

/// A 400 (the request is wrong).
pub fn bad(message: impl Into<String>) -> ApiError {
    err(400, message)
}

impl ApiError {
    fn response(&self) -> Response<PBody> {
        let body =
            serde_json::json!({"error": {"message": self.message, "caused_by": self.caused_by}});
        json_response(self.status, body.to_string())
    }
}

fn json_response(status: u16, body: String) -> Response<PBody> {
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

// --- budgets ---------------------------------------------------------------------------

/// The memory budget: bytes held by requests in flight, refused (never queued) beyond it.
pub struct Budget {
    total: u64,
    used: AtomicU64,
}

/// Bytes taken from the budget, given back when dropped.
pub struct Held {
    budget: Arc<Budget>,
    n: u64,
}

fn take(budget: &Arc<Budget>, n: u64) -> Result<Held, ApiError> {
    let mut h = Held {
        budget: budget.clone(),
        n: 0,
    };
    h.grow(n)?;
    Ok(h)
}

impl Held {
    /// Takes `n` more bytes: 413 when the request alone would exceed the whole budget, 503
    /// when other requests hold too much of it right now.
    fn grow(&mut self, n: u64) -> Result<(), ApiError> {
        let b = &*self.budget;
        if self.n + n > b.total {
            return Err(err(
                413,
                format!(
                    "the request needs more than {} bytes of memory, over the active-storage memory budget of {} bytes (--active-storage-memory-mib, ROAR_ACTIVE_STORAGE_MEMORY_MIB)",
                    self.n + n,
                    b.total
                ),
            ));
        }
        let mut cur = b.used.load(Ordering::Relaxed);
        loop {
            if cur + n > b.total {
                return Err(err(
                    503,
                    "the active-storage memory budget is in use by other requests; retry later",
                ));
            }
            match b
                .used
                .compare_exchange(cur, cur + n, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        self.n += n;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.n, Ordering::AcqRel);
    }
}

// --- metrics ---------------------------------------------------------------------------

/// Upper bounds (seconds) of the latency histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Prometheus counters of the listener.
#[derive(Default)]
struct Metrics {
    /// (api version, op, status) -> requests.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    fetched: AtomicU64,
    returned: AtomicU64,
}

impl Metrics {
    fn observe(&self, api: &str, op: &str, status: u16, secs: f64) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((api.into(), op.into(), status)).or_default() += 1;
        drop(m);
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, budget: &Budget, busy: usize, queued: usize) -> String {
        let mut o = String::new();
        o.push_str("# HELP roar_activestorage_requests_total Reduction requests by API version, operation and status.\n# TYPE roar_activestorage_requests_total counter\n");
        for ((api, op, st), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            o.push_str(&format!(
                "roar_activestorage_requests_total{{api=\"{api}\",operation=\"{op}\",status=\"{st}\"}} {n}\n"
            ));
        }
        o.push_str("# HELP roar_activestorage_request_duration_seconds Time from request to response.\n# TYPE roar_activestorage_request_duration_seconds histogram\n");
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.latency[i].load(Ordering::Relaxed);
            o.push_str(&format!(
                "roar_activestorage_request_duration_seconds_bucket{{le=\"{b}\"}} {cum}\n"
            ));
        }
        cum += self.latency[BUCKETS.len()].load(Ordering::Relaxed);
        o.push_str(&format!(
            "roar_activestorage_request_duration_seconds_bucket{{le=\"+Inf\"}} {cum}\nroar_activestorage_request_duration_seconds_sum {}\nroar_activestorage_request_duration_seconds_count {}\n",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            self.latency_count.load(Ordering::Relaxed)
        ));
        o.push_str(&format!(
            "# HELP roar_activestorage_bytes_fetched_total Object bytes read from S3.\n# TYPE roar_activestorage_bytes_fetched_total counter\nroar_activestorage_bytes_fetched_total {}\n# HELP roar_activestorage_bytes_returned_total Result bytes sent to clients.\n# TYPE roar_activestorage_bytes_returned_total counter\nroar_activestorage_bytes_returned_total {}\n# HELP roar_activestorage_memory_bytes Memory budget held by requests in flight.\n# TYPE roar_activestorage_memory_bytes gauge\nroar_activestorage_memory_bytes {}\n# HELP roar_activestorage_threads_busy Reductions computing now.\n# TYPE roar_activestorage_threads_busy gauge\nroar_activestorage_threads_busy {busy}\n# HELP roar_activestorage_queued Reductions waiting for a thread.\n# TYPE roar_activestorage_queued gauge\nroar_activestorage_queued {queued}\n",
            self.fetched.load(Ordering::Relaxed),
            self.returned.load(Ordering::Relaxed),
            budget.used.load(Ordering::Relaxed)
        ));
        o
    }
}

// --- shared state ----------------------------------------------------------------------

/// Shared by every connection of the active-storage listener.
pub struct Active {
    proxy: Arc<State>,
    budget: Arc<Budget>,
    threads: tokio::sync::Semaphore,
    nthreads: usize,
    waiting: AtomicUsize,
    queue: usize,
    metrics: Metrics,
    /// `host:port` forms of the proxy's own S3 listener: a `source` naming it is served
    /// from the proxy's upstream directly (one hop, same bytes).
    own_authorities: Vec<String>,
}

impl Active {
    /// The state of the listener; `s3_port` is the proxy's S3 port.
    pub fn new(proxy: Arc<State>, cfg: &Config, s3_port: u16) -> Active {
        Active {
            proxy,
            budget: Arc::new(Budget {
                total: cfg.memory,
                used: AtomicU64::new(0),
            }),
            threads: tokio::sync::Semaphore::new(cfg.threads.max(1)),
            nthreads: cfg.threads.max(1),
            waiting: AtomicUsize::new(0),
            queue: cfg.queue,
            metrics: Metrics::default(),
            own_authorities: vec![
                format!("127.0.0.1:{s3_port}"),
                format!("localhost:{s3_port}"),
            ],
        }
    }
}

// --- request model ---------------------------------------------------------------------

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum DTypeName {
    Int32,
    Int64,
    Uint32,
    Uint64,
    Float32,
    Float64,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum ByteOrder {
    Big,
    Little,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
enum OrderName {
    C,
    F,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum AxisSpec {
    One(i64),
    Many(Vec<i64>),
}

/// `compression`: `{"id": "gzip"}` or `{"id": "zlib"}`.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(tag = "id", rename_all = "lowercase", deny_unknown_fields)]
pub enum Compression {
    Gzip,
    Zlib,
}

/// One entry of `filters`.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(tag = "id", rename_all = "lowercase", deny_unknown_fields)]
pub enum Filter {
    Shuffle { element_size: u64 },
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct MissingSpec {
    missing_value: Option<Number>,
    missing_values: Option<Vec<Number>>,
    valid_min: Option<Number>,
    valid_max: Option<Number>,
    valid_range: Option<(Number, Number)>,
}

/// The request fields shared by v1 and v2, plus each version's own (`$extra`).
macro_rules! request_struct {
    ($name:ident { $($extra:ident : $ty:ty),* $(,)? }) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($extra: $ty,)*
            dtype: DTypeName,
            byte_order: Option<ByteOrder>,
            offset: Option<u64>,
            size: Option<u64>,
            shape: Option<Vec<u64>>,
            axis: Option<AxisSpec>,
            order: Option<OrderName>,
            selection: Option<Vec<(i64, i64, i64)>>,
            compression: Option<Compression>,
            filters: Option<Vec<Filter>>,
            missing: Option<MissingSpec>,
        }
        #[allow(dead_code)] // Common's own copy is never asked for
        impl $name {
            fn common(&self) -> Common {
                Common {
                    dtype: self.dtype,
                    byte_order: self.byte_order,
                    offset: self.offset,
                    size: self.size,
                    shape: self.shape.clone(),
                    axis: self.axis.clone(),
                    order: self.order,
                    selection: self.selection.clone(),
                    compression: self.compression,
                    filters: self.filters.clone(),
                    missing: self.missing.clone(),
                }
            }
        }
    };
}

request_struct!(V1Request {
    source: String,
    bucket: String,
    object: String,
});

request_struct!(V2Request {
    interface_type: InterfaceType,
    url: String,
    option_disable_chunk_cache: Option<bool>,
    option_shape_as_bytes: Option<bool>,
    option_count_as_bytes: Option<bool>,
});

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum InterfaceType {
    S3,
    Http,
    Https,
}

// The shared fields alone (what validation takes).
request_struct!(Common {});

/// Where the bytes come from.
#[derive(Debug, Clone)]
pub struct Target {
    /// `scheme://authority[/prefix]` of the endpoint, without a trailing `/`.
    base: String,
    authority: String,
    /// S3 (path style, signed) or a plain http(s) URL (v2 `interface_type` http/https).
    s3: Option<(String, String)>,
    /// The full URL for plain http(s).
    url: String,
}

/// A validated request.
pub struct Plan {
    spec: Spec,
    /// The request's shape was given (the size check is then exact).
    has_shape: bool,
    offset: u64,
    size: Option<u64>,
    compression: Option<Compression>,
    filters: Vec<Filter>,
}

/// The request body: CBOR when the Content-Type says so (v2 clients may send it), else JSON.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8], cbor: bool) -> Result<T, ApiError> {
    if !cbor {
        return parse_json(body);
    }
    // Through a JSON value: the same strict model and located errors as a JSON body.
    let value: serde_json::Value = ciborium::from_reader(body)
        .map_err(|e| bad(format!("request data is not valid CBOR: {e}")))?;
    serde_path_to_error::deserialize(&value).map_err(located)
}

/// A serde error with the path of the field it is about ("shape[1]: invalid type ...").
fn located<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let msg = if path == "." || path.is_empty() {
        inner.to_string()
    } else {
        format!("{path}: {inner}")
    };
    ApiError {
        status: 400,
        message: format!("request data is not valid: {msg}"),
        caused_by: vec![inner.to_string()],
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(located)
}

fn parse_endpoint(s: &str, field: &str) -> Result<(String, String), ApiError> {
    let uri: http::Uri = s
        .parse()
        .map_err(|_| bad(format!("{field}: not a URL: {s}")))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if !matches!(scheme, "http" | "https") {
        return Err(bad(format!("{field}: must be an http:// or https:// URL")));
    }
    let auth = uri
        .authority()
        .ok_or_else(|| bad(format!("{field}: has no host")))?
        .as_str()
        .to_owned();
    let path = uri.path().trim_end_matches('/');
    Ok((format!("{scheme}://{auth}{path}"), auth))
}

fn v1_target(r: &V1Request) -> Result<Target, ApiError> {
    if r.bucket.is_empty() {
        return Err(bad("bucket: must not be empty"));
    }
    if r.object.is_empty() {
        return Err(bad("object: must not be empty"));
    }
    let (base, authority) = parse_endpoint(&r.source, "source")?;
    Ok(Target {
        base,
        authority,
        s3: Some((r.bucket.clone(), r.object.clone())),
        url: String::new(),
    })
}

fn v2_target(r: &V2Request) -> Result<Target, ApiError> {
    let uri: http::Uri = r
        .url
        .parse()
        .map_err(|_| bad(format!("url: not a URL: {}", r.url)))?;
    let scheme = uri.scheme_str().unwrap_or("");
    let authority = uri
        .authority()
        .ok_or_else(|| bad("url: has no host"))?
        .as_str()
        .to_owned();
    match r.interface_type {
        InterfaceType::S3 => {
            if !matches!(scheme, "http" | "https") {
                return Err(bad("url: must be an http:// or https:// URL"));
            }
            let path = uri.path().trim_start_matches('/');
            let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
            let key = crate::sigv4::percent_decode(key)
                .map(|k| String::from_utf8_lossy(&k).into_owned())
                .ok_or_else(|| bad("url: malformed percent escape"))?;
            if bucket.is_empty() || key.is_empty() {
                return Err(bad("url: must name a bucket and an object (s3 path style)"));
            }
            Ok(Target {
                base: format!("{scheme}://{authority}"),
                authority,
                s3: Some((bucket.to_owned(), key)),
                url: String::new(),
            })
        }
        InterfaceType::Http | InterfaceType::Https => {
            let want = if r.interface_type == InterfaceType::Http {
                "http"
            } else {
                "https"
            };
            if scheme != want {
                return Err(bad(format!(
                    "url: interface_type {want} needs a {want}:// URL"
                )));
            }
            Ok(Target {
                base: String::new(),
                authority,
                s3: None,
                url: r.url.clone(),
            })
        }
    }
}

fn validate(op: Op, c: Common) -> Result<Plan, ApiError> {
    let dtype = match c.dtype {
        DTypeName::Int32 => DType::I32,
        DTypeName::Int64 => DType::I64,
        DTypeName::Uint32 => DType::U32,
        DTypeName::Uint64 => DType::U64,
        DTypeName::Float32 => DType::F32,
        DTypeName::Float64 => DType::F64,
    };
    let isz = dtype.size() as u64;
    if c.size == Some(0) {
        return Err(bad("size: must be at least 1"));
    }
    let shape: Option<Vec<usize>> = match &c.shape {
        Some(s) if s.is_empty() => return Err(bad("shape: must have at least one dimension")),
        Some(s) if s.contains(&0) => return Err(bad("shape: every dimension must be at least 1")),
        Some(s) => {
            let mut n: u64 = 1;
            for d in s {
                n = n
                    .checked_mul(*d)
                    .filter(|n| n.checked_mul(isz).is_some())
                    .ok_or_else(|| bad("shape: too many elements"))?;
            }
            Some(s.iter().map(|d| *d as usize).collect())
        }
        None => None,
    };
    let ndim = shape.as_ref().map_or(1, |s| s.len());
    let axis = match &c.axis {
        None => None,
        Some(a) => {
            let v = match a {
                AxisSpec::One(i) => vec![*i],
                AxisSpec::Many(v) => v.clone(),
            };
            let mut out = Vec::with_capacity(v.len());
            for (j, i) in v.iter().enumerate() {
                if *i < 0 || *i as usize >= ndim {
                    return Err(bad(format!(
                        "axis: {i} is out of range for {ndim} dimension(s) (each must be >= 0 and < len(shape))"
                    )));
                }
                if j > 0 && *i <= v[j - 1] {
                    return Err(bad("axis: must be ascending and without repeats"));
                }
                out.push(*i as usize);
            }
            Some(out)
        }
    };
    let selection = match &c.selection {
        None => None,
        Some(sel) => {
            let Some(shape) = &shape else {
                return Err(bad("selection requires shape"));
            };
            if sel.len() != shape.len() {
                return Err(bad(format!(
                    "selection: needs one [start, end, stride] per dimension of shape ({} given, shape has {})",
                    sel.len(),
                    shape.len()
                )));
            }
            if sel.iter().any(|s| s.2 == 0) {
                return Err(bad("selection: stride must not be 0"));
            }
            Some(sel.iter().map(|&(a, b, s)| [a, b, s]).collect())
        }
    };
    let missing = match c.missing {
        None => None,
        Some(m) => {
            let given = [
                m.missing_value.is_some(),
                m.missing_values.is_some(),
                m.valid_min.is_some(),
                m.valid_max.is_some(),
                m.valid_range.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if given != 1 {
                return Err(bad("missing: exactly one of missing_value, missing_values, valid_min, valid_max, valid_range"));
            }
            Some(if let Some(v) = m.missing_value {
                Missing::Values(vec![v])
            } else if let Some(v) = m.missing_values {
                if v.is_empty() {
                    return Err(bad("missing: missing_values must not be empty"));
                }
                Missing::Values(v)
            } else if let Some(v) = m.valid_min {
                Missing::Min(v)
            } else if let Some(v) = m.valid_max {
                Missing::Max(v)
            } else if let Some((lo, hi)) = m.valid_range {
                Missing::Range(lo, hi)
            } else {
                unreachable!("one descriptor was counted")
            })
        }
    };
    let filters = c.filters.unwrap_or_default();
    for f in &filters {
        let Filter::Shuffle { element_size } = f;
        if *element_size == 0 {
            return Err(bad("filters: shuffle element_size must be at least 1"));
        }
    }
    if c.compression.is_none() {
        if let Some(size) = c.size {
            check_len(size, shape.as_deref(), dtype, "size")?;
        }
    }
    let native_big = cfg!(target_endian = "big");
    let spec = Spec {
        op,
        dtype,
        swap: c
            .byte_order
            .is_some_and(|b| (b == ByteOrder::Big) != native_big),
        shape: shape.clone().unwrap_or_default(),
        order_f: c.order == Some(OrderName::F),
        selection,
        axis,
        missing,
    };
    reduce::check_missing(&spec).map_err(|e| bad(format!("missing: {e}")))?;
    Ok(Plan {
        spec,
        has_shape: shape.is_some(),
        offset: c.offset.unwrap_or(0),
        size: c.size,
        compression: c.compression,
        filters,
    })
}

/// The byte count must hold whole elements (exactly the shape's, when given).
fn check_len(n: u64, shape: Option<&[usize]>, dtype: DType, what: &str) -> Result<(), ApiError> {
    let isz = dtype.size() as u64;
    match shape {
        Some(s) => {
            let want = s.iter().map(|d| *d as u64).product::<u64>() * isz;
            if n != want {
                return Err(bad(format!(
                    "{what}: {n} bytes, but shape {s:?} of {} needs {want}",
                    dtype.name()
                )));
            }
        }
        None if !n.is_multiple_of(isz) => {
            return Err(bad(format!(
                "{what}: {n} bytes is not a multiple of the {} element size {isz}",
                dtype.name()
            )))
        }
        None => {}
    }
    Ok(())
}

// --- credentials -----------------------------------------------------------------------

/// HTTP Basic credentials (user = access key id, password = secret key); None: anonymous.
fn basic_creds<B>(req: &Request<B>) -> Result<Option<crate::sigv4::Creds>, ApiError> {
    use base64::Engine;
    let Some(v) = req.headers().get("authorization") else {
        return Ok(None);
    };
    let denied = || {
        err(
            401,
            "Access Denied: malformed HTTP Basic Authorization header",
        )
    };
    let v = v.to_str().map_err(|_| denied())?;
    let (scheme, b64) = v.split_once(' ').ok_or_else(denied)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(denied());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| denied())?;
    let s = String::from_utf8(raw).map_err(|_| denied())?;
    let (user, pass) = s.split_once(':').ok_or_else(denied)?;
    Ok(Some(crate::sigv4::Creds {
        access_key: user.to_owned(),
        secret_key: pass.to_owned(),
        session_token: None,
    }))
}

// --- fetching --------------------------------------------------------------------------

/// Bytes read for one request, with what the lineage event needs.
struct Fetched {
    data: Vec<u8>,
    /// The unread body (streaming folds).
    body: Option<Incoming>,
    held: Held,
    etag: Option<String>,
    version_id: Option<String>,
    bucket_key: Option<(String, String)>,
    range: Option<String>,
}

/// The `<Code>` of an S3 XML error body.
fn s3_code(body: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let a = s.find("<Code>")? + 6;
    let b = s[a..].find("</Code>")? + a;
    Some(s[a..b].to_owned())
}

impl Active {
    /// Reads the object (or its range). `streaming`: the body is handed back unread (the
    /// caller folds it as it arrives, holding only frames in flight); otherwise it is
    /// collected, every byte taken from the memory budget first.
    async fn fetch(
        &self,
        t: &Target,
        creds: Option<&crate::sigv4::Creds>,
        auth_header: Option<&HeaderValue>,
        plan: &Plan,
        streaming: bool,
    ) -> Result<Fetched, ApiError> {
        let range = match (plan.offset, plan.size) {
            (0, None) => None,
            (o, None) => Some(format!("bytes={o}-")),
            (o, Some(n)) => Some(format!("bytes={o}-{}", o + n - 1)),
        };
        // What the request may need before a byte arrives: refuse it at once if it can
        // never fit (a ranged read knows its size).
        let mut held = take(
            &self.budget,
            if streaming {
                STREAM_HOLD
            } else {
                plan.size.unwrap_or(0)
            },
        )?;
        let (uri, host) = match &t.s3 {
            Some((bucket, key)) => {
                let own = self.own_authorities.contains(&t.authority);
                let (base, host) = if own {
                    let up = &self.proxy.upstream;
                    let a = up.authority().map(|a| a.as_str()).unwrap_or("");
                    (
                        format!("{}://{a}", up.scheme_str().unwrap_or("http")),
                        a.to_owned(),
                    )
                } else {
                    (t.base.clone(), t.authority.clone())
                };
                (
                    format!(
                        "{base}/{}/{}",
                        crate::sigv4::uri_encode(bucket.as_bytes(), false),
                        crate::sigv4::uri_encode(key.as_bytes(), true)
                    ),
                    host,
                )
            }
            None => (t.url.clone(), t.authority.clone()),
        };
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(&uri)
            .body(empty())
            .map_err(|e| bad(format!("cannot build the request for {uri}: {e}")))?;
        let h = req.headers_mut();
        h.insert(
            "host",
            HeaderValue::from_str(&host).map_err(|_| bad("bad host"))?,
        );
        if let Some(r) = &range {
            h.insert(
                "range",
                HeaderValue::from_str(r).map_err(|_| bad("bad range"))?,
            );
        }
        match (&t.s3, creds) {
            (Some(_), Some(c)) => {
                let identity = aws_credential_types::Credentials::new(
                    c.access_key.clone(),
                    c.secret_key.clone(),
                    None,
                    None,
                    "roar-active-storage",
                )
                .into();
                sign_request(
                    &mut req,
                    &identity,
                    &self.proxy.region,
                    SignableBody::Bytes(b""),
                )
                .map_err(|e| err(500, format!("cannot sign the S3 request: {e}")))?;
            }
            (None, _) => {
                if let Some(a) = auth_header {
                    req.headers_mut().insert("authorization", a.clone());
                }
            }
            (Some(_), None) => {}
        }
        let resp = self.proxy.client.request(req).await.map_err(|e| {
            err(
                502,
                format!(
                    "cannot reach the object store at {host}: {}",
                    root_cause(&e)
                ),
            )
        })?;
        let status = resp.status().as_u16();
        if status != 200 && status != 206 {
            let body = Limited::new(resp.into_body(), 64 << 10)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let code = s3_code(&body).unwrap_or_default();
            return Err(match status {
                401 | 403 => ApiError {
                    status: 401,
                    message: "Access Denied".into(),
                    caused_by: vec![format!("the object store answered {status} {code}")],
                },
                404 => bad(format!(
                    "{}: the object store answered 404",
                    if code.is_empty() { "NoSuchKey" } else { &code }
                )),
                416 => bad(format!(
                    "InvalidRange: offset {} is beyond the end of the object",
                    plan.offset
                )),
                400..=499 => bad(format!("the object store answered {status} {code}")),
                _ => err(502, format!("the object store answered {status} {code}")),
            });
        }
        if range.is_some() && status == 200 && plan.offset > 0 {
            return Err(err(502, "the object store ignored the Range header"));
        }
        let etag = header_str(resp.headers(), "etag");
        let version_id = header_str(resp.headers(), "x-amz-version-id");
        if streaming {
            return Ok(Fetched {
                data: Vec::new(),
                body: Some(resp.into_body()),
                held,
                etag,
                version_id,
                bucket_key: t.s3.clone(),
                range,
            });
        }
        let declared: Option<u64> =
            header_str(resp.headers(), "content-length").and_then(|s| s.parse().ok());
        let mut data = Vec::new();
        if let Some(n) = declared {
            if n > held.n {
                held.grow(n - held.n)?;
            }
            data.reserve_exact(n as usize);
        }
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| err(502, format!("reading the object: {}", root_cause(&e))))?;
            if let Some(d) = frame.data_ref() {
                let need = (data.len() + d.len()) as u64;
                if need > held.n {
                    held.grow((need - held.n).max(1 << 20))?;
                }
                data.extend_from_slice(d);
            }
        }
        self.metrics
            .fetched
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(Fetched {
            data,
            body: None,
            held,
            etag,
            version_id,
            bucket_key: t.s3.clone(),
            range,
        })
    }

    /// Runs `f` on a blocking thread within the thread budget (503 at once when the budget
    /// and its short queue are full).
    async fn compute<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        let permit = match self.threads.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(err(
                        503,
                        "every active-storage thread is busy and the queue is full; retry later (--active-storage-threads, ROAR_ACTIVE_STORAGE_THREADS)",
                    ));
                }
                let p = self.threads.acquire().await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                p.map_err(|_| err(503, "shutting down"))?
            }
        };
        let r = tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| err(500, format!("the reduction failed: {e}")));
        drop(permit);
        r
    }
}

// --- the pipeline ----------------------------------------------------------------------

/// What a reduction answers.
struct Done {
    out: Output,
}

async fn reduce_request(
    a: &Active,
    plan: Plan,
    target: Target,
    req: &Request<()>,
) -> Result<Done, ApiError> {
    let creds = basic_creds(req)?;
    let streaming = reduce::streams(&plan.spec) && plan.filters.is_empty();
    let fetched = a
        .fetch(
            &target,
            creds.as_ref(),
            req.headers().get("authorization"),
            &plan,
            streaming,
        )
        .await?;
    if streaming {
        return stream_fold(a, plan, fetched).await;
    }
    let Fetched {
        data,
        body: _,
        mut held,
        etag,
        version_id,
        bucket_key,
        range,
    } = fetched;
    let whole = range.is_none();
    let fetched_len = data.len() as u64;
    let Plan {
        spec,
        has_shape,
        compression,
        filters,
        ..
    } = plan;
    // The CPU work (decompression, filters, reduction, the lineage hash) runs on a blocking
    // thread; decompressed and unfiltered bytes count against the memory budget as they grow.
    let (out, blake3) = a
        .compute(move || {
            std::thread::scope(|sc| {
                // The object's blake3 (its lineage identity) beside the reduction, when the
                // whole object was read.
                let hasher = whole.then(|| sc.spawn(|| blake3::hash(&data).to_hex().to_string()));
                let mut grow = |n: usize| held.grow(n as u64);
                let r = crate::codec::decode(&data, compression, &filters, &mut grow).and_then(
                    |decoded| {
                        let bytes: &[u8] = decoded.as_deref().unwrap_or(&data);
                        let mut spec = spec;
                        if !has_shape {
                            spec.shape = vec![bytes.len() / spec.dtype.size()];
                        }
                        let what = if compression.is_some() {
                            "decompressed data"
                        } else {
                            "object data"
                        };
                        check_len(
                            bytes.len() as u64,
                            has_shape.then_some(&spec.shape[..]),
                            spec.dtype,
                            what,
                        )?;
                        // What the reduction allocates (accumulators, result, counts)
                        // is asked of the budget too.
                        grow(reduce::working_bytes(&spec) as usize)?;
                        reduce::run(&spec, bytes).map_err(bad)
                    },
                );
                let hash = hasher.and_then(|h| h.join().ok());
                (r, hash)
            })
        })
        .await?;
    let out = out?;
    record(a, bucket_key, version_id, fetched_len, etag, blake3, range);
    Ok(Done { out })
}

/// The lineage event of a reduction that succeeded: the object (or its range) was read.
fn record(
    a: &Active,
    bucket_key: Option<(String, String)>,
    version_id: Option<String>,
    size: u64,
    etag: Option<String>,
    blake3: Option<String>,
    range: Option<String>,
) {
    if let Some((bucket, key)) = bucket_key {
        a.proxy.log.write(&S3Event {
            op: "reduce",
            dir: "in",
            bucket,
            key,
            version_id,
            size: Some(size),
            etag,
            blake3: if range.is_none() { blake3 } else { None },
            range,
        });
    }
}

/// The decompressor in front of a streaming fold.
enum Decoder {
    Raw(SinkWriter),
    Gzip(flate2::write::GzDecoder<SinkWriter>),
    Zlib(flate2::write::ZlibDecoder<SinkWriter>),
}

/// `Write` into a fold (what the streaming decompressors write to).
struct SinkWriter(Box<dyn reduce::Sink>);

impl std::io::Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Decoder {
    fn feed(&mut self, b: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            Decoder::Raw(w) => w.write_all(b),
            Decoder::Gzip(d) => d.write_all(b),
            Decoder::Zlib(d) => d.write_all(b),
        }
    }
    fn finish(self) -> std::io::Result<SinkWriter> {
        match self {
            Decoder::Raw(w) => Ok(w),
            Decoder::Gzip(d) => d.finish(),
            Decoder::Zlib(d) => d.finish(),
        }
    }
}

/// `sum`/`mean`/`min`/`max`/`count` over a whole (possibly compressed) object, folded on a
/// blocking thread as frames arrive: memory is the frames in flight, whatever the object's size.
async fn stream_fold(a: &Active, plan: Plan, fetched: Fetched) -> Result<Done, ApiError> {
    let Fetched {
        body,
        held,
        etag,
        version_id,
        bucket_key,
        range,
        ..
    } = fetched;
    let Some(mut body) = body else {
        return Err(err(500, "no body to stream"));
    };
    let whole = range.is_none();
    let spec = plan.spec.clone();
    let (compression, has_shape) = (plan.compression, plan.has_shape);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_FRAMES);
    let worker = a.compute(move || {
        let sink = reduce::sink(&spec).map_err(bad)?;
        let w = SinkWriter(sink);
        let mut dec = match compression {
            None => Decoder::Raw(w),
            Some(Compression::Gzip) => Decoder::Gzip(flate2::write::GzDecoder::new(w)),
            Some(Compression::Zlib) => Decoder::Zlib(flate2::write::ZlibDecoder::new(w)),
        };
        let mut hasher = whole.then(blake3::Hasher::new);
        let mut fetched = 0u64;
        while let Some(frame) = rx.blocking_recv() {
            fetched += frame.len() as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&frame);
            }
            dec.feed(&frame)
                .map_err(|e| bad(format!("compression: the data cannot be decompressed: {e}")))?;
        }
        let sink = dec
            .finish()
            .map_err(|e| bad(format!("compression: the data cannot be decompressed: {e}")))?
            .0;
        let what = if compression.is_some() {
            "decompressed data"
        } else {
            "object data"
        };
        check_len(
            sink.len(),
            has_shape.then_some(&spec.shape[..]),
            spec.dtype,
            what,
        )?;
        Ok::<_, ApiError>((
            sink.finish(),
            fetched,
            hasher.map(|h| h.finalize().to_hex().to_string()),
        ))
    });
    let feed = async move {
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| err(502, format!("reading the object: {}", root_cause(&e))))?;
            if let Ok(d) = frame.into_data() {
                if tx.send(d).await.is_err() {
                    break; // the fold stopped (its error is the answer)
                }
            }
        }
        Ok::<_, ApiError>(())
    };
    let (fed, folded) = tokio::join!(feed, worker);
    drop(held);
    fed?; // an upstream failure explains a short fold: it is the answer
    let (out, fetched_len, blake3) = folded??;
    a.metrics.fetched.fetch_add(fetched_len, Ordering::Relaxed);
    record(a, bucket_key, version_id, fetched_len, etag, blake3, range);
    Ok(Done { out })
}

// --- answers ---------------------------------------------------------------------------

fn json_list<T: std::fmt::Display>(v: &[T]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(","))
}

fn native_order() -> &'static str {
    if cfg!(target_endian = "big") {
        "big"
    } else {
        "little"
    }
}

fn v1_response(out: Output) -> Response<PBody> {
    let mut r = Response::new(full(Bytes::from(out.bytes)));
    let h = r.headers_mut();
    let hv = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""));
    h.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("x-activestorage-dtype", HeaderValue::from_static(out.dtype));
    h.insert("x-activestorage-shape", hv(json_list(&out.shape)));
    h.insert("x-activestorage-count", hv(json_list(&out.counts)));
    h.insert(
        "x-activestorage-byte-order",
        HeaderValue::from_static(native_order()),
    );
    r
}

/// A minimal CBOR writer (RFC 8949) for the v2 answer: maps, text, byte strings, unsigned
/// integers, arrays and booleans are all it needs.
mod cbor {
    fn head(out: &mut Vec<u8>, major: u8, n: u64) {
        let m = major << 5;
        match n {
            0..=23 => out.push(m | n as u8),
            24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
            0x100..=0xffff => {
                out.push(m | 25);
                out.extend_from_slice(&(n as u16).to_be_bytes())
            }
            0x1_0000..=0xffff_ffff => {
                out.push(m | 26);
                out.extend_from_slice(&(n as u32).to_be_bytes())
            }
            _ => {
                out.push(m | 27);
                out.extend_from_slice(&n.to_be_bytes())
            }
        }
    }
    pub fn uint(out: &mut Vec<u8>, n: u64) {
        head(out, 0, n)
    }
    pub fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        head(out, 2, b.len() as u64);
        out.extend_from_slice(b)
    }
    pub fn text(out: &mut Vec<u8>, s: &str) {
        head(out, 3, s.len() as u64);
        out.extend_from_slice(s.as_bytes())
    }
    pub fn array(out: &mut Vec<u8>, n: usize) {
        head(out, 4, n as u64)
    }
    pub fn map(out: &mut Vec<u8>, n: usize) {
        head(out, 5, n as u64)
    }
    pub fn null(out: &mut Vec<u8>) {
        out.push(0xf6)
    }
}

fn v2_response(out: Output, shape_bytes: bool, count_bytes: bool) -> Response<PBody> {
    let mut b = Vec::with_capacity(out.bytes.len() + 128);
    cbor::map(&mut b, 7);
    cbor::text(&mut b, "bytes");
    cbor::bytes(&mut b, &out.bytes);
    cbor::text(&mut b, "dtype");
    cbor::text(&mut b, out.dtype);
    cbor::text(&mut b, "byte_order");
    cbor::text(&mut b, native_order());
    cbor::text(&mut b, "shape");
    if shape_bytes {
        cbor::null(&mut b);
    } else {
        cbor::array(&mut b, out.shape.len());
        for d in &out.shape {
            cbor::uint(&mut b, *d as u64);
        }
    }
    cbor::text(&mut b, "count");
    if count_bytes {
        cbor::null(&mut b);
    } else {
        cbor::array(&mut b, out.counts.len());
        for c in &out.counts {
            cbor::uint(&mut b, *c as u64);
        }
    }
    cbor::text(&mut b, "shape_as_bytes");
    if shape_bytes {
        let v: Vec<u8> = out
            .shape
            .iter()
            .flat_map(|d| (*d as u64).to_ne_bytes())
            .collect();
        cbor::bytes(&mut b, &v);
    } else {
        cbor::null(&mut b);
    }
    cbor::text(&mut b, "count_as_bytes");
    if count_bytes {
        let v: Vec<u8> = out.counts.iter().flat_map(|c| c.to_ne_bytes()).collect();
        cbor::bytes(&mut b, &v);
    } else {
        cbor::null(&mut b);
    }
    let mut r = Response::new(full(Bytes::from(b)));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/cbor"));
    r
}

/// The OpenAPI description of both API versions (served at `/openapi.json`).
const OPENAPI: &str = include_str!("openapi.json");

// --- routing ---------------------------------------------------------------------------

/// Handles one request on the active-storage listener (never fails: errors are JSON).
pub async fn handle(req: Request<Incoming>, a: Arc<Active>) -> Result<Response<PBody>, Infallible> {
    let t0 = Instant::now();
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let trimmed = path.trim_end_matches('/');
    let parts: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
    let resp = match (&method, parts.as_slice()) {
        (&Method::GET, [".well-known", "reductionist-schema"]) => json_response(
            200,
            serde_json::json!({"status": "ok", "server": "roar-proxy active storage", "api": ["v1", "v2"]}).to_string(),
        ),
        (&Method::GET, ["metrics"]) => {
            let mut r = Response::new(full(Bytes::from(a.metrics.render(
                &a.budget,
                a.nthreads - a.threads.available_permits(),
                a.waiting.load(Ordering::Relaxed),
            ))));
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return Ok(r);
        }
        (&Method::GET, ["openapi.json"]) => json_response(200, OPENAPI.to_owned()),
        (&Method::POST, [api @ ("v1" | "v2"), op]) => {
            let api = *api;
            let op_name = match Op::parse(op) {
                Some(Op::Mean) if api == "v2" => None,
                o => o,
            };
            let r = match op_name {
                None => Err(err(404, format!("unknown operation {op:?} (count, max, min, select, sum{})", if api == "v1" { ", mean" } else { "" }))),
                Some(o) => reduction(&a, api, o, req).await,
            };
            let resp = r.unwrap_or_else(|e| e.response());
            let status = resp.status().as_u16();
            let op_label = op_name.map_or("unknown", |o| o.name());
            a.metrics
                .observe(api, op_label, status, t0.elapsed().as_secs_f64());
            if status == 200 {
                if let Some(n) = http_body::Body::size_hint(resp.body()).exact() {
                    a.metrics.returned.fetch_add(n, Ordering::Relaxed);
                }
            }
            return Ok(resp);
        }
        _ => err(
            404,
            format!("no such endpoint: {method} {path} (POST /v1/{{op}}, POST /v2/{{op}}, GET /.well-known/reductionist-schema, /metrics, /openapi.json)"),
        )
        .response(),
    };
    Ok(resp)
}

async fn reduction(
    a: &Active,
    api: &str,
    op: Op,
    req: Request<Incoming>,
) -> Result<Response<PBody>, ApiError> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_REQUEST)
        .collect()
        .await
        .map_err(|e| bad(format!("cannot read the request body: {e}")))?
        .to_bytes();
    let req = Request::from_parts(parts, ());
    let req_ref = &req;
    if api == "v1" {
        let r: V1Request = parse_json(&body)?;
        let target = v1_target(&r)?;
        let plan = validate(op, r.common())?;
        let done = reduce_request(a, plan, target, req_ref).await?;
        Ok(v1_response(done.out))
    } else {
        let cbor = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/cbor"));
        let r: V2Request = parse_body(&body, cbor)?;
        let target = v2_target(&r)?;
        let _ = r.option_disable_chunk_cache; // no chunk cache here: every request reads S3
        let (sb, cb) = (
            r.option_shape_as_bytes.unwrap_or(false),
            r.option_count_as_bytes.unwrap_or(false),
        );
        let plan = validate(op, r.common())?;
        let done = reduce_request(a, plan, target, req_ref).await?;
        Ok(v2_response(done.out, sb, cb))
    }
}

/// Accepts connections on the active-storage listener until the runtime stops.
pub async fn serve(listener: tokio::net::TcpListener, a: Arc<Active>) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let a = a.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, a.clone()));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
