//! A loopback HTTP proxy in front of a test registry that records every
//! request and misbehaves on demand: 503 answers, or a connection reset in
//! the middle of a blob upload. The real registry cannot be made to fail on
//! cue; this can, and it lets tests count uploads on the wire.
//!
//! It can also play a registry with token authentication: with
//! [`Proxy::require_bearer`], `/v2/` requests need `Bearer` tokens, which it
//! issues at `/token` (Basic credentials or an OAuth2 refresh token), so the
//! Bearer flow is tested without a real token server.
//!
//! Each client connection carries exactly one request: the proxy forwards it
//! with `Connection: close`, so it never has to find where one request's body
//! ends and the next request begins.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Most connections one proxy serves: a runaway retry loop ends the test.
const MAX_CONNECTIONS: usize = 2_000;
/// Longest request head the proxy reads.
const MAX_HEAD: usize = 64 << 10;
/// Longest a single proxied exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(120);

/// What the proxy did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Passed to the registry.
    Forwarded,
    /// Answered 503 without asking the registry.
    Failed503,
    /// Part of the body was forwarded, then the connection was reset.
    Reset,
    /// Answered 401 with a Bearer challenge (no valid token).
    Challenged,
    /// A token request, answered by the proxy itself.
    Token,
}

/// A request to the proxy's token endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// GET (basic credentials) or POST (refresh token).
    pub method: String,
    /// The `service` parameter, when sent.
    pub service: Option<String>,
    /// Every scope asked for, in order.
    pub scopes: Vec<String>,
    /// Whether the token was issued.
    pub granted: bool,
}

/// The token the proxy issues and requires.
pub const TOKEN: &str = "kiln-proxy-token";

#[derive(Clone)]
struct Gate {
    realm: String,
    basic: String,
    refresh_token: String,
}

/// One request as the proxy saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The HTTP method.
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// What the proxy did with it.
    pub outcome: Outcome,
}

impl Request {
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }

    /// A blob upload request (POST opening a session without `mount=`, or
    /// the PATCH/PUT sending data).
    pub fn is_blob_upload(&self) -> bool {
        self.path().contains("/blobs/uploads/")
            && match self.method.as_str() {
                "POST" => !self.target.contains("mount="),
                "PUT" | "PATCH" => true,
                _ => false,
            }
    }

    /// A cross-repository mount (POST with `mount=`).
    pub fn is_mount(&self) -> bool {
        self.method == "POST" && self.target.contains("mount=")
    }

    /// A manifest upload.
    pub fn is_manifest_put(&self) -> bool {
        self.method == "PUT" && self.path().contains("/manifests/")
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Request>>,
    /// 503 answers still to give.
    fail_remaining: AtomicU64,
    /// Only requests whose path contains this are failed (empty: all).
    fail_filter: Mutex<String>,
    /// Reset the next blob upload body once.
    reset_next_upload: AtomicBool,
    connections: AtomicUsize,
    gate: Mutex<Option<Gate>>,
    token_requests: Mutex<Vec<TokenRequest>>,
}

