//! The kubelet's log endpoint, for the API server's log proxy
//! (`kubectl logs [-f]`): `GET /containerLogs/{namespace}/{pod}/{container}`
//! over HTTPS, answered from the container's log file ([`crate::log_path`]).
//!
//! Why a hand-written HTTP/1.1 handler and not hyper's server: the endpoint
//! is one GET whose answer is a file, streamed with chunked transfer
//! encoding while the container runs. The workspace builds hyper only as
//! reqwest's client; its server side (and hyper-util's glue) would add
//! features and code to compile for what is a request line, a status line
//! and chunks here. TLS is the rustls (ring provider) that reqwest already
//! builds, through tokio-rustls.
//!
//! Query parameters: `follow` (keep streaming until the container has
//! ended and the file is fully sent, or the client leaves), `tailLines`
//! and `limitBytes`. The others (`timestamps`, `sinceSeconds`,
//! `sinceTime`, `previous`) are ignored: the log files keep no timestamps
//! and containers are never restarted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::log_path;

/// How often a followed log is read again for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// The most a request head may take, in bytes and in time.
const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The log files whose container still runs: a follower keeps reading
/// them until they leave this set.
#[derive(Default)]
pub(crate) struct LiveLogs {
    paths: Mutex<HashSet<PathBuf>>,
}

/// Keeps a log live until dropped.
pub(crate) struct LiveGuard<'a> {
    logs: &'a LiveLogs,
    path: PathBuf,
}

impl LiveLogs {
    /// Marks `path` live until the guard is dropped (after its writer has
    /// written its last line).
    pub(crate) fn hold(&self, path: &Path) -> LiveGuard<'_> {
        if let Ok(mut paths) = self.paths.lock() {
            paths.insert(path.to_path_buf());
        }
        LiveGuard {
            logs: self,
            path: path.to_path_buf(),
        }
    }

    fn is_live(&self, path: &Path) -> bool {
        self.paths.lock().is_ok_and(|p| p.contains(path))
    }
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut paths) = self.logs.paths.lock() {
            paths.remove(&self.path);
        }
    }
}

/// Why the log endpoint's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The certificate or key file could not be read or is not PEM.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file has no certificate in it.
    #[error("{} holds no certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The crypto provider offers none of rustls's safe protocol versions.
    #[error("{0}")]
    Protocols(rustls::Error),
    /// rustls refused the certificate chain with the key.
    #[error("the certificate and key: {0}")]
    Certificate(rustls::Error),
}

/// A TLS acceptor with the certificate chain and key in PEM files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsSetupError> {
    let read = |path: &Path| {
        let path = path.to_path_buf();
        move |source: rustls_pki_types::pem::Error| TlsSetupError::Read { path, source }
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(read(cert))?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(read(key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Protocols)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsSetupError::Certificate)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves log requests on `listener` until the process ends.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state_dir: PathBuf,
    live: Arc<LiveLogs>,
) {
    let state_dir = Arc::new(state_dir);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("kiln-node-agent: log endpoint: accepting: {e}");
                tokio::time::sleep(FOLLOW_POLL).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let state_dir = Arc::clone(&state_dir);
        let live = Arc::clone(&live);
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(tcp)).await else {
                return;
            };
            let _ = handle(tls, &state_dir, &live).await;
        });
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
struct LogRequest {
    namespace: String,
    pod: String,
    container: String,
    follow: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
}

/// Parses a request head; the error is the HTTP status and a message.
fn parse_request(head: &str) -> Result<LogRequest, (u16, String)> {
    let line = head.lines().next().unwrap_or_default();
    let mut words = line.split(' ');
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err((400, "malformed request line".into()));
    };
    if method != "GET" {
        return Err((405, format!("method {method} not allowed")));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.split('/').collect();
    let ["", "containerLogs", namespace, pod, container] = parts.as_slice() else {
        return Err((
            404,
            format!("{path}: not found (only /containerLogs/{{namespace}}/{{pod}}/{{container}})"),
        ));
    };
    let names = [namespace, pod, container];
    if names
        .iter()
        .any(|n| n.is_empty() || n.starts_with('.') || n.contains('\\'))
    {
        return Err((400, format!("{path}: not a namespace, pod and container")));
    }
    let mut request = LogRequest {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        container: container.to_string(),
        follow: false,
        tail_lines: None,
        limit_bytes: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| (400, format!("{key}={value}: not a number")))
        };
        match key {
            "follow" => request.follow = value == "true" || value == "1",
            "tailLines" => request.tail_lines = Some(number()?),
            "limitBytes" => request.limit_bytes = Some(number()?),
            _ => {}
        }
    }
    Ok(request)
}

