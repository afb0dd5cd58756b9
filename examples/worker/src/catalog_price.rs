//! `catalog.price`: an item's price, asked of a catalog service over HTTP
//! (`GET <CATALOG_URL>/items/<sku>`, answering `{"price_cents": n}`). Async work: the job awaits
//! the service on the runtime, at most the route's `concurrency` at once, its request bounded by
//! the time the job has left.
//!
//! Errors: `sku_not_found` (404, permanent); `catalog_refused` (another 4xx, or an answer that is
//! not a price, permanent); `catalog_unavailable` (5xx, no connection, a timeout: transient,
//! retried with backoff); `invalid_params` (an empty or malformed SKU, permanent).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_consumer::{AsyncKind, Context, JobError, Kind, Limits, RouteDefaults};

/// The kind, holding its HTTP client and where the catalog is.
#[derive(Debug, Clone)]
pub struct Catalog {
    client: reqwest::Client,
    base: String,
}

impl Catalog {
    pub fn new(base: impl Into<String>) -> Self {
        Self { client: reqwest::Client::new(), base: base.into().trim_end_matches('/').to_owned() }
    }

    /// From `CATALOG_URL` (e.g. `http://127.0.0.1:8080`).
    pub fn from_env() -> anyhow::Result<Self> {
        let base =
            std::env::var("CATALOG_URL").map_err(|_| anyhow::anyhow!("set CATALOG_URL to the catalog service"))?;
        Ok(Self::new(base))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceJob {
    pub sku: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceOutput {
    pub sku: String,
    pub price_cents: u64,
}

impl Kind for Catalog {
    const NAME: &'static str = "catalog.price";
    type Input = PriceJob;
    type Output = PriceOutput;

    fn validate(&self, job: &PriceJob, _limits: &Limits) -> Result<(), JobError> {
        let ok = !job.sku.is_empty()
            && job.sku.len() <= 64
            && job.sku.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(JobError::InvalidParams(format!(
                "sku must be 1 to 64 of A-Z, a-z, 0-9 and -, got {:?}",
                job.sku
            )));
        }
        Ok(())
    }

    fn route() -> RouteDefaults {
        RouteDefaults { time_limit: Duration::from_secs(10), concurrency: 32, ..RouteDefaults::default() }
    }
}

impl AsyncKind for Catalog {
    async fn run(&self, job: PriceJob, cx: Context) -> Result<PriceOutput, JobError> {
        let unavailable = |e: String| JobError::transient("catalog_unavailable", e);
        let url = format!("{}/items/{}", self.base, job.sku);
        let response =
            self.client.get(&url).timeout(cx.remaining()).send().await.map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(JobError::permanent("sku_not_found", format!("the catalog has no item {}", job.sku)));
        }
        if status.is_server_error() {
            return Err(unavailable(format!("the catalog answered {status}")));
        }
        if !status.is_success() {
            return Err(JobError::permanent("catalog_refused", format!("the catalog answered {status}")));
        }
        #[derive(Deserialize)]
        struct Item {
            price_cents: u64,
        }
        let item: Item =
            response.json().await.map_err(|e| JobError::permanent("catalog_refused", format!("not a price: {e}")))?;
        Ok(PriceOutput { sku: job.sku, price_cents: item.price_cents })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A catalog on a local port that answers every request with `status` and `body`.
    async fn catalog(status: &'static str, body: &'static str) -> Catalog {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        Catalog::new(format!("http://{addr}"))
    }

    fn cx() -> Context {
        Context::new(0, Instant::now() + Duration::from_secs(5), Arc::new(Limits::default()))
    }

    fn job() -> PriceJob {
        PriceJob { sku: "A-1".into() }
    }

    #[tokio::test]
    async fn each_answer_of_the_service_is_an_output_or_an_error_of_its_class() {
        let ok = catalog("200 OK", r#"{"price_cents": 1250}"#).await.run(job(), cx()).await;
        assert_eq!(ok, Ok(PriceOutput { sku: "A-1".into(), price_cents: 1250 }));
        let cases = [
            ("404 Not Found", "", "sku_not_found", "permanent"),
            ("503 Service Unavailable", "", "catalog_unavailable", "transient"),
            ("400 Bad Request", "", "catalog_refused", "permanent"),
            ("200 OK", "{}", "catalog_refused", "permanent"),
        ];
        for (status, body, error_type, class) in cases {
            let e = catalog(status, body).await.run(job(), cx()).await.unwrap_err();
            assert_eq!((e.error_type(), e.class().as_str()), (error_type, class), "{status}");
        }
        let down = Catalog::new("http://127.0.0.1:1").run(job(), cx()).await.unwrap_err();
        assert_eq!(down.error_type(), "catalog_unavailable");
    }

    #[test]
    fn a_malformed_sku_is_refused_before_any_call() {
        let c = Catalog::new("http://127.0.0.1:1");
        for sku in ["", "a/b", "../x", &"x".repeat(65)] {
            let e = c.validate(&PriceJob { sku: sku.into() }, &Limits::default()).unwrap_err();
            assert_eq!(e.error_type(), "invalid_params", "{sku:?}");
        }
    }
}
