//! Bodies streamed through the proxy, observed on the way: blake3 of the object's bytes,
//! the byte count, and (for a hex `x-amz-content-sha256`) the sha256 check.
//!
//! Frames are passed on as they arrive (hyper's back-pressure bounds what is in flight;
//! nothing here buffers more than one frame, plus at most one aws-chunked size line or
//! 16 KiB of trailers). The one exception is the frame that completes a hex-declared body:
//! it is released only after its sha256 matched, so on a mismatch upstream receives a body
//! cut short and never stores the object. Must not change a single forwarded byte.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

/// Boxed error type of every body in the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What was seen of one body, shared between the body and the request handler.
pub struct Observed {
    /// blake3 of the object's bytes (decoded bytes for aws-chunked bodies).
    pub hasher: blake3::Hasher,
    /// Object bytes seen so far.
    pub bytes: u64,
    /// True once the body reached its end with every check passed.
    pub complete: bool,
    /// True when the hex sha256 did not match (the request must be answered with 400).
    pub sha_mismatch: bool,
    /// A framing error in an aws-chunked body.
    pub framing_error: Option<String>,
    /// The aws-chunked trailer checksum did not match the data (the request gets 400 BadDigest).
    pub bad_digest: Option<String>,
    /// A signed aws-chunk's signature did not match (the request gets 403).
    pub bad_signature: bool,
    /// An UploadPart body (plain or hex) hashed as subtrees at its offset (see `parts.rs`).
    pub part: Option<crate::parts::PartHasher>,
    /// The body's bytes, kept for a CompleteMultipartUpload (its part list); dropped past 1 MiB.
    pub keep: Option<Vec<u8>>,
}

impl Observed {
    fn new() -> Self {
        Observed {
            hasher: blake3::Hasher::new(),
            bytes: 0,
            complete: false,
            sha_mismatch: false,
            framing_error: None,
            bad_digest: None,
            bad_signature: false,
            part: None,
            keep: None,
        }
    }

    /// Hashes object bytes of a plain or hex body: blake3 (for an UploadPart, whose own
    /// blake3 nobody needs, only its subtrees), and the kept copy when asked for.
    fn update(&mut self, data: &[u8]) {
        match &mut self.part {
            Some(p) => p.update(data),
            None => {
                self.hasher.update(data);
            }
        }
        if let Some(k) = &mut self.keep {
            if k.len() + data.len() > KEEP_MAX {
                self.keep = None;
            } else {
                k.extend_from_slice(data);
            }
        }
    }

    /// The blake3 hex of the bytes seen, if the body was complete.
    pub fn blake3(&self) -> Option<String> {
        self.complete
            .then(|| self.hasher.finalize().to_hex().to_string())
    }
}

/// Longest body kept whole (`Observed::keep`): CompleteMultipartUpload lists at most 10,000 parts.
const KEEP_MAX: usize = 1 << 20;

/// Handle the request handler keeps to read what its body saw.
pub type Shared = Arc<Mutex<Observed>>;

/// Called once when a body ended normally (not when it was dropped early).
pub type OnEnd = Box<dyn FnOnce(&Observed) + Send + Sync>;

/// How the raw bytes relate to the object's bytes, and what must be checked.
pub enum Mode {
    /// Raw bytes are the object; nothing to check.
    Plain,
    /// Raw bytes are the object, `len` of them, whose sha256 must be `expected`.
    Sha256 {
        /// Declared Content-Length.
        len: u64,
        /// Lowercase hex the client signed.
        expected: String,
        /// Running sha256.
        hasher: Box<Sha256>,
    },
    /// aws-chunked framing (unsigned, with trailers): decode a copy to hash the object.
    Chunked(Box<ChunkDecoder>),
}

impl Mode {
    /// Sha256 mode for a body of `len` bytes declared as `expected`.
    pub fn sha256(len: u64, expected: String) -> Mode {
        Mode::Sha256 {
            len,
            expected,
            hasher: Box::new(Sha256::new()),
        }
    }
}

