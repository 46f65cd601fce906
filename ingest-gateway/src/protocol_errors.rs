//! JSON answers for the requests actix's HTTP/1 parser refuses by itself.
//!
//! A request the parser cannot read never reaches the application, so no
//! middleware can shape its answer: actix-http writes a bare `400 Bad
//! Request` (malformed request line, header or chunked framing), `431 Request
//! Header Fields Too Large` (more than 96 headers, or a head over 128 KiB) or
//! `408 Request Timeout` (no complete head within 5 s), each with
//! `content-length: 0`, and closes the connection. Producers then get no
//! error code to act on.
//!
//! [`JsonRefusals`] sits between actix and the TCP stream and rewrites those
//! answers, on their way out, into the JSON error shape with a specific code.
//! It can tell them by their bytes because the application never answers a
//! 400, 408 or 431 without a body (every error of ours is JSON, see
//! `json_errors`), and because actix writes such a refusal last, after any
//! earlier pipelined answers, in one write: the rewrite looks only at a write
//! that ends with a complete empty-bodied head of one of those statuses. A
//! refusal split across two writes (the socket took only part of the
//! buffer) goes out as actix wrote it: still a valid HTTP answer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The refusals rewritten: actix's status line, our code, and a message.
const REFUSALS: &[(&str, &str, &str)] = &[
    (
        "HTTP/1.1 400 Bad Request",
        "malformed_request",
        "the request is not valid HTTP/1.1 (request line, a header, or chunked framing); \
         it was not processed",
    ),
    (
        "HTTP/1.1 431 Request Header Fields Too Large",
        "request_head_too_large",
        "the request head has more than 96 headers or is over 128 KiB; it was not processed",
    ),
    (
        "HTTP/1.1 408 Request Timeout",
        "request_timeout",
        "the request head did not arrive within 5 s; it was not processed",
    ),
];

const HEAD_END: &[u8] = b"\r\n\r\n";

/// An I/O stream whose outgoing parser refusals are rewritten (module doc).
pub struct JsonRefusals<T> {
    io: T,
    /// A rewritten answer not yet written through, and how much of it was.
    pending: Vec<u8>,
    sent: usize,
    /// While a rewritten answer goes out: how many of the caller's bytes it
    /// stands for. They are reported written only once all of it is out, so
    /// the caller waits for it as for a slow socket (actix closes a refused
    /// connection as soon as its own buffer looks written).
    claimed: Option<usize>,
}

impl<T> JsonRefusals<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            pending: Vec::new(),
            sent: 0,
            claimed: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonRefusals<T> {
    /// Writes what remains of a rewritten answer; `Ready(Ok)` once none is left.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.pending[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonRefusals<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.claimed.is_none() {
            let Some(answer) = rewrite(buf) else {
                return Pin::new(&mut this.io).poll_write(cx, buf);
            };
            this.pending = answer;
            this.claimed = Some(buf.len());
        }
        // The caller retries with the same bytes until they are reported written.
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Ok(this.claimed.take().unwrap_or(0)))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// `buf` with a trailing parser refusal replaced by its JSON answer, or
/// `None` when it ends with none.
fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.ends_with(HEAD_END) {
        return None;
    }
    let start = last_position(buf, b"HTTP/1.1 ")?;
    let head = std::str::from_utf8(&buf[start..buf.len() - HEAD_END.len()]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let (_, code, message) = REFUSALS.iter().find(|(line, _, _)| *line == status_line)?;
    let headers: Vec<&str> = lines.collect();
    if !headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut answer = buf[..start].to_vec();
    answer.extend_from_slice(status_line.as_bytes());
    answer.extend_from_slice(b"\r\ncontent-type: application/json");
    answer.extend_from_slice(format!("\r\ncontent-length: {}", body.len()).as_bytes());
    for kept in headers
        .iter()
        .filter(|h| !h.to_ascii_lowercase().starts_with("content-length:"))
    {
        answer.extend_from_slice(b"\r\n");
        answer.extend_from_slice(kept.as_bytes());
    }
    answer.extend_from_slice(HEAD_END);
    answer.extend_from_slice(body.as_bytes());
    Some(answer)
}

fn last_position(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .rposition(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `step` bytes per write, and says
    /// `Pending` every other call.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
        ready: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.ready = !self.ready;
            if !self.ready {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(self.step);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_whole_answer_is_out_before_the_refusal_counts_as_written() {
        let bare = format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{DATE}\r\n\r\n");
        let mut stream = JsonRefusals::new(Trickle {
            written: Vec::new(),
            step: 7,
            ready: false,
        });
        let Ok(n) =
            std::future::poll_fn(|cx| Pin::new(&mut stream).poll_write(cx, bare.as_bytes())).await
        else {
            panic!("write failed")
        };
        assert_eq!(n, bare.len(), "the caller's bytes, once");
        let written = String::from_utf8(stream.io.written.clone()).unwrap_or_default();
        assert_eq!(Some(written), text_opt(rewrite(bare.as_bytes())));
        // Later writes pass through untouched.
        let next = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_write(cx, b"next")).await;
        assert_eq!(next.ok(), Some(4));
        assert!(stream.io.written.ends_with(b"next"));
    }

    fn text_opt(bytes: Option<Vec<u8>>) -> Option<String> {
        bytes.and_then(|b| String::from_utf8(b).ok())
    }

    const DATE: &str = "date: Sun, 06 Dec 2026 13:03:48 GMT";

    fn text(bytes: Option<Vec<u8>>) -> String {
        String::from_utf8(bytes.unwrap_or_default()).unwrap_or_default()
    }

    #[test]
    fn a_bare_parser_refusal_becomes_the_json_error_shape() {
        let bare = format!(
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n{DATE}\r\n\r\n"
        );
        let answer = text(rewrite(bare.as_bytes()));
        let Some((head, body)) = answer.split_once("\r\n\r\n") else {
            panic!("{answer}")
        };
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\ncontent-type: application/json\r\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        assert!(head.contains("\r\nconnection: close\r\n") && head.ends_with(DATE));
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(json["error"]["code"], "request_head_too_large");
    }

    #[test]
    fn an_earlier_pipelined_answer_is_kept_byte_for_byte() {
        let earlier = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 15\r\ncontent-type: application/json\r\n{DATE}\r\n\r\n{{\"status\":\"ok\"}}"
        );
        let bare = format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{DATE}\r\n\r\n");
        let answer = text(rewrite(format!("{earlier}{bare}").as_bytes()));
        let Some(refusal) = answer.strip_prefix(&earlier) else {
            panic!("{answer}")
        };
        assert!(
            refusal.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n")
        );
        assert!(refusal.ends_with("it was not processed\"}}"), "{refusal}");
        assert!(
            refusal.contains(r#"{"error":{"code":"malformed_request","#),
            "{refusal}"
        );
    }

    #[test]
    fn application_answers_pass_untouched() {
        for passing in [
            // Our own 400s always carry a JSON body.
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 57\r\ncontent-type: application/json\r\n{DATE}\r\n\r\n{{\"error\":{{}}}}"),
            // A head without its end (split write), and other statuses.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n".to_string(),
            format!("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\n{DATE}\r\n\r\n"),
        ] {
            assert!(rewrite(passing.as_bytes()).is_none(), "{passing}");
        }
    }
}
