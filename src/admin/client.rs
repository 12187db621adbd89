//! The CLI's side of the admin API: one request to the running appliance's admin listener
//! (`[admin] listen`), with the bearer token from `<state_dir>/admin.token`, over plain HTTP/1.1
//! (the listener is loopback unless configured otherwise). `route explain`, `maintenance` and
//! `reload` use it.

use std::io::{Read, Write};
use std::time::Duration;

use crate::config::Config;

/// How long the appliance may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
const MAX_ANSWER: u64 = 1 << 20;

/// Why the running appliance could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no admin listener is configured ([admin] listen)")]
    NoListener,
    #[error("no admin token in {0} (has the appliance run yet?)")]
    NoToken(String),
    #[error("the appliance's admin API at {0} does not answer: {1} (is sipedge running?)")]
    Unreachable(String, std::io::Error),
    #[error("the admin API's answer is not HTTP/1.1 with JSON")]
    BadAnswer,
}

/// Percent-encodes a query value.
pub fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `method path` on the running appliance; its status and JSON body.
pub fn request(
    cfg: &Config,
    method: &str,
    path: &str,
) -> Result<(u16, serde_json::Value), ClientError> {
    let addr = cfg.admin.listen.ok_or(ClientError::NoListener)?;
    let token_file = cfg.appliance.state_dir.join("admin.token");
    let token = std::fs::read_to_string(&token_file)
        .map_err(|_| ClientError::NoToken(token_file.display().to_string()))?;
    let unreachable = |e| ClientError::Unreachable(addr.to_string(), e);
    let mut sock = std::net::TcpStream::connect_timeout(&addr, TIMEOUT).map_err(unreachable)?;
    sock.set_read_timeout(Some(TIMEOUT)).map_err(unreachable)?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        token.trim()
    );
    sock.write_all(req.as_bytes()).map_err(unreachable)?;
    let mut resp = Vec::new();
    sock.take(MAX_ANSWER)
        .read_to_end(&mut resp)
        .map_err(unreachable)?;
    parse_answer(&resp).ok_or(ClientError::BadAnswer)
}

/// The status and JSON body of an HTTP/1.1 answer (plain or chunked).
fn parse_answer(resp: &[u8]) -> Option<(u16, serde_json::Value)> {
    let text = std::str::from_utf8(resp).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .strip_prefix("HTTP/1.1 ")?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Some((status, serde_json::from_str(&body).ok()?))
}

fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (len, rest) = s.split_once("\r\n")?;
        let n = usize::from_str_radix(len.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        s = rest.get(n + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_plain_and_chunked_and_garbage() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"a\":1}";
        assert_eq!(
            parse_answer(plain).unwrap(),
            (200, serde_json::json!({"a": 1}))
        );
        let chunked =
            b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{\"b\"\r\n3\r\n:2}\r\n0\r\n\r\n";
        assert_eq!(
            parse_answer(chunked).unwrap(),
            (401, serde_json::json!({"b": 2}))
        );
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n\r\nnot json").is_none());
        assert!(parse_answer(b"\xff\xfe").is_none());
        assert!(
            parse_answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").is_none()
        );
        assert_eq!(query_value("+1 a/b"), "%2B1%20a%2Fb");
    }
}
