//! The PCE simulator over real HTTP: a simulator, its virtual clock and a client that
//! signs in with the simulator's key (tests/pce_sim.rs, tests/pce_sim_writes.rs).

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use vigil::pce::sim::RunningSim;
use vigil::runtime::VirtualClock;

/// A simulator, its clock and an HTTP client.
pub(crate) struct Harness {
    pub(crate) sim: RunningSim,
    pub(crate) clock: VirtualClock,
    pub(crate) http: reqwest::Client,
    /// The API key and secret the simulator was started with.
    pub(crate) key: &'static str,
    pub(crate) secret: &'static str,
}

/// A response, read whole.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the PCE's error body, `[{token, message}]`, and returns the token.
    pub(crate) fn error_token(&self) -> String {
        let body = self.json();
        let errors = body.as_array().expect("an error body is an array");
        assert!(!errors.is_empty(), "{body}");
        assert!(errors[0]["message"].is_string(), "{body}");
        errors[0]["token"].as_str().expect("token").to_string()
    }
}

/// Reads `resp` whole.
pub(crate) async fn read(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

impl Harness {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/api/v2{path}", self.sim.url())
    }

    /// Sends `req` signed with the simulator's key.
    pub(crate) async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req
            .basic_auth(self.key, Some(self.secret))
            .send()
            .await
            .expect("request");
        read(resp).await
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path))).await
    }

    pub(crate) async fn get_query<V: serde::Serialize>(
        &self,
        path: &str,
        query: &[(&str, V)],
    ) -> Reply {
        self.send(self.http.get(self.url(path)).query(query)).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(self.http.put(self.url(path)).json(body)).await
    }
}
