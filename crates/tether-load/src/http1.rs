//! Just enough HTTP/1.1 for a publisher and a polling server: messages with
//! a `Content-Length` body (or none) on a keep-alive connection.
//!
//! What it does not do: chunked bodies, pipelining, `Expect: 100-continue`
//! or TLS. Heads and bodies are bounded; anything else is an error.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest message head read.
const MAX_HEAD: usize = 16 * 1024;

/// Largest body read.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Most headers in one message head.
const MAX_HEADERS: usize = 64;

/// A response: its status and body.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

/// A request: its method and target (its body is read and dropped).
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) target: String,
}

/// Reads one response from `io`; `buf` keeps bytes read past it.
pub(crate) async fn read_response<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
) -> Result<Response, String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(buf) {
            Ok(httparse::Status::Complete(head)) => {
                let status = response.code.unwrap_or_default();
                let length = body_length(response.headers)?;
                let body = read_body(io, buf, head, length).await?;
                return Ok(Response { status, body });
            }
            Ok(httparse::Status::Partial) => fill(io, buf).await?,
            Err(error) => return Err(format!("malformed response: {error}")),
        }
    }
}

/// Reads one request from `io`, or `None` if the connection ends cleanly
/// before it; `buf` keeps bytes read past it.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
) -> Result<Option<Request>, String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buf) {
            Ok(httparse::Status::Complete(head)) => {
                let method = request.method.unwrap_or_default().to_owned();
                let target = request.path.unwrap_or_default().to_owned();
                let length = body_length(request.headers)?;
                read_body(io, buf, head, length).await?;
                return Ok(Some(Request { method, target }));
            }
            Ok(httparse::Status::Partial) if buf.is_empty() => {
                if io.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
                    return Ok(None);
                }
            }
            Ok(httparse::Status::Partial) => fill(io, buf).await?,
            Err(error) => return Err(format!("malformed request: {error}")),
        }
    }
}

/// The body length a head announces: its `Content-Length`, or none.
fn body_length(headers: &[httparse::Header<'_>]) -> Result<usize, String> {
    let mut length = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked bodies are not supported".into());
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .and_then(|value| value.trim().parse::<usize>().ok())
                .ok_or("malformed Content-Length")?;
            if length.is_some_and(|length| length != value) {
                return Err("conflicting Content-Length headers".into());
            }
            length = Some(value);
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(format!("body of {length} bytes is over {MAX_BODY}"));
    }
    Ok(length)
}

/// Reads until `buf` holds the head and `length` body bytes; takes both.
async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    head: usize,
    length: usize,
) -> Result<Bytes, String> {
    while buf.len() < head + length {
        if io.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection ended inside a body".into());
        }
    }
    buf.advance(head);
    Ok(buf.split_to(length).freeze())
}

/// Reads more of an incomplete head.
async fn fill<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut) -> Result<(), String> {
    if buf.len() > MAX_HEAD {
        return Err(format!("message head over {MAX_HEAD} bytes"));
    }
    match io.read_buf(buf).await {
        Ok(0) => Err("connection ended inside a message head".into()),
        Ok(_) => Ok(()),
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse_responses(wire: &[u8]) -> Vec<Result<(u16, Bytes), String>> {
        let mut io = wire;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        loop {
            let result = read_response(&mut io, &mut buf).await;
            let end = result.is_err();
            out.push(result.map(|r| (r.status, r.body)));
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn reads_keep_alive_responses() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";
        let results = parse_responses(wire).await;
        assert_eq!(results[0], Ok((200, Bytes::from_static(b"{}"))));
        assert_eq!(results[1], Ok((401, Bytes::new())));
        assert_eq!(
            results[2],
            Err("connection ended inside a message head".into())
        );
    }

    #[tokio::test]
    async fn refuses_what_it_cannot_frame() {
        for (wire, error) in [
            (
                &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                "chunked bodies are not supported",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "conflicting Content-Length headers",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "malformed Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
                "connection ended inside a body",
            ),
            (
                b"garbage\r\n\r\n",
                "malformed response: invalid HTTP version",
            ),
        ] {
            assert_eq!(parse_responses(wire).await[0], Err(error.into()));
        }
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD * 2));
        let mut io = huge.as_bytes();
        let error = read_response(&mut io, &mut BytesMut::new())
            .await
            .unwrap_err();
        assert!(error.contains("head over"), "{error}");
    }

    #[tokio::test]
    async fn reads_requests_until_a_clean_end() {
        let wire = b"GET /poll?since=3 HTTP/1.1\r\nHost: a\r\n\r\nPOST /api/publish HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let mut io = &wire[..];
        let mut buf = BytesMut::new();
        let first = read_request(&mut io, &mut buf).await.unwrap().unwrap();
        assert_eq!(
            (first.method.as_str(), first.target.as_str()),
            ("GET", "/poll?since=3")
        );
        let second = read_request(&mut io, &mut buf).await.unwrap().unwrap();
        assert_eq!(second.method, "POST");
        assert!(read_request(&mut io, &mut buf).await.unwrap().is_none());
    }
}