/// A body wrapper that observes every data frame (see module docs).
pub struct Tap<B> {
    inner: B,
    mode: Mode,
    shared: Shared,
    on_end: Option<OnEnd>,
    /// Object length when known (Content-Length): hyper stops polling a body once that many
    /// bytes went out, so the end must be recognised by count, not only by `None`.
    expect: Option<u64>,
    /// Hashing on a helper thread (large bodies), overlapped with the transfer.
    offload: Option<Offload>,
}

/// Bodies at least this long are hashed on a helper thread: sha256 costs about 1 ms per MiB
/// here, which inline would add up to the request's latency instead of overlapping it.
const OFFLOAD_MIN: u64 = 512 * 1024;
/// Frames queued to the hashing thread before the sender waits (bounds the memory in flight).
const OFFLOAD_QUEUE: usize = 32;

/// A helper thread computing the sha256 of one body (blake3 stays inline: see `with_length`).
struct Offload {
    tx: Option<std::sync::mpsc::SyncSender<Bytes>>,
    rx: tokio::sync::oneshot::Receiver<String>,
    /// The frame that completes the body, released only once the sha256 is in.
    held: Option<Frame<Bytes>>,
}

impl Offload {
    fn spawn() -> Option<Offload> {
        let (tx, frames) = std::sync::mpsc::sync_channel::<Bytes>(OFFLOAD_QUEUE);
        let (done, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("roar-hash".into())
            .spawn(move || {
                let mut s = Sha256::new();
                for d in frames {
                    s.update(&d);
                }
                let _ = done.send(hex::encode(s.finalize()));
            })
            .ok()?;
        Some(Offload {
            tx: Some(tx),
            rx,
            held: None,
        })
    }
}

impl<B> Tap<B> {
    /// Wraps `inner`; returns the body and the handle to what it sees.
    pub fn new(inner: B, mode: Mode, on_end: Option<OnEnd>) -> (Self, Shared) {
        let shared = Arc::new(Mutex::new(Observed::new()));
        (
            Tap {
                inner,
                mode,
                shared: shared.clone(),
                on_end,
                expect: None,
                offload: None,
            },
            shared,
        )
    }

    /// Declares the body's length, so its end is seen when the count reaches it; a long
    /// body with a hex sha256 then has its sha256 computed on a helper thread.
    ///
    /// Only the sha256 moves: blake3 runs at several GB/s and stays inline, so the two hashes
    /// run in parallel and the held-back last frame waits for the sha256 alone (with both on
    /// the helper thread, its backlog at the last frame was blake3 + sha256 of what was queued).
    pub fn with_length(mut self, n: Option<u64>) -> Self {
        self.expect = n;
        if n.unwrap_or(0) >= OFFLOAD_MIN {
            match self.mode {
                // blake3 alone runs at several GB/s: handing frames to a thread costs more than it saves.
                Mode::Plain => {}
                Mode::Sha256 { .. } => self.offload = Offload::spawn(),
                Mode::Chunked(_) => {}
            }
        }
        self
    }

    /// Offloaded mode: counts, blake3-hashes and queues a frame; true when it completes the body.
    fn feed_offload(&mut self, data: &Bytes) -> Result<bool, BoxError> {
        let mut o = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        o.bytes += data.len() as u64;
        if Some(o.bytes) > self.expect {
            o.sha_mismatch = matches!(self.mode, Mode::Sha256 { .. });
            return Err("body longer than its Content-Length".into());
        }
        let last = Some(o.bytes) == self.expect;
        drop(o);
        let off = self.offload.as_mut().expect("offload mode");
        // Queued first, so the helper thread hashes this frame while blake3 does here.
        // Blocks only while the hashing thread is OFFLOAD_QUEUE frames behind: back-pressure
        // at hashing speed, as inline hashing would be.
        if off
            .tx
            .as_ref()
            .is_none_or(|tx| tx.send(data.clone()).is_err())
        {
            return Err("hashing thread gone".into());
        }
        if last {
            off.tx = None; // closes the queue: the thread finishes
        }
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(data);
        Ok(last)
    }

