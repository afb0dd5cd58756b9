//! The NVIDIA Triton adapter behind the `Classifier` port: Triton's gRPC inference protocol
//! (KServe v2 `inference.GRPCInferenceService`, `proto/inference.proto`) over `tonic`.
//!
//! At start-up it waits (up to `model.triton_startup_timeout_ms`) for the model to be ready,
//! reads its metadata and config, and refuses to start when the model does not fit Warren's
//! preprocessing (`triton_fit`); a model the server does not have is an error at once. Each
//! micro-batch is one request, its tensor as raw little-endian bytes (FP16 built with `half`),
//! under a deadline past which the request is cancelled. Requests run on the runtime; the
//! blocking thread that asked (the port is synchronous: jobs run on the blocking pool) only
//! waits for the answer. While the worker runs, a task asks whether the model is ready and
//! publishes the answer, which `/readyz` and the consuming of classify queues follow.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ndarray::Array2;
use prometheus::{Histogram, IntCounterVec, IntGauge};
use tokio::sync::{oneshot, watch};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};
use warren_common::JobError;
use warren_common::classify::{Classifier, InputTensor, ModelSpec};
use warren_infra::backoff::Backoff;
use warren_infra::settings::ModelSettings;

use crate::model_spec;
use crate::triton_fit::{self, Fit, Tensor};

#[allow(clippy::all, clippy::pedantic, missing_debug_implementations, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};

type Client = GrpcInferenceServiceClient<Channel>;

/// How long one start-up or readiness question may take.
const QUESTION: Duration = Duration::from_secs(5);

/// Where the adapter's requests are counted.
#[derive(Debug, Clone)]
pub struct TritonMetrics {
    pub inference_seconds: Histogram,
    pub errors: IntCounterVec,
}

#[derive(Debug)]
pub struct TritonClassifier {
    spec: ModelSpec,
    fit: Fit,
    client: Client,
    url: String,
    model: String,
    version: String,
    /// The most images Warren puts in one request.
    max_batch: usize,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
    metrics: TritonMetrics,
}

impl TritonClassifier {
    /// Connects, waits for the model to be ready and checks that it fits; `max_batch` is the
    /// most images Warren's batcher puts in one request.
    pub async fn connect(settings: &ModelSettings, max_batch: usize, metrics: TritonMetrics) -> anyhow::Result<Self> {
        let labels = model_spec::read_labels(settings)?;
        let url = settings.triton_url.clone();
        let mut endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("model.triton_url {url:?}"))?
            .connect_timeout(QUESTION)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10));
        if url.starts_with("https://") {
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_native_roots()).context("TLS for Triton")?;
        }
        // Lazy: the channel dials on first use and again after the server went away.
        let mut client = Client::new(endpoint.connect_lazy()).max_decoding_message_size(64 << 20);
        let (model, version) = (settings.triton_model.clone(), settings.triton_model_version.clone());
        let started = Instant::now();
        wait_until_ready(
            &mut client,
            &url,
            &model,
            &version,
            Duration::from_millis(settings.triton_startup_timeout_ms),
        )
        .await?;

        let what = || format!("model {model:?} on Triton at {url}");
        let (fit, config) = read_fit(&mut client, &model, &version, max_batch, labels.len())
            .await
            .map_err(|why| anyhow::anyhow!("{why} ({})", what()))?;
        let spec = model_spec::from_nchw(settings, labels, fit.input_type, &fit.nchw)
            .with_context(|| format!("the input {:?} of {}", fit.input, what()))?;
        tracing::info!(
            model = %spec.name, triton_model = %model, url = %url, input = %fit.input, input_type = ?fit.input_type,
            nchw = ?fit.nchw, output = %fit.output, max_batch_size = config.max_batch_size,
            dynamic_batching = config.scheduling_choice.is_some(), backend = %config.backend,
            waited_ms = started.elapsed().as_millis() as u64, "Triton model ready"
        );
        Ok(Self {
            spec,
            fit,
            client,
            url,
            model,
            version,
            max_batch,
            timeout: Duration::from_millis(settings.triton_timeout_ms),
            runtime: tokio::runtime::Handle::current(),
            metrics,
        })
    }

    /// Asks every `interval` whether the model is ready and is still the model the worker
    /// started with (its metadata and config read again: a new version with another class
    /// count or input, loaded under the same name, is not ready for this worker); the answer is
    /// kept in the receiver (and `gauge`) for as long as anyone holds one.
    pub fn watch_readiness(&self, interval: Duration, gauge: IntGauge) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(true);
        gauge.set(1);
        let (mut client, model, version, url) =
            (self.client.clone(), self.model.clone(), self.version.clone(), self.url.clone());
        let (started_with, max_batch, labels) = (self.fit.clone(), self.max_batch, self.spec.labels.len());
        self.runtime.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = tx.closed() => break,
                    _ = tick.tick() => {}
                }
                let (ready, why) = match is_ready(&mut client, &model, &version).await {
                    Ok(true) => match read_fit(&mut client, &model, &version, max_batch, labels).await {
                        // A new max_batch_size that still takes Warren's batches changes nothing.
                        Ok((fit, _)) if Fit { max_batch: started_with.max_batch, ..fit.clone() } == started_with => {
                            (true, String::new())
                        }
                        Ok((fit, _)) => (
                            false,
                            format!(
                                "the model changed on the server ({fit:?}; this worker started with \
                                 {started_with:?}): restart the worker to take it, or serve the earlier model again"
                            ),
                        ),
                        Err(why) => (false, format!("the model changed on the server and does not fit: {why}")),
                    },
                    Ok(false) => (false, "the server says the model is not ready".to_owned()),
                    Err(e) => (false, describe(&e)),
                };
                gauge.set(i64::from(ready));
                if tx.send_if_modified(|was| std::mem::replace(was, ready) != ready) {
                    if ready {
                        tracing::info!(triton_model = %model, url = %url, "Triton model ready again");
                    } else {
                        tracing::warn!(triton_model = %model, url = %url, reason = %why,
                            "Triton model not ready; classify queues paused until it is");
                    }
                }
            }
        });
        rx
    }

    fn request(&self, input: &InputTensor) -> proto::ModelInferRequest {
        let (datatype, shape, bytes) = triton_fit::encode(input);
        proto::ModelInferRequest {
            model_name: self.model.clone(),
            model_version: self.version.clone(),
            id: String::new(),
            inputs: vec![InferInputTensor { name: self.fit.input.clone(), datatype: datatype.into(), shape }],
            outputs: vec![InferRequestedOutputTensor { name: self.fit.output.clone() }],
            raw_input_contents: vec![bytes],
        }
    }
}

