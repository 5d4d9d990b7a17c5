//! The HTTP side of the `line` and `webhook` sinks: one client per sink, one POST per
//! attempt, the answer classified by [`super::retry::classify_http`].

use std::path::Path;

use reqwest::header::HeaderMap;

use super::retry::{classify_http, classify_request_error};
use super::{Answer, SendError};
use crate::time::SharedClock;

/// An HTTP client for a sink (see [`crate::http::client_builder`]).
pub fn client(
    ca_file: Option<&Path>,
    tls_verify: bool,
    what: &str,
) -> Result<reqwest::Client, String> {
    crate::http::client_builder(ca_file, tls_verify, what)?
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| {
            format!(
                "cannot build the HTTP client: {}",
                super::retry::describe_reqwest(&e)
            )
        })
}

/// What the peer answered.
#[derive(Debug)]
pub struct Response {
    /// The status.
    pub status: reqwest::StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, as text.
    pub body: String,
}

impl Response {
    /// The standard classification (see [`classify_http`]).
    pub fn classify(&self, clock: &SharedClock) -> Result<Answer, SendError> {
        classify_http(self.status, &self.headers, &self.body, clock.now())
    }
}

/// POSTs `body` to `url` with `headers`. A request that got no answer is a
/// [`SendError`]; any answer is returned for the caller to classify.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Result<Response, SendError> {
    let response = client
        .post(url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| classify_request_error(&e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_answer(response).await;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The most of an endpoint's answer that is read: enough for any error message it
/// carries, and no more, whatever the endpoint sends.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The first [`MAX_ANSWER_BYTES`] of an answer's body, as text (lossily); the rest is
/// not read. A body that breaks off is what arrived.
async fn read_answer(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_ANSWER_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// An endpoint that answers 500 with a body of 1 GiB (announced, then streamed until
    /// the client hangs up): only the first 64 KiB are read.
    #[tokio::test]
    async fn an_endless_answer_is_read_only_so_far() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let _ = sock.read(&mut buf).await;
            let head = "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 1073741824\r\n\r\n";
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let piece = vec![b'x'; 65536];
            for _ in 0..16384 {
                if sock.write_all(&piece).await.is_err() {
                    return;
                }
            }
        });
        let client = reqwest::Client::new();
        let answer = post(
            &client,
            &format!("http://{addr}/hook"),
            HeaderMap::new(),
            b"{}".to_vec(),
        )
        .await
        .expect("an answer");
        assert_eq!(answer.status.as_u16(), 500);
        assert_eq!(answer.body.len(), MAX_ANSWER_BYTES);
    }
}