    /// Offloaded mode, last frame held: waits for the hashes, checks, then releases it.
    fn poll_offload_done(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let off = self.offload.as_mut().expect("offload mode");
        let res = ready!(Pin::new(&mut off.rx).poll(cx));
        let frame = off.held.take();
        self.offload = None;
        let Ok(sha) = res else {
            return Poll::Ready(Some(Err("hashing thread gone".into())));
        };
        {
            let mut o = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            if let Mode::Sha256 { expected, .. } = &self.mode {
                if sha != *expected {
                    o.sha_mismatch = true;
                    return Poll::Ready(Some(Err(
                        "x-amz-content-sha256 does not match the body".into()
                    )));
                }
            }
        }
        self.finish();
        Poll::Ready(frame.map(Ok))
    }

    fn observe(&mut self, data: &Bytes) -> Result<(), BoxError> {
        self.observe_inner(data)?;
        let done = match &self.mode {
            Mode::Chunked(dec) => dec.is_done(),
            _ => {
                self.expect.is_some()
                    && self.expect
                        == Some(self.shared.lock().unwrap_or_else(|p| p.into_inner()).bytes)
            }
        };
        if done {
            self.finish();
        }
        Ok(())
    }

    fn observe_inner(&mut self, data: &Bytes) -> Result<(), BoxError> {
        let mut o = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match &mut self.mode {
            Mode::Plain => {
                o.update(data);
                o.bytes += data.len() as u64;
            }
            Mode::Sha256 {
                len,
                expected,
                hasher,
            } => {
                o.update(data);
                hasher.update(data);
                o.bytes += data.len() as u64;
                if o.bytes > *len {
                    o.sha_mismatch = true;
                    return Err("body longer than its Content-Length".into());
                }
                if o.bytes == *len {
                    let got = hex::encode(std::mem::take(hasher).finalize());
                    if got != *expected {
                        o.sha_mismatch = true;
                        return Err("x-amz-content-sha256 does not match the body".into());
                    }
                }
            }
            Mode::Chunked(dec) => {
                let o = &mut *o;
                if let Err(e) = dec.feed(data, &mut o.hasher, &mut o.bytes) {
                    match e {
                        ChunkError::Framing(m) => o.framing_error = Some(m),
                        ChunkError::BadDigest(m) => o.bad_digest = Some(m),
                    }
                    return Err("aws-chunked body refused".into());
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) {
        let mut o = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        // Complete only when every byte was hashed: a body cut short, or still being hashed on
        // the helper thread, has no digest yet.
        let whole = self.offload.is_none() && self.expect.is_none_or(|n| n == o.bytes);
        let ok = whole
            && match &mut self.mode {
                Mode::Plain => true,
                Mode::Sha256 { len, .. } => o.bytes == *len && !o.sha_mismatch,
                Mode::Chunked(dec) => dec.finished(),
            };
        o.complete = ok;
        if ok {
            if let Some(f) = self.on_end.take() {
                f(&o);
            }
        }
    }
}

impl<B> Body for Tap<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.offload.as_ref().is_some_and(|o| o.held.is_some()) {
            return this.poll_offload_done(cx);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if this.offload.is_some() {
                        match this.feed_offload(data) {
                            Err(e) => return Poll::Ready(Some(Err(e))),
                            Ok(true) => {
                                this.offload.as_mut().expect("offload mode").held = Some(frame);
                                return this.poll_offload_done(cx);
                            }
                            Ok(false) => {}
                        }
                    } else if let Err(e) = this.observe(data) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => {
                this.finish();
                Poll::Ready(None)
            }
        }
    }

    // Never claim the end early: hyper would then stop polling and `finish` would not run.
    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Longest aws-chunked size line or trailer block accepted (S3's own limits are smaller).
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug)]
enum ChunkState {
    Size(Vec<u8>),
    Data(u64),
    DataEnd(u8),
    Trailers(Vec<u8>),
    Done,
}

/// Why an aws-chunked body was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// The framing is broken (400 IncompleteBody).
    Framing(String),
    /// The trailing checksum does not match the data (400 BadDigest).
    BadDigest(String),
}

impl From<&str> for ChunkError {
    fn from(m: &str) -> Self {
        ChunkError::Framing(m.to_owned())
    }
}

impl From<String> for ChunkError {
    fn from(m: String) -> Self {
        ChunkError::Framing(m)
    }
}

/// A checksum announced in `x-amz-trailer`, computed over the decoded bytes.
pub enum Checksum {
    /// crc32, crc32c or crc64nvme: the digest and its width in bytes.
    Crc(Box<crc_fast::Digest>, usize),
    /// sha1.
    Sha1(sha1::Sha1),
    /// sha256.
    Sha256(Box<Sha256>),
}

impl std::fmt::Debug for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Checksum")
    }
}

