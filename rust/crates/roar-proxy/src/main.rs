//! `roar-proxy`: the S3 lineage proxy of roar-nb.
//!
//! A thin pass-through on 127.0.0.1: it verifies each client's SigV4 signature against
//! the credentials it holds, re-signs the request for the upstream, streams bodies both
//! ways (blake3 computed on the fly) and writes one lineage event per object read,
//! written, copied or deleted (see `events.rs`). Design notes: README.md beside this file.
//!
//! Usage: `roar-proxy [--port P] [--upstream URL] [--region R] [--events-dir DIR]
//! [--active-storage-port P] [--active-storage-memory-mib M] [--active-storage-threads T]`.
//! Prints `roar-proxy listening on 127.0.0.1:PORT` on stdout once it accepts connections
//! (preceded by `roar-proxy active storage on 127.0.0.1:PORT` when that listener is on).
//! Credentials come from the environment or the shared credentials file; they are never
//! printed, logged or written anywhere.

mod active;
mod body;
mod codec;
mod events;
mod parts;
mod proxy;
mod reduce;
mod sigv4;

use std::io::Write;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::sigv4::Creds;

/// Command line and environment, resolved.
struct Args {
    port: u16,
    upstream: String,
    region: String,
    events_dir: Option<String>,
    /// The active-storage listener's port (None: off; 0: a free port).
    active_port: Option<u16>,
    active: active::Config,
}

fn usage() -> ! {
    crate::events::stderr_line(
        "usage: roar-proxy [--port P] [--upstream URL] [--region R] [--events-dir DIR] [--active-storage-port P] [--active-storage-memory-mib M] [--active-storage-threads T]",
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut port = 0u16;
    let mut upstream = env("ROAR_UPSTREAM_S3_ENDPOINT");
    let mut region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
    let mut events_dir = None;
    let mut active_port = None;
    let num = |k: &str| {
        env(k).map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| fail(&format!("{k} must be a number")))
        })
    };
    let mut memory_mib = num("ROAR_ACTIVE_STORAGE_MEMORY_MIB").unwrap_or(1024);
    let mut threads = num("ROAR_ACTIVE_STORAGE_THREADS")
        .map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--port" => port = val().parse().unwrap_or_else(|_| usage()),
            "--upstream" => upstream = Some(val()),
            "--region" => region = Some(val()),
            "--events-dir" => events_dir = Some(val()),
            "--active-storage-port" => {
                active_port = Some(val().parse().unwrap_or_else(|_| usage()))
            }
            "--active-storage-memory-mib" => memory_mib = val().parse().unwrap_or_else(|_| usage()),
            "--active-storage-threads" => threads = val().parse().unwrap_or_else(|_| usage()),
            "-h" | "--help" => {
                let _ = writeln!(
                    std::io::stdout(),
                    "roar-proxy: S3 lineage proxy (see rust/crates/roar-proxy/README.md)"
                );
                std::process::exit(0)
            }
            _ => usage(),
        }
    }
    let region = region.unwrap_or_else(|| "us-east-1".into());
    let upstream = upstream.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    Args {
        port,
        upstream: upstream.trim_end_matches('/').to_owned(),
        region,
        events_dir,
        active_port,
        active: active::Config {
            memory: memory_mib << 20,
            threads: threads.max(1),
            queue: 4 * threads.max(1),
        },
    }
}

/// Reads `[profile]` of an INI-style AWS credentials file.
fn creds_from_file(path: &str, profile: &str) -> Option<Creds> {
    let text = std::fs::read_to_string(path).ok()?;
    let (mut ak, mut sk, mut tok, mut inside) = (None, None, None, false);
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') && l.ends_with(']') {
            inside = l[1..l.len() - 1].trim() == profile;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            let v = v.trim().to_owned();
            match k.trim() {
                "aws_access_key_id" => ak = Some(v),
                "aws_secret_access_key" => sk = Some(v),
                "aws_session_token" => tok = Some(v),
                _ => {}
            }
        }
    }
    Some(Creds {
        access_key: ak?,
        secret_key: sk?,
        session_token: tok,
    })
}

/// Credentials from the environment, else the shared credentials file (AWS_PROFILE or default).
fn load_creds() -> Option<Creds> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(ak), Some(sk)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Some(Creds {
            access_key: ak,
            secret_key: sk,
            session_token: env("AWS_SESSION_TOKEN"),
        });
    }
    let path = env("AWS_SHARED_CREDENTIALS_FILE")
        .or_else(|| env("HOME").map(|h| format!("{h}/.aws/credentials")))?;
    creds_from_file(
        &path,
        &env("AWS_PROFILE").unwrap_or_else(|| "default".into()),
    )
}

