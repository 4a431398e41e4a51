//! A loopback HTTP server of fixed files, for `ADD <url>`: real sockets
//! and HTTP/1.1 on 127.0.0.1, nothing reached outside the machine. It
//! counts the requests it served so a test can tell a cache hit from a
//! download.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running server; it stops when the test process ends.
pub struct FileServer {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
}

impl FileServer {
    /// Serves `files` (URL path such as `/a.txt` → body); other paths get
    /// 404.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub fn start(files: HashMap<String, Vec<u8>>) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("a local address");
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // The headers, up to the blank line.
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut out = &stream;
                let _ = match files.get(&path) {
                    Some(body) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        write!(
                            out,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .and_then(|()| out.write_all(body))
                    }
                    None => out.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        FileServer { addr, served }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many files it has sent.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}