impl Checksum {
    /// The checksum for a trailer name (`x-amz-checksum-crc32` ...), None if unknown.
    pub fn for_trailer(name: &str) -> Option<Checksum> {
        use crc_fast::CrcAlgorithm::*;
        Some(match name {
            "x-amz-checksum-crc32" => {
                Checksum::Crc(Box::new(crc_fast::Digest::new(Crc32IsoHdlc)), 4)
            }
            "x-amz-checksum-crc32c" => {
                Checksum::Crc(Box::new(crc_fast::Digest::new(Crc32Iscsi)), 4)
            }
            "x-amz-checksum-crc64nvme" => {
                Checksum::Crc(Box::new(crc_fast::Digest::new(Crc64Nvme)), 8)
            }
            "x-amz-checksum-sha1" => Checksum::Sha1(sha1::Sha1::new()),
            "x-amz-checksum-sha256" => Checksum::Sha256(Box::default()),
            _ => return None,
        })
    }

    fn update(&mut self, d: &[u8]) {
        match self {
            Checksum::Crc(c, _) => c.update(d),
            Checksum::Sha1(h) => h.update(d),
            Checksum::Sha256(h) => h.update(d),
        }
    }

    /// The value as S3 writes it: base64 of the big-endian bytes.
    fn base64(&self) -> String {
        let bytes = match self {
            Checksum::Crc(c, w) => c.finalize().to_be_bytes()[8 - w..].to_vec(),
            Checksum::Sha1(h) => h.clone().finalize().to_vec(),
            Checksum::Sha256(h) => h.as_ref().clone().finalize().to_vec(),
        };
        base64(&bytes)
    }
}

/// Standard base64 with padding (the few bytes of a checksum; no dependency needed).
pub fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Incremental parser of aws-chunked framing: `hex-size[;ext]\r\n data \r\n ... 0\r\n trailers \r\n`.
#[derive(Debug)]
pub struct ChunkDecoder {
    state: ChunkState,
    /// Trailer lines (`name:value`) once the body ended.
    pub trailers: Vec<String>,
    /// The announced trailing checksum (name, running value), verified when the trailers arrive.
    checksum: Option<(String, Checksum)>,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        ChunkDecoder {
            state: ChunkState::Size(Vec::new()),
            trailers: Vec::new(),
            checksum: None,
        }
    }
}

impl ChunkDecoder {
    /// A decoder that also verifies the checksum announced by `x-amz-trailer` (if one we know).
    pub fn with_trailer(trailer: Option<&str>) -> Self {
        let mut d = ChunkDecoder::default();
        if let Some(name) = trailer.map(|t| t.trim().to_ascii_lowercase()) {
            d.checksum = Checksum::for_trailer(&name).map(|c| (name, c));
        }
        d
    }