/// The proxy; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 (random port) forwarding to `upstream`
    /// (`127.0.0.1:5000`), which must be a loopback address.
    pub async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream.parse().expect("upstream is ip:port");
        assert!(
            upstream.ip().is_loopback(),
            "the proxy only forwards to loopback"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    break;
                };
                if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    break;
                }
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(client, upstream, state))
                            .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// `127.0.0.1:port`: the registry name clients use to go through it.
    pub fn registry(&self) -> String {
        self.addr.to_string()
    }

    /// Answers 503 to the next `n` requests whose path contains `filter`
    /// (every request when `filter` is empty).
    pub fn fail_next(&self, n: u64, filter: &str) {
        *self.state.fail_filter.lock().expect("proxy state lock") = filter.to_owned();
        self.state.fail_remaining.store(n, Ordering::SeqCst);
    }

    /// Answers 503 to every request from now on.
    pub fn fail_always(&self, filter: &str) {
        self.fail_next(u64::MAX, filter);
    }

    /// Resets the connection half-way through the next blob upload body.
    pub fn reset_next_upload(&self) {
        self.state.reset_next_upload.store(true, Ordering::SeqCst);
    }

    /// From now on, `/v2/` requests need `Authorization: Bearer` [`TOKEN`],
    /// issued at `/token` to `user:password` (Basic) or, by POST, for
    /// `refresh_token`.
    pub fn require_bearer(&self, user: &str, password: &str, refresh_token: &str) {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        *self.state.gate.lock().expect("proxy state lock") = Some(Gate {
            realm: format!("http://{}/token", self.addr),
            basic,
            refresh_token: refresh_token.to_owned(),
        });
    }

    /// Every token request so far.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.state
            .token_requests
            .lock()
            .expect("proxy state lock")
            .clone()
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.state
            .requests
            .lock()
            .expect("proxy state lock")
            .clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear(&self) {
        self.state
            .requests
            .lock()
            .expect("proxy state lock")
            .clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// A request's head as the proxy needs it, and the body bytes read with it.
struct Head {
    request_line: String,
    method: String,
    target: String,
    /// `target` without its query.
    path: String,
    content_length: u64,
    authorization: String,
    /// Headers to forward (hop-by-hop ones left out).
    headers: Vec<String>,
    body_start: Vec<u8>,
}

/// Reads a request's head; `None` when the client hung up or spoke
/// something other than HTTP.
async fn read_head(client: &mut TcpStream) -> std::io::Result<Option<Head>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
        // Not HTTP (a TLS ClientHello from an HTTPS probe): hang up.
        if !buffer[0].is_ascii_uppercase() {
            return Ok(None);
        }
        if let Some(end) = find_head_end(&buffer) {
            break end;
        }
        if buffer.len() > MAX_HEAD {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let body_start = buffer[head_end..].to_vec();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut content_length: u64 = 0;
    let mut authorization = String::new();
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if name == "content-length" {
            content_length = line
                .split(':')
                .nth(1)
                .unwrap_or_default()
                .trim()
                .parse()
                .unwrap_or(0);
        }
        if name == "authorization" {
            authorization = line
                .split_once(':')
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default();
        }
        if name != "connection" && name != "keep-alive" {
            headers.push(line.to_owned());
        }
    }
    let path = target.split('?').next().unwrap_or_default().to_owned();
    Ok(Some(Head {
        request_line,
        method,
        target,
        path,
        content_length,
        authorization,
        headers,
        body_start,
    }))
}

/// Records what the proxy did with a request.
fn record(state: &State, head: &Head, outcome: Outcome) {
    state
        .requests
        .lock()
        .expect("proxy state lock")
        .push(Request {
            method: head.method.clone(),
            target: head.target.clone(),
            outcome,
        });
}