/// TLS for https upstreams: the Mozilla roots (webpki-roots), plus the certificates of
/// `$AWS_CA_BUNDLE` (the AWS SDKs' variable for a private CA), if set.
fn tls_config() -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(bundle) = std::env::var("AWS_CA_BUNDLE")
        .ok()
        .filter(|v| !v.is_empty())
    {
        let certs = CertificateDer::pem_file_iter(&bundle)
            .map_err(|e| format!("AWS_CA_BUNDLE {bundle}: {e}"))?;
        let mut n = 0;
        for c in certs {
            let c = c.map_err(|e| format!("AWS_CA_BUNDLE {bundle}: {e}"))?;
            roots
                .add(c)
                .map_err(|e| format!("AWS_CA_BUNDLE {bundle}: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("AWS_CA_BUNDLE {bundle}: no certificate in it"));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn fail(msg: &str) -> ! {
    crate::events::stderr_line(&format!("roar-proxy: {msg}"));
    std::process::exit(2)
}

/// Keeps freed body buffers in the heap instead of handing them back to the kernel.
///
/// Frames are allocated and freed at the rate bodies stream. With glibc's defaults the
/// tokio workers' arenas were trimmed (`madvise(MADV_DONTNEED)`) after each body and the
/// next one page-faulted its buffers in again: about 8% of the proxy's CPU in an 8 MiB PUT
/// profile (`perf record`), on top of the hashing. A fixed 8 MiB trim threshold (which also
/// fixes the mmap threshold, so the up-to-400 KiB read buffers come from the heap) bounds
/// what is kept per arena; the proxy's peak RSS stays far under its 100 MB budget.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}

fn main() {
    tune_malloc();
    let args = parse_args();
    let creds = load_creds().unwrap_or_else(|| {
        fail("no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a shared credentials file)")
    });
    let upstream: http::Uri = args
        .upstream
        .parse()
        .unwrap_or_else(|_| fail(&format!("bad upstream URL {}", args.upstream)));
    if !matches!(upstream.scheme_str(), Some("http" | "https")) || upstream.authority().is_none() {
        fail(&format!(
            "upstream must be an http:// or https:// URL, got {}",
            args.upstream
        ));
    }
    let tls = tls_config().unwrap_or_else(|e| fail(&e));
    let log = events::EventLog::open(args.events_dir.as_deref()).unwrap_or_else(|e| {
        fail(&format!(
            "cannot open the event file in {:?}: {e}",
            args.events_dir
        ))
    });
    // Two workers: the machine budget is small and the work is I/O plus hashing.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot start the runtime: {e}")));
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
            .await
            .unwrap_or_else(|e| fail(&format!("cannot listen on 127.0.0.1:{}: {e}", args.port)));
        let addr = listener.local_addr().unwrap_or_else(|e| fail(&e.to_string()));
        let state = Arc::new(proxy::State::new(creds, upstream, args.region, log, tls));
        if let Some(p) = args.active_port {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", p))
                .await
                .unwrap_or_else(|e| fail(&format!("cannot listen on 127.0.0.1:{p} (active storage): {e}")));
            let a_addr = l.local_addr().unwrap_or_else(|e| fail(&e.to_string()));
            let a = Arc::new(active::Active::new(state.clone(), &args.active, addr.port()));
            tokio::spawn(active::serve(l, a));
            let _ = writeln!(std::io::stdout(), "roar-proxy active storage on {a_addr}");
        }
        let _ = writeln!(std::io::stdout(), "roar-proxy listening on {addr}");
        let _ = std::io::stdout().flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .unwrap_or_else(|e| fail(&e.to_string()));
        loop {
            tokio::select! {
                acc = listener.accept() => {
                    let Ok((stream, _)) = acc else { continue };
                    let _ = stream.set_nodelay(true);
                    let st = state.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| proxy::handle(req, st.clone()));
                        let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc).await;
                    });
                }
                // Events are written before each response, so stopping here loses nothing
                // that a client saw succeed.
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
    });
    if events::LOST.load(std::sync::atomic::Ordering::Relaxed) {
        std::process::exit(3);
    }
}