    /// Parses the trailer block and checks the announced checksum against the data.
    fn end_trailers(&mut self, text: &str) -> Result<(), ChunkError> {
        self.trailers = text
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        self.state = ChunkState::Done;
        let Some((name, sum)) = &self.checksum else {
            return Ok(());
        };
        let got = self.trailers.iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_owned())
        });
        match got {
            Some(v) if v == sum.base64() => Ok(()),
            Some(_) => Err(ChunkError::BadDigest(format!(
                "The {name} you specified did not match the calculated checksum."
            ))),
            None => Err(ChunkError::Framing(format!(
                "trailer {name} announced but not sent"
            ))),
        }
    }

    /// Feeds raw bytes; decoded object bytes go to `hasher` and are counted in `bytes`.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        hasher: &mut blake3::Hasher,
        bytes: &mut u64,
    ) -> Result<(), ChunkError> {
        while !data.is_empty() {
            match &mut self.state {
                ChunkState::Size(line) => {
                    let nl = data.iter().position(|&b| b == b'\n');
                    let take = nl.map_or(data.len(), |i| i + 1);
                    line.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if line.len() > MAX_LINE {
                        return Err("aws-chunked size line too long".into());
                    }
                    if nl.is_some() {
                        let s = std::str::from_utf8(line)
                            .map_err(|_| "aws-chunked size line not ASCII")?;
                        let s = s.trim_end_matches(['\r', '\n']);
                        let hexpart = s.split(';').next().unwrap_or("").trim();
                        let n = u64::from_str_radix(hexpart, 16)
                            .map_err(|_| format!("bad aws-chunked size line {s:?}"))?;
                        self.state = if n == 0 {
                            ChunkState::Trailers(Vec::new())
                        } else {
                            ChunkState::Data(n)
                        };
                    }
                }
                ChunkState::Data(n) => {
                    let k = (*n).min(data.len() as u64) as usize;
                    hasher.update(&data[..k]);
                    if let Some((_, c)) = &mut self.checksum {
                        c.update(&data[..k]);
                    }
                    *bytes += k as u64;
                    *n -= k as u64;
                    data = &data[k..];
                    if *n == 0 {
                        self.state = ChunkState::DataEnd(0);
                    }
                }
                ChunkState::DataEnd(seen) => {
                    let want = if *seen == 0 { b'\r' } else { b'\n' };
                    if data[0] != want {
                        return Err("aws-chunked data not followed by CRLF".into());
                    }
                    data = &data[1..];
                    *seen += 1;
                    if *seen == 2 {
                        self.state = ChunkState::Size(Vec::new());
                    }
                }
                ChunkState::Trailers(buf) => {
                    buf.extend_from_slice(data);
                    data = &[];
                    if buf.len() > MAX_TRAILERS {
                        return Err("aws-chunked trailers too long".into());
                    }
                    // The block ends with an empty line (or, leniently, with the body itself).
                    let text = String::from_utf8_lossy(buf).into_owned();
                    if text == "\r\n" || text.ends_with("\r\n\r\n") {
                        self.end_trailers(&text)?;
                    }
                }
                ChunkState::Done => return Err("bytes after the end of an aws-chunked body".into()),
            }
        }
        Ok(())
    }

    /// Whether the terminating empty line after the trailers was seen.
    pub fn is_done(&self) -> bool {
        matches!(self.state, ChunkState::Done)
    }

    /// Whether the framing reached its end (the 0-size chunk and its trailers).
    pub fn finished(&mut self) -> bool {
        match &self.state {
            ChunkState::Done => true,
            // Accept trailers terminated by the body's end rather than an empty line.
            ChunkState::Trailers(buf) => {
                let text = String::from_utf8_lossy(buf).into_owned();
                self.end_trailers(&text).is_ok()
            }
            _ => false,
        }
    }
}

/// Largest signed aws-chunk accepted: each chunk is held whole until its signature is checked.
const MAX_SIGNED_CHUNK: u64 = 16 * 1024 * 1024;