/// The last `n` lines of `bytes`.
fn tail(bytes: &[u8], n: usize) -> &[u8] {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &bytes[i + 1..];
            }
        }
    }
    if n == 0 { &[] } else { bytes }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    state_dir: &Path,
    live: &LiveLogs,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut head = Vec::new();
    let read_head = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = rd.read(&mut buf).await?;
            if n == 0 || head.len() > MAX_HEAD {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(HEAD_TIMEOUT, read_head).await {
        Ok(Ok(())) => {}
        _ => return Ok(()),
    }
    let request = match parse_request(&String::from_utf8_lossy(&head)) {
        Ok(r) => r,
        Err((status, message)) => return respond_error(&mut wr, status, &message).await,
    };
    let path = log_path(
        state_dir,
        &request.namespace,
        &request.pod,
        &request.container,
    );
    // Whether the container runs is read before the file: once it is not
    // live, the file is complete.
    let mut running = live.is_live(&path);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => {
            let pod_dir = path.parent().is_some_and(Path::exists);
            let message = if pod_dir {
                format!(
                    "container {:?} of pod {}/{} has no log on this node (no such container, or not started)",
                    request.container, request.namespace, request.pod
                )
            } else {
                format!(
                    "pod {}/{} has no containers on this node",
                    request.namespace, request.pod
                )
            };
            return respond_error(&mut wr, 404, &message).await;
        }
    };
    wr.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .await?;
    let mut left = request.limit_bytes.unwrap_or(usize::MAX);
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).await?;
    let first = match request.tail_lines {
        Some(n) => tail(&buf, n),
        None => &buf,
    };
    left -= send_chunk(&mut wr, first, left).await?;
    let mut scratch = [0u8; 64];
    while request.follow && running && left > 0 {
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_POLL) => {}
            // The client left (or sent what it should not).
            _ = rd.read(&mut scratch) => return Ok(()),
        }
        running = live.is_live(&path);
        buf.clear();
        file.read_to_end(&mut buf).await?;
        left -= send_chunk(&mut wr, &buf, left).await?;
    }
    wr.write_all(b"0\r\n\r\n").await?;
    wr.flush().await?;
    wr.shutdown().await
}

/// Sends up to `left` bytes of `data` as one chunk; returns how many.
async fn send_chunk<W: AsyncWrite + Unpin>(
    wr: &mut W,
    data: &[u8],
    left: usize,
) -> std::io::Result<usize> {
    let data = &data[..data.len().min(left)];
    if data.is_empty() {
        return Ok(0);
    }
    wr.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    wr.write_all(data).await?;
    wr.write_all(b"\r\n").await?;
    wr.flush().await?;
    Ok(data.len())
}

async fn respond_error<W: AsyncWrite + Unpin>(
    wr: &mut W,
    status: u16,
    message: &str,
) -> std::io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let body = format!("{message}\n");
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    wr.write_all(answer.as_bytes()).await?;
    wr.flush().await?;
    wr.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed() {
        let r = parse_request(
            "GET /containerLogs/ns/p/main?follow=true&tailLines=2&timestamps=false HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            r,
            LogRequest {
                namespace: "ns".into(),
                pod: "p".into(),
                container: "main".into(),
                follow: true,
                tail_lines: Some(2),
                limit_bytes: None,
            }
        );
        let plain = parse_request("GET /containerLogs/ns/p/main HTTP/1.1\r\n\r\n").unwrap();
        assert!(!plain.follow);
        assert_eq!(
            parse_request("GET /pods HTTP/1.1\r\n\r\n").unwrap_err().0,
            404
        );
        assert_eq!(
            parse_request("GET /containerLogs/ns/../main HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(
            parse_request("POST /containerLogs/ns/p/main HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .0,
            405
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc\n", 5), b"a\nb\nc\n");
        assert_eq!(tail(b"a\nb\nc\n", 0), b"");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
    }

    #[tokio::test]
    async fn a_followed_log_ends_when_its_container_does() {
        let dir = std::env::temp_dir().join(format!("kiln-logs-test-{}", std::process::id()));
        let path = log_path(&dir, "ns", "p", "main");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "one\n").unwrap();
        let live = Arc::new(LiveLogs::default());
        let guard_live = Arc::clone(&live);
        let (client, server) = tokio::io::duplex(4096);
        let server_dir = dir.clone();
        let server_task =
            tokio::spawn(async move { handle(server, &server_dir, &guard_live).await });
        let guard = live.hold(&path);
        let (mut crd, mut cwr) = tokio::io::split(client);
        cwr.write_all(b"GET /containerLogs/ns/p/main?follow=true HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all_sync(b"two\n");
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(guard);
        let mut answer = String::new();
        crd.read_to_string(&mut answer).await.unwrap();
        server_task.await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.ends_with("4\r\none\n\r\n4\r\ntwo\n\r\n0\r\n\r\n"),
            "{answer}"
        );
        let (client, server) = tokio::io::duplex(4096);
        let server_dir = dir.clone();
        let live2 = Arc::clone(&live);
        tokio::spawn(async move { handle(server, &server_dir, &live2).await });
        let (mut crd, mut cwr) = tokio::io::split(client);
        cwr.write_all(b"GET /containerLogs/ns/nope/main HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        crd.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
        assert!(answer.contains("pod ns/nope"), "{answer}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    trait WriteAllSync {
        fn write_all_sync(self, data: &[u8]);
    }
    impl WriteAllSync for std::fs::File {
        fn write_all_sync(mut self, data: &[u8]) {
            std::io::Write::write_all(&mut self, data).unwrap();
        }
    }
}