impl Classifier for TritonClassifier {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn infer(&self, input: InputTensor) -> Result<Array2<f32>, JobError> {
        self.infer_within(input, self.timeout)
    }

    /// The request's timeout is `model.triton_timeout_ms` cut to `within`, the time its jobs
    /// have left: Triton is told (grpc-timeout) and the call is dropped at it.
    fn infer_within(&self, input: InputTensor, within: Duration) -> Result<Array2<f32>, JobError> {
        let rows = input.batch_size();
        let request = self.request(&input);
        drop(input);
        let (mut client, timeout) = (self.client.clone(), self.timeout.min(within));
        let (tx, rx) = oneshot::channel();
        let started = Instant::now();
        // On the runtime, so that it is bounded by its own deadline even if this thread is
        // given up at the job's time limit; dropping the call at the deadline cancels the
        // request (its HTTP/2 stream is reset), and the grpc-timeout header tells Triton too.
        self.runtime.spawn(async move {
            let mut request = Request::new(request);
            request.set_timeout(timeout);
            let past_deadline =
                || Status::deadline_exceeded(format!("no answer within {timeout:?}; the request was cancelled"));
            let answer = match tokio::time::timeout(timeout, client.model_infer(request)).await {
                // tonic ends a call at its own grpc-timeout as Cancelled (`code_of`): the deadline.
                Ok(Err(s)) if triton_fit::code_of(s.code(), started.elapsed(), timeout) != s.code() => {
                    Err(past_deadline())
                }
                Ok(answer) => answer,
                Err(_) => Err(past_deadline()),
            };
            let _ = tx.send(answer);
        });
        let answer = rx.blocking_recv().unwrap_or_else(|_| Err(Status::unavailable("the worker is stopping")));
        self.metrics.inference_seconds.observe(started.elapsed().as_secs_f64());
        let response = match answer {
            Ok(r) => r.into_inner(),
            Err(status) => {
                self.metrics.errors.with_label_values(&[triton_fit::code_label(status.code())]).inc();
                return Err(triton_fit::job_error(status.code(), &message(&status)));
            }
        };
        let at = response.outputs.iter().position(|o| o.name == self.fit.output);
        let (Some(at), Some(raw)) = (at, at.and_then(|i| response.raw_output_contents.get(i))) else {
            return Err(JobError::Inference(format!(
                "Triton's answer holds no raw contents for output {:?}",
                self.fit.output
            )));
        };
        let output = &response.outputs[at];
        triton_fit::decode(&output.datatype, &output.shape, raw, rows)
    }
}