#[derive(Debug)]
enum SignedState {
    Header(Vec<u8>),
    Data {
        size: u64,
        sig: String,
        buf: Vec<u8>,
    },
    DataEnd(u8),
    FinalCrlf(u8),
    Trailers(Vec<u8>),
    Done,
}

/// A signed aws-chunked body (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`), decoded: each
/// chunk is released only after its chained signature checked out, without its signature.
/// Plain mode yields the object's bytes (sent upstream with a Content-Length); trailer mode
/// re-frames them as unsigned aws-chunks followed by the trailers minus their signature, which
/// (with the announced checksum) is checked before the final frame is released.
pub struct SignedChunks<B> {
    inner: B,
    state: SignedState,
    signer: crate::sigv4::ChunkSigner,
    prev: String,
    out: std::collections::VecDeque<Bytes>,
    shared: Shared,
    checksum: Option<(String, Checksum)>,
    finished: bool,
    /// Plain mode: the latest verified chunk, not yet released (see `feed`).
    held: Option<Bytes>,
}

impl<B> SignedChunks<B> {
    /// Wraps `inner`; `trailer` names the announced checksum trailer.
    pub fn new(
        inner: B,
        signer: crate::sigv4::ChunkSigner,
        trailer: Option<&str>,
    ) -> (Self, Shared) {
        let shared = Arc::new(Mutex::new(Observed::new()));
        let checksum = trailer
            .map(|t| t.trim().to_ascii_lowercase())
            .and_then(|n| Checksum::for_trailer(&n).map(|c| (n, c)));
        let prev = signer.seed.clone();
        let body = SignedChunks {
            inner,
            state: SignedState::Header(Vec::new()),
            signer,
            prev,
            out: Default::default(),
            shared: shared.clone(),
            checksum,
            finished: false,
            held: None,
        };
        (body, shared)
    }

