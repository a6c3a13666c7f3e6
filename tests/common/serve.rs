//! A small HTTP server on 127.0.0.1 for the download tests (no test reaches the network).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Serves `body` at `path` (404 elsewhere), honouring `Range: bytes=N-`; the first `breaks`
/// responses stop after half of what they promise. Returns the URL of `path` and, one entry per
/// request, its Range header (empty for none).
pub fn serve(
    path: &'static str,
    body: Vec<u8>,
    breaks: usize,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let served = AtomicUsize::new(0);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (target, range) = read_request(&mut reader);
            log.lock().unwrap().push(range.clone());
            if target != path {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
                );
                continue;
            }
            let from: usize = range.trim_end_matches('-').parse().unwrap_or(0);
            let part = &body[from..];
            let status = match from > 0 {
                true => "206 Partial Content",
                false => "200 OK",
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                part.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let cut = match served.fetch_add(1, Ordering::SeqCst) < breaks {
                true => part.len() / 2,
                false => part.len(),
            };
            let _ = stream.write_all(&part[..cut]);
            let _ = stream.flush();
        }
    });
    (url, seen)
}

/// The request's path and its Range header's value after `bytes=` (empty for none).
fn read_request(reader: &mut impl BufRead) -> (String, String) {
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let mut range = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            range = v.trim().to_string();
        }
    }
    let target = first.split_whitespace().nth(1).unwrap_or("").to_string();
    (target, range)
}
