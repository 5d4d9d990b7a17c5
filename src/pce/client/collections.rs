//! Collections (labels, IP lists, workloads), with the async-job path for more than 500.

use std::time::Duration;

use serde_json::Value;

use super::{Call, PceClient, PceError, Reply};

/// A plain collection GET returns at most this many objects.
pub const SYNC_LIMIT: usize = 500;

/// Which version of the policy to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyVersion {
    /// The provisioned policy (flows reference these hrefs).
    #[default]
    Active,
    /// The draft policy.
    Draft,
}

impl PolicyVersion {
    fn as_str(self) -> &'static str {
        match self {
            PolicyVersion::Active => "active",
            PolicyVersion::Draft => "draft",
        }
    }
}

/// Filters for `GET /orgs/{org}/workloads`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadQuery {
    /// `hostname` (partial match on the PCE).
    pub hostname: Option<String>,
    /// `ip_address`.
    pub ip_address: Option<String>,
    /// `labels`: OR of AND-groups of label hrefs (sent as JSON).
    pub labels: Option<Vec<Vec<String>>>,
    /// `max_results`.
    pub max_results: Option<u32>,
    /// Any other query parameters, sent as given.
    pub extra: Vec<(String, String)>,
}

impl WorkloadQuery {
    fn params(&self) -> Vec<(String, String)> {
        let mut q = Vec::new();
        if let Some(h) = &self.hostname {
            q.push(("hostname".to_string(), h.clone()));
        }
        if let Some(ip) = &self.ip_address {
            q.push(("ip_address".to_string(), ip.clone()));
        }
        if let Some(labels) = &self.labels {
            q.push((
                "labels".to_string(),
                Value::from(labels.clone()).to_string(),
            ));
        }
        if let Some(n) = self.max_results {
            q.push(("max_results".to_string(), n.to_string()));
        }
        q.extend(self.extra.iter().cloned());
        q
    }
}

impl PceClient {
    /// `GET /orgs/{org}/labels` (`key` exact, `value` partial match).
    pub async fn labels(
        &self,
        key: Option<&str>,
        value: Option<&str>,
    ) -> Result<Vec<Value>, PceError> {
        let mut q = Vec::new();
        if let Some(k) = key {
            q.push(("key".to_string(), k.to_string()));
        }
        if let Some(v) = value {
            q.push(("value".to_string(), v.to_string()));
        }
        self.collection("/labels", q).await
    }

    /// `GET /orgs/{org}/labels?max_results=1`: one cheap authenticated request that the
    /// PCE answers only for a key it accepts for this org (`vigil check`). 401, 403, TLS,
    /// connection and timeout failures come back as they are.
    pub async fn check_access(&self) -> Result<(), PceError> {
        let call = Call::get(self.org_path("/labels"))
            .query(vec![("max_results".to_string(), "1".to_string())]);
        self.execute(&call).await.map(|_| ())
    }

    /// `GET /orgs/{org}/sec_policy/{active|draft}/ip_lists`.
    pub async fn ip_lists(&self, version: PolicyVersion) -> Result<Vec<Value>, PceError> {
        self.collection(
            &format!("/sec_policy/{}/ip_lists", version.as_str()),
            Vec::new(),
        )
        .await
    }

    /// `GET /orgs/{org}/workloads`.
    pub async fn workloads(&self, query: &WorkloadQuery) -> Result<Vec<Value>, PceError> {
        self.collection("/workloads", query.params()).await
    }

    /// Any org collection (`rest` below `/orgs/{org}`): a plain GET, redone as an async
    /// job when the PCE capped it at 500 and `X-Total-Count` says there are more.
    ///
    /// `X-Total-Count` reports the unfiltered total, so only a response of at least 500
    /// objects counts as capped.
    pub async fn collection(
        &self,
        rest: &str,
        query: Vec<(String, String)>,
    ) -> Result<Vec<Value>, PceError> {
        let call = Call::get(self.org_path(rest)).query(query);
        let reply = self.execute(&call).await?;
        let items: Vec<Value> = reply.json(&call.path)?;
        let total = total_count(&reply);
        match total {
            Some(total) if total > items.len() as u64 && items.len() >= SYNC_LIMIT => {
                tracing::info!(path = %call.path, total, "PCE collection over 500: using an async job");
                self.collection_async(call).await
            }
            _ => Ok(items),
        }
    }

    async fn collection_async(&self, mut call: Call) -> Result<Vec<Value>, PceError> {
        call.prefer_async = true;
        let reply = self.execute(&call).await?;
        let job = reply
            .header("location")
            .map(str::to_string)
            .ok_or_else(|| PceError::Unexpected {
                what: format!("async {}", call.path),
                request_id: reply.request_id.clone(),
                message: format!("status {} without a Location header", reply.status),
            })?;
        let first_wait = crate::http::retry_after(&reply.headers, self.inner.clock.now());
        let datafile = self.wait_for_job(&job, first_wait).await?;
        let reply = self.execute(&Call::get(datafile.clone())).await?;
        reply.json(&datafile)
    }

    /// Polls a job until `done`; its `result.href`.
    async fn wait_for_job(
        &self,
        job: &str,
        first_wait: Option<Duration>,
    ) -> Result<String, PceError> {
        let job = strip_api_prefix(job);
        let mut poller = self.poller("collection job", job, first_wait);
        loop {
            poller.wait(self).await?;
            let reply = self.execute(&Call::get(job.to_string())).await?;
            let body: Value = reply.json(job)?;
            let status = body.get("status").and_then(Value::as_str).unwrap_or("");
            poller.seen(status, &reply);
            match status {
                "done" => return result_href(job, &body, &reply),
                "failed" => {
                    return Err(PceError::QueryFailed {
                        what: "collection job",
                        href: job.to_string(),
                        status: status.to_string(),
                        request_id: reply.request_id.clone(),
                        detail: job_detail(&body),
                    });
                }
                _ => {}
            }
        }
    }
}

fn total_count(reply: &Reply) -> Option<u64> {
    reply.header("x-total-count")?.trim().parse().ok()
}

fn result_href(job: &str, body: &Value, reply: &Reply) -> Result<String, PceError> {
    body.pointer("/result/href")
        .and_then(Value::as_str)
        .map(|h| strip_api_prefix(h).to_string())
        .ok_or_else(|| PceError::Unexpected {
            what: job.to_string(),
            request_id: reply.request_id.clone(),
            message: "job is done but has no result.href".to_string(),
        })
}

fn job_detail(body: &Value) -> String {
    match body.get("error").or_else(|| body.get("errors")) {
        Some(e) => format!(": {e}"),
        None => String::new(),
    }
}

/// Hrefs are relative to `/api/v2`; tolerate ones that already carry it.
pub(crate) fn strip_api_prefix(href: &str) -> &str {
    match href.find("/api/v2/") {
        Some(i) => &href[i + "/api/v2".len()..],
        None => href,
    }
}