    fn fail(&self, e: ChunkError) -> BoxError {
        let mut o = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            ChunkError::Framing(m) => o.framing_error = Some(m),
            ChunkError::BadDigest(m) => o.bad_digest = Some(m),
        }
        "signed aws-chunked body refused".into()
    }

    fn bad_signature(&self) -> BoxError {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bad_signature = true;
        "aws-chunk signature does not match".into()
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), BoxError> {
        while !data.is_empty() {
            match &mut self.state {
                SignedState::Header(line) => {
                    let nl = data.iter().position(|&b| b == b'\n');
                    let take = nl.map_or(data.len(), |i| i + 1);
                    line.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if line.len() > MAX_LINE {
                        return Err(self.fail("aws-chunk header too long".into()));
                    }
                    if nl.is_none() {
                        continue;
                    }
                    let text = String::from_utf8_lossy(line)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    let (size, sig) = text.split_once(";chunk-signature=").unwrap_or((&text, ""));
                    let size = u64::from_str_radix(size.trim(), 16);
                    let sig = sig.trim().to_ascii_lowercase();
                    let (Ok(size), 64) = (size, sig.len()) else {
                        return Err(self.fail(format!("bad aws-chunk header {text:?}").into()));
                    };
                    if size > MAX_SIGNED_CHUNK {
                        return Err(self.fail(
                            format!("aws-chunk of {size} bytes is over the 16 MiB limit").into(),
                        ));
                    }
                    if size == 0 {
                        if !self.signer.chunk_ok(&self.prev, b"", &sig) {
                            return Err(self.bad_signature());
                        }
                        self.prev = sig;
                        self.state = if self.signer.trailer {
                            SignedState::Trailers(Vec::new())
                        } else {
                            SignedState::FinalCrlf(0)
                        };
                    } else {
                        self.state = SignedState::Data {
                            size,
                            sig,
                            buf: Vec::with_capacity(size as usize),
                        };
                    }
                }
                SignedState::Data { size, sig, buf } => {
                    let k = ((*size as usize) - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..k]);
                    data = &data[k..];
                    if buf.len() as u64 == *size {
                        let (sig, buf) = (std::mem::take(sig), std::mem::take(buf));
                        if !self.signer.chunk_ok(&self.prev, &buf, &sig) {
                            return Err(self.bad_signature());
                        }
                        self.prev = sig;
                        {
                            let mut o = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                            o.hasher.update(&buf);
                            o.bytes += buf.len() as u64;
                        }
                        if let Some((_, c)) = &mut self.checksum {
                            c.update(&buf);
                        }
                        if self.signer.trailer {
                            self.out
                                .push_back(Bytes::from(format!("{:x}\r\n", buf.len())));
                            self.out.push_back(Bytes::from(buf));
                            self.out.push_back(Bytes::from_static(b"\r\n"));
                        } else {
                            // Hold the latest chunk back: the last one is released only once the
                            // final (empty) chunk's signature closed the chain.
                            if let Some(prev) = self.held.replace(Bytes::from(buf)) {
                                self.out.push_back(prev);
                            }
                        }
                        self.state = SignedState::DataEnd(0);
                    }
                }
                SignedState::DataEnd(seen) | SignedState::FinalCrlf(seen) => {
                    let want = if *seen == 0 { b'\r' } else { b'\n' };
                    if data[0] != want {
                        return Err(self.fail("aws-chunk not followed by CRLF".into()));
                    }
                    data = &data[1..];
                    *seen += 1;
                    if *seen == 2 {
                        self.state = match self.state {
                            SignedState::DataEnd(_) => SignedState::Header(Vec::new()),
                            _ => {
                                if let Some(last) = self.held.take() {
                                    self.out.push_back(last);
                                }
                                SignedState::Done
                            }
                        };
                    }
                }
                SignedState::Trailers(buf) => {
                    buf.extend_from_slice(data);
                    data = &[];
                    if buf.len() > MAX_TRAILERS {
                        return Err(self.fail("aws-chunked trailers too long".into()));
                    }
                    let text = String::from_utf8_lossy(buf).into_owned();
                    if text.ends_with("\r\n\r\n") {
                        self.end_trailers(&text)?;
                    }
                }
                SignedState::Done => {
                    return Err(self.fail("bytes after the end of an aws-chunked body".into()))
                }
            }
        }
        Ok(())
    }

    /// Trailer mode: checks `x-amz-trailer-signature` and the checksum, then queues the
    /// re-framed end (`0`, trailers without their signature, empty line).
    fn end_trailers(&mut self, text: &str) -> Result<(), BoxError> {
        let mut canonical = String::new();
        let mut sig = None;
        let mut lines = Vec::new();
        for l in text.split("\r\n").filter(|l| !l.is_empty()) {
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
            if k == "x-amz-trailer-signature" {
                sig = Some(v.to_ascii_lowercase());
            } else {
                canonical.push_str(&format!("{k}:{v}\n"));
                lines.push((k, v));
            }
        }
        let Some(sig) = sig else {
            return Err(self.fail("x-amz-trailer-signature missing".into()));
        };
        if !self.signer.trailer_ok(&self.prev, &canonical, &sig) {
            return Err(self.bad_signature());
        }
        if let Some((name, c)) = &self.checksum {
            match lines.iter().find(|(k, _)| k == name) {
                Some((_, v)) if *v == c.base64() => {}
                Some(_) => {
                    let m =
                        format!("The {name} you specified did not match the calculated checksum.");
                    return Err(self.fail(ChunkError::BadDigest(m)));
                }
                None => {
                    return Err(self.fail(format!("trailer {name} announced but not sent").into()))
                }
            }
        }
        let mut end = String::from("0\r\n");
        for (k, v) in &lines {
            end.push_str(&format!("{k}:{v}\r\n"));
        }
        end.push_str("\r\n");
        self.out.push_back(Bytes::from(end));
        self.state = SignedState::Done;
        Ok(())
    }
}

