//! Local listeners standing in for the services alerts go to: an HTTP
//! sink (webhooks and pings) and an SMTP sink, each recording what it got;
//! a plain HTTP GET for `/metrics` and `/healthz`; a free port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// One HTTP request as a listener received it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A local HTTP listener that records every request and answers `status`.
pub(crate) struct HttpSink {
    pub(crate) url: String,
    pub(crate) rx: mpsc::Receiver<Request>,
}

impl HttpSink {
    pub(crate) fn start(status: u16) -> HttpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(req) = read_request(&stream) else {
                    continue;
                };
                let mut s = &stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                if tx.send(req).is_err() {
                    return;
                }
            }
        });
        HttpSink { url, rx }
    }

    pub(crate) fn next(&self, within: Duration) -> Option<Request> {
        self.rx.recv_timeout(within).ok()
    }

    pub(crate) fn expect(&self, within: Duration, what: &str) -> Request {
        self.next(within)
            .unwrap_or_else(|| panic!("no {what} request within {within:?}"))
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// One mail as a minimal SMTP sink received it.
#[derive(Debug)]
pub(crate) struct Mail {
    pub(crate) from: String,
    pub(crate) to: Vec<String>,
    /// Headers and body, with folded headers and quoted-printable soft
    /// line breaks undone so that assertions can look for phrases.
    pub(crate) data: String,
}

/// A local SMTP server that accepts every mail (no TLS, no auth).
pub(crate) struct SmtpSink {
    pub(crate) port: u16,
    pub(crate) rx: mpsc::Receiver<Mail>,
}

impl SmtpSink {
    pub(crate) fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(m) = smtp_session(stream) {
                    if tx.send(m).is_err() {
                        return;
                    }
                }
            }
        });
        SmtpSink { port, rx }
    }
}

fn smtp_session(stream: TcpStream) -> Option<Mail> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut w = stream.try_clone().ok()?;
    let mut r = BufReader::new(stream);
    let mut say = |s: &str| write!(w, "{s}\r\n").ok();
    say("220 sink ESMTP")?;
    let (mut from, mut to, mut data) = (String::new(), Vec::new(), String::new());
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            say("250 sink")?;
        } else if upper.starts_with("MAIL FROM:") {
            from = cmd[10..].trim().to_owned();
            say("250 OK")?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(cmd[8..].trim().to_owned());
            say("250 OK")?;
        } else if upper == "DATA" {
            say("354 go on")?;
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).ok()? == 0 {
                    return None;
                }
                if l.trim_end() == "." {
                    break;
                }
                data.push_str(&l);
            }
            say("250 queued")?;
        } else if upper == "QUIT" {
            say("221 bye");
            let data = data
                .replace("=\r\n", "")
                .replace("\r\n ", " ")
                .replace("=3D", "=");
            return Some(Mail { from, to, data });
        } else {
            say("250 OK")?;
        }
    }
}

/// GET `path` from `addr`: (status code, body).
pub(crate) fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