/// A status's message and its innermost cause (a refused connection, say), without the
/// transport's debug dump.
fn message(status: &Status) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut innermost = None;
    while let Some(e) = cause {
        innermost = Some(e);
        cause = e.source();
    }
    match innermost.map(ToString::to_string) {
        Some(cause) if cause != status.message() => format!("{} ({cause})", status.message()),
        _ => status.message().to_owned(),
    }
}

/// Reads the model's metadata and config and checks that it fits Warren's preprocessing
/// (`triton_fit::fit`); the error says what does not fit, or which question failed.
async fn read_fit(
    client: &mut Client,
    model: &str,
    version: &str,
    max_batch: usize,
    labels: usize,
) -> Result<(Fit, proto::ModelConfig), String> {
    let (name, version) = (model.to_owned(), version.to_owned());
    let metadata =
        ask(client
            .model_metadata(question(proto::ModelMetadataRequest { name: name.clone(), version: version.clone() })))
        .await
        .map_err(|e| format!("reading the metadata: {}", describe(&e)))?;
    let config = ask(client.model_config(question(proto::ModelConfigRequest { name, version })))
        .await
        .map_err(|e| format!("reading the config: {}", describe(&e)))?
        .config
        .ok_or_else(|| "Triton sent no config".to_owned())?;
    let tensors = |ts: Vec<proto::model_metadata_response::TensorMetadata>| -> Vec<Tensor> {
        ts.into_iter().map(|t| Tensor { name: t.name, datatype: t.datatype, shape: t.shape }).collect()
    };
    let (inputs, outputs) = (tensors(metadata.inputs), tensors(metadata.outputs));
    let fit = triton_fit::fit(model, &inputs, &outputs, config.max_batch_size, max_batch, labels)?;
    Ok((fit, config))
}

/// A status in one line: its code, message and cause.
fn describe(status: &Status) -> String {
    format!("{}: {}", triton_fit::code_label(status.code()), message(status))
}

/// A request for a start-up or readiness question, with its deadline.
fn question<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(QUESTION);
    request
}

/// Awaits an answer within [`QUESTION`].
async fn ask<T>(call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>) -> Result<T, Status> {
    match tokio::time::timeout(QUESTION, call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!("no answer within {QUESTION:?}"))),
    }
}

/// Whether the server says `model` (at `version`) is ready.
async fn is_ready(client: &mut Client, model: &str, version: &str) -> Result<bool, Status> {
    let asked = question(proto::ModelReadyRequest { name: model.into(), version: version.into() });
    ask(client.model_ready(asked)).await.map(|r| r.ready)
}

/// Waits until `model` is ready, up to `patience`; a model missing from the server's
/// repository is an error at once, naming the models it has.
async fn wait_until_ready(
    client: &mut Client,
    url: &str,
    model: &str,
    version: &str,
    patience: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + patience;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let index = ask(client.repository_index(question(proto::RepositoryIndexRequest::default()))).await;
        let why = match index {
            // A KServe server without Triton's repository extension answers Unimplemented:
            // readiness alone decides there.
            Err(e) if e.code() != Code::Unimplemented => format!("the server does not answer: {}", describe(&e)),
            index => {
                let states = match index {
                    Ok(index) => Some(served(&index.models, model).map_err(|has| {
                        anyhow::anyhow!(
                            "Triton at {url} does not serve a model named {model:?} (model.triton_model); its \
                             repository holds: {has}"
                        )
                    })?),
                    Err(_) => None,
                };
                match is_ready(client, model, version).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => states.unwrap_or_else(|| "not ready".into()),
                    Err(e) => describe(&e),
                }
            }
        };
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "Triton model {model:?} at {url} was not ready within {patience:?} (model.triton_startup_timeout_ms): {why}"
            );
        }
        let wait = backoff.next_delay().min(left);
        tracing::warn!(triton_model = %model, url = %url, reason = %why, ?wait, "waiting for the Triton model to be ready");
        tokio::time::sleep(wait).await;
    }
}

/// The states of `model`'s versions in a repository index, or, when it has none, the names
/// of the models it has.
fn served(index: &[proto::repository_index_response::ModelIndex], model: &str) -> Result<String, String> {
    let states: Vec<String> = index
        .iter()
        .filter(|m| m.name == model)
        .map(|m| format!("version {:?} {} {}", m.version, m.state, m.reason).trim().to_owned())
        .collect();
    if states.is_empty() {
        let mut names: Vec<&str> = index.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        return Err(if names.is_empty() { "nothing".to_owned() } else { names.join(", ") });
    }
    Ok(states.join("; "))
}