impl<B> Body for SignedChunks<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.out.pop_front() {
                if this.out.is_empty() && matches!(this.state, SignedState::Done) && !this.finished
                {
                    this.finished = true;
                    this.shared
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .complete = true;
                }
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if matches!(this.state, SignedState::Done) {
                if !this.finished {
                    this.finished = true;
                    this.shared
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .complete = true;
                }
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        this.feed(data)?;
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => {
                    return Poll::Ready(Some(Err(
                        this.fail("signed aws-chunked body cut short".into())
                    )))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    // Unknown: the request carries the decoded length as its Content-Length header (plain
    // mode), which hyper uses; trailer mode goes out with chunked transfer encoding.
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_slices(raw: &[u8], step: usize) -> (Vec<u8>, Vec<String>, bool) {
        let mut d = ChunkDecoder::default();
        let mut h = blake3::Hasher::new();
        let mut n = 0;
        for c in raw.chunks(step) {
            d.feed(c, &mut h, &mut n).unwrap();
        }
        let fin = d.finished();
        let _ = n;
        (h.finalize().as_bytes().to_vec(), d.trailers, fin)
    }

    #[test]
    fn chunked_decode_matches_plain_hash_at_any_slicing() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut raw = Vec::new();
        for c in data.chunks(65536) {
            raw.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            raw.extend_from_slice(c);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n");
        for step in [1, 2, 3, 1000, 65536, raw.len()] {
            let (h, tr, fin) = decode_in_slices(&raw, step);
            assert_eq!(h, blake3::hash(&data).as_bytes().to_vec(), "step {step}");
            assert_eq!(tr, vec!["x-amz-checksum-crc32:AAAAAA==".to_string()]);
            assert!(fin);
        }
    }

    #[test]
    fn base64_and_trailer_checksums() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        // AWS documentation example: crc32c of 66560 'a' bytes is sOO8/Q== (s3-facts.md).
        let mut d = ChunkDecoder::with_trailer(Some("x-amz-checksum-crc32c"));
        let (mut h, mut n) = (blake3::Hasher::new(), 0);
        let mut raw = b"10000\r\n".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 65536));
        raw.extend_from_slice(b"\r\n400\r\n");
        raw.extend(std::iter::repeat_n(b'a', 1024));
        raw.extend_from_slice(b"\r\n0\r\nx-amz-checksum-crc32c:sOO8/Q==\r\n\r\n");
        d.feed(&raw, &mut h, &mut n).unwrap();
        assert!(d.finished());
        let mut d = ChunkDecoder::with_trailer(Some("x-amz-checksum-crc32c"));
        let bad = String::from_utf8_lossy(&raw).replace("sOO8", "AAAA");
        assert!(matches!(
            d.feed(bad.as_bytes(), &mut h, &mut n),
            Err(ChunkError::BadDigest(_))
        ));
        for (name, want) in [
            ("x-amz-checksum-crc32", "NSRBwg=="),
            ("x-amz-checksum-sha1", "qZk+NkcGgWq6PiVxeFDCbJzQ2J0="),
            (
                "x-amz-checksum-sha256",
                "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
            ),
        ] {
            let mut c = Checksum::for_trailer(name).unwrap();
            c.update(b"abc");
            c.update(b"");
            assert_eq!(c.base64(), want, "{name}");
        }
    }

    #[test]
    fn chunked_framing_errors_are_reported() {
        let mut d = ChunkDecoder::default();
        let (mut h, mut n) = (blake3::Hasher::new(), 0);
        assert!(d.feed(b"zz\r\n", &mut h, &mut n).is_err());
        let mut d = ChunkDecoder::default();
        assert!(d.feed(b"2\r\nabXY", &mut h, &mut n).is_err());
        let mut d = ChunkDecoder::default();
        d.feed(b"2\r\nab\r\n", &mut h, &mut n).unwrap();
        assert!(!d.finished(), "no 0-chunk yet");
    }
}
