//! A minimal HTTP/1.1 keep-alive client: one request at a time per connection,
//! whole requests prepared in advance, answers read by `Content-Length` or
//! chunked. Just what a load generator needs, so the client costs little CPU
//! next to the server it measures on the same machine.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `http://host:port/path` split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `host:port`, what to connect to and send as `Host`.
    pub authority: String,
    pub path: String,
}

pub fn parse_url(url: &str) -> anyhow::Result<Url> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Url {
        authority,
        path: path.to_string(),
    })
}

/// A complete POST request (head and body) ready to be written.
pub fn post_request(url: &Url, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("POST {} HTTP/1.1\r\nHost: {}\r\n", url.path, url.authority);
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server said `Connection: close`: reconnect before the next request.
    closed: bool,
}

impl Conn {
    pub async fn connect(authority: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
            closed: false,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Writes `request` and reads the whole answer.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = Head::parse(&self.buf[..head_end])?;
        self.closed = head.close;
        let mut rest = self.buf.split_off(head_end);
        let body = if head.chunked {
            self.read_chunked(rest).await?
        } else {
            let length = head.content_length.unwrap_or(0);
            while rest.len() < length {
                let n = self.read_more(&mut rest).await?;
                if n == 0 {
                    return Err(eof());
                }
            }
            rest.truncate(length);
            rest
        };
        Ok(Response {
            status: head.status,
            body,
        })
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        let n = self.read_more(&mut buf).await;
        self.buf = buf;
        match n? {
            0 => Err(eof()),
            _ => Ok(()),
        }
    }

    async fn read_more(&mut self, into: &mut Vec<u8>) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        into.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn read_chunked(&mut self, mut raw: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let Some(line_end) = find(&raw, b"\r\n") else {
                if self.read_more(&mut raw).await? == 0 {
                    return Err(eof());
                }
                continue;
            };
            let size_text = std::str::from_utf8(&raw[..line_end]).unwrap_or("");
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("chunk size"))?;
            // The chunk, then its CRLF (the last chunk is followed by a blank line).
            let needed = line_end + 2 + size + 2;
            while raw.len() < needed {
                if self.read_more(&mut raw).await? == 0 {
                    return Err(eof());
                }
            }
            body.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
            raw.drain(..needed);
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

impl Head {
    fn parse(head: &[u8]) -> io::Result<Self> {
        let text = std::str::from_utf8(head).map_err(|_| bad("response head"))?;
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| bad("status line"))?;
        let mut parsed = Self {
            status,
            content_length: None,
            chunked: false,
            close: false,
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => parsed.content_length = value.parse().ok(),
                "transfer-encoding" => parsed.chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => parsed.close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        Ok(parsed)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-answer")
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_builds_requests() {
        let url = parse_url("http://127.0.0.1:8080/powehi/smile").expect("url");
        assert_eq!(url.authority, "127.0.0.1:8080");
        assert_eq!(url.path, "/powehi/smile");
        assert_eq!(parse_url("http://h").expect("url").authority, "h:80");
        assert!(parse_url("https://h/").is_err());
        let request = post_request(&url, &[("X-Client-ID", "c")], b"{}");
        let text = String::from_utf8(request).expect("utf8");
        assert!(text.starts_with("POST /powehi/smile HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"));
    }

    #[tokio::test]
    async fn reads_sized_and_chunked_answers_on_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let answers: [&[u8]; 2] = [
                b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{\"updated\":0}",
                b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            ];
            for answer in answers {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(answer).await;
            }
        });
        let mut conn = Conn::connect(&addr).await.expect("connect");
        let first = conn.send(b"POST / HTTP/1.1\r\n\r\n").await.expect("first");
        assert_eq!(first.status, 200);
        assert_eq!(first.body, b"{\"updated\":0}");
        let second = conn.send(b"POST / HTTP/1.1\r\n\r\n").await.expect("second");
        assert_eq!(second.status, 503);
        assert_eq!(second.body, b"abcde");
    }
}
