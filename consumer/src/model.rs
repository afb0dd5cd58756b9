//! The model a classifying worker uses, from `[model] backend`: ONNX Runtime in this process,
//! or a Triton server, and whether it is ready (always, in-process; as the server says, for
//! Triton).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::watch;
use warren_common::classify::Classifier;
use warren_infra::Settings;
use warren_infra::settings::{ModelBackend, Route};

use crate::metrics::Metrics;
use crate::onnx::OrtClassifier;
use crate::triton::{TritonClassifier, TritonMetrics};

/// A loaded model, and its readiness when it can change.
pub struct Model {
    pub classifier: Arc<dyn Classifier>,
    /// None: always ready.
    pub ready: Option<watch::Receiver<bool>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("spec", self.classifier.spec()).finish_non_exhaustive()
    }
}

/// Loads the configured model for a worker of `pool` slots, batched as `route` says; any
/// problem stops start-up.
pub async fn load(settings: &Settings, route: &Route, pool: usize, metrics: &Metrics) -> anyhow::Result<Model> {
    let mut model = settings.model.clone();
    let backend = model.backend.as_str();
    let histogram = metrics.inference_histogram(&model.name, backend);
    let started = Instant::now();
    let loaded = match model.backend {
        ModelBackend::Ort => {
            if model.sessions == 0 {
                model.sessions = pool;
            }
            let loaded = tokio::task::spawn_blocking(move || OrtClassifier::load(&model, Some(histogram)))
                .await
                .context("model loader thread")??;
            metrics.model_ready_gauge(&settings.model.name, backend).set(1);
            Model { classifier: Arc::new(loaded), ready: None }
        }
        ModelBackend::Triton => {
            let errors = metrics.triton_errors();
            // Exported from the start, at 0: a dashboard or alert sees "no failures yet" rather
            // than no series (the codes a server that is down or slow gives).
            for code in ["unavailable", "deadline_exceeded"] {
                errors.with_label_values(&[code]);
            }
            let metrics_of = TritonMetrics { inference_seconds: histogram, errors };
            let triton = TritonClassifier::connect(&model, route.max_batch.max(1), metrics_of).await?;
            let ready = triton.watch_readiness(
                Duration::from_millis(model.triton_ready_interval_ms),
                metrics.model_ready_gauge(&model.name, backend),
            );
            Model { classifier: Arc::new(triton), ready: Some(ready) }
        }
    };
    metrics.model_loaded(started.elapsed());
    Ok(loaded)
}