/// The token endpoint of the auth gate: checks the basic credentials (GET)
/// or the refresh token (POST), records what was asked, answers a token or
/// 401.
async fn answer_token(
    client: &mut TcpStream,
    head: Head,
    gate: &Gate,
    state: &State,
) -> std::io::Result<()> {
    record(state, &head, Outcome::Token);
    let Head {
        method,
        target,
        authorization,
        body_start,
        content_length,
        ..
    } = head;
    let body = read_body(client, body_start, content_length).await?;
    let query = target
        .split_once('?')
        .map(|(_, q)| q.to_owned())
        .unwrap_or_default();
    let form = if method == "POST" {
        String::from_utf8_lossy(&body).into_owned()
    } else {
        query
    };
    let params = parse_form(&form);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let (scopes, granted) = if method == "POST" {
        let scopes = get("scope")
            .map(|s| s.split(' ').map(str::to_owned).collect())
            .unwrap_or_default();
        let ok = get("grant_type").as_deref() == Some("refresh_token")
            && get("refresh_token").as_deref() == Some(gate.refresh_token.as_str());
        (scopes, ok)
    } else {
        let scopes = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect();
        (scopes, authorization == format!("Basic {}", gate.basic))
    };
    state
        .token_requests
        .lock()
        .expect("proxy state lock")
        .push(TokenRequest {
            method,
            service: get("service"),
            scopes,
            granted,
        });
    let answer = if granted {
        let body = format!(r#"{{"token":"{TOKEN}","access_token":"{TOKEN}","expires_in":300}}"#);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    client.write_all(answer.as_bytes()).await?;
    client.shutdown().await
}

/// A registry request without the gate's token: 401 with the challenge
/// that sends the client to the token endpoint.
async fn challenge(client: &mut TcpStream, head: Head, gate: &Gate) -> std::io::Result<()> {
    read_body(client, head.body_start, head.content_length).await?;
    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
    let answer = format!(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{}\",service=\"kiln-proxy\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        gate.realm,
        body.len()
    );
    client.write_all(answer.as_bytes()).await?;
    client.shutdown().await
}

/// Serves one client connection: one request.
async fn exchange(
    mut client: TcpStream,
    upstream: SocketAddr,
    state: Arc<State>,
) -> std::io::Result<()> {
    let Some(head) = read_head(&mut client).await? else {
        return Ok(());
    };
    let gate = state.gate.lock().expect("proxy state lock").clone();
    if let Some(gate) = gate {
        if head.path == "/token" {
            return answer_token(&mut client, head, &gate, &state).await;
        }
        if head.path.starts_with("/v2") && head.authorization != format!("Bearer {TOKEN}") {
            record(&state, &head, Outcome::Challenged);
            return challenge(&mut client, head, &gate).await;
        }
    }
    relay(client, upstream, &state, head).await
}

/// Forwards a request upstream, or fails it as the test asked (a 503, or a
/// connection reset halfway through an upload's body).
async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    state: &State,
    head: Head,
) -> std::io::Result<()> {
    let mut chunk = [0u8; 8192];
    let Head {
        ref request_line,
        ref method,
        ref path,
        content_length,
        ref headers,
        ref body_start,
        ..
    } = head;
    let fail = {
        let filter = state.fail_filter.lock().expect("proxy state lock").clone();
        path.contains(&filter)
            && state
                .fail_remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    };
    let is_upload_body = matches!(method.as_str(), "PUT" | "PATCH")
        && path.contains("/blobs/uploads/")
        && content_length > 1;
    let reset = !fail && is_upload_body && state.reset_next_upload.swap(false, Ordering::SeqCst);
    let outcome = if fail {
        Outcome::Failed503
    } else if reset {
        Outcome::Reset
    } else {
        Outcome::Forwarded
    };
    record(state, &head, outcome);

    if fail {
        // Read the body first so the client sees the answer, not a reset.
        let mut left = content_length.saturating_sub(body_start.len() as u64);
        while left > 0 {
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n as u64);
        }
        client
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            .await?;
        client.shutdown().await?;
        return Ok(());
    }

    let mut server = TcpStream::connect(upstream).await?;
    let mut forwarded_head = format!("{request_line}\r\n");
    for header in headers {
        forwarded_head.push_str(header);
        forwarded_head.push_str("\r\n");
    }
    forwarded_head.push_str("Connection: close\r\n\r\n");
    server.write_all(forwarded_head.as_bytes()).await?;

    if reset {
        // Forward about half the body, then reset both connections.
        let half = content_length / 2;
        let mut sent = body_start.len().min(half as usize);
        server.write_all(&body_start[..sent]).await?;
        while (sent as u64) < half {
            let want = chunk.len().min((half - sent as u64) as usize);
            let n = client.read(&mut chunk[..want]).await?;
            if n == 0 {
                break;
            }
            server.write_all(&chunk[..n]).await?;
            sent += n;
        }
        client.set_zero_linger()?;
        server.set_zero_linger()?;
        drop(client);
        drop(server);
        return Ok(());
    }

    server.write_all(body_start).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// Reads the rest of a request body (bounded by its Content-Length).
async fn read_body(
    client: &mut TcpStream,
    mut body: Vec<u8>,
    content_length: u64,
) -> std::io::Result<Vec<u8>> {
    let mut chunk = [0u8; 8192];
    while (body.len() as u64) < content_length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(body)
}

/// Parses `application/x-www-form-urlencoded` text (also a query string).
fn parse_form(text: &str) -> Vec<(String, String)> {
    fn decode(part: &str) -> String {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}
