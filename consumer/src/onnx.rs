//! The ONNX Runtime adapter behind the `Classifier` port.
//!
//! ONNX Runtime is loaded at run time (ort's `load-dynamic`): from `model.onnxruntime_path`,
//! else `ORT_DYLIB_PATH`, else the cache `scripts/setup.sh` fills. The model is loaded once per
//! process into `model.sessions` sessions of `model.intra_threads` threads each; a job borrows
//! a free session for one run (ort's `Session::run` needs `&mut`), so up to `sessions` runs
//! overlap and intra-op threads x sessions can be kept within the cores. ONNX Runtime's threads
//! do not spin while they wait.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context as _, bail};
use ndarray::{Array2, Ix2};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use warren_common::JobError;
use warren_common::classify::{Classifier, ElementType, InputTensor, ModelSpec};
use warren_infra::settings::ModelSettings;

use crate::lender::Lender;
use crate::model_spec;

pub const ORT_VERSION: &str = "1.31.1";

static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();

#[derive(Debug)]
pub struct OrtClassifier {
    spec: ModelSpec,
    input_name: String,
    output_name: String,
    sessions: Lender<Session>,
    inference_seconds: Option<prometheus::Histogram>,
}

impl OrtClassifier {
    /// Loads ONNX Runtime and the model; blocking (file I/O and graph optimisation).
    pub fn load(settings: &ModelSettings, inference_seconds: Option<prometheus::Histogram>) -> anyhow::Result<Self> {
        let env = environment(&settings.onnxruntime_path)?;
        let labels = model_spec::read_labels(settings)?;
        anyhow::ensure!(settings.sessions >= 1, "model.sessions must be at least 1");
        let mut sessions = Vec::with_capacity(settings.sessions);
        for _ in 0..settings.sessions {
            let load = || -> anyhow::Result<Session> {
                // Intra-op threads that spin between operators would burn the cores the worker's
                // pool and the other sessions need; with 1 thread (the default) there are none.
                let builder_error = |e: ort::Error<_>| anyhow::anyhow!("{e}");
                let mut builder = Session::builder(env)?
                    .with_intra_threads(settings.intra_threads.max(1))
                    .map_err(builder_error)?
                    .with_intra_op_spinning(false)
                    .map_err(builder_error)?
                    .with_inter_op_spinning(false)
                    .map_err(builder_error)?;
                Ok(builder.commit_from_file(&settings.path)?)
            };
            let session = load().with_context(|| format!("loading ONNX model {}", settings.path.display()))?;
            sessions.push(session);
        }
        let first = sessions.first().context("no session")?;
        let input = first.inputs().first().context("the model declares no input")?;
        let output = first.outputs().first().context("the model declares no output")?;
        let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
            bail!("model input {:?} is {:?}, not a tensor", input.name(), input.dtype());
        };
        let input_type = match ty {
            TensorElementType::Float32 => ElementType::F32,
            TensorElementType::Float16 => ElementType::F16,
            other => bail!("model input {:?} has element type {other:?}; f32 or f16 supported", input.name()),
        };
        let spec = model_spec::from_nchw(settings, labels, input_type, shape)
            .with_context(|| format!("model input {:?}", input.name()))?;
        let (input_name, output_name) = (input.name().to_owned(), output.name().to_owned());
        tracing::info!(model = %spec.name, path = %settings.path.display(), ?input_type, channels = spec.channels, height = spec.height,
            width = spec.width, labels = spec.labels.len(), sessions = sessions.len(), "model loaded");
        Ok(Self { spec, input_name, output_name, sessions: Lender::new(sessions), inference_seconds })
    }

    fn run(&self, session: &mut Session, input: &InputTensor) -> Result<Array2<f32>, ort::Error> {
        let value: ort::session::SessionInputValue<'_> = match input {
            InputTensor::F32(a) => TensorRef::from_array_view(a.view())?.into(),
            InputTensor::F16(a) => TensorRef::from_array_view(a.view())?.into(),
        };
        let outputs = session.run(vec![(std::borrow::Cow::from(self.input_name.as_str()), value)])?;
        let scores = outputs[self.output_name.as_str()].try_extract_array::<f32>()?;
        scores
            .into_dimensionality::<Ix2>()
            .map(|a| a.to_owned())
            .map_err(|e| ort::Error::new(format!("model output is not [batch, classes]: {e}")))
    }
}

impl Classifier for OrtClassifier {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn infer(&self, input: InputTensor) -> Result<Array2<f32>, JobError> {
        // The session goes back to the lender even if the run panics.
        let result = self.sessions.with(|session| {
            let _timer = self.inference_seconds.as_ref().map(|h| h.start_timer());
            self.run(session, &input)
        });
        result.map_err(|e| JobError::Inference(e.to_string()))
    }
}

/// Where ONNX Runtime is looked for, in order: `configured`, `ORT_DYLIB_PATH`, the setup cache.
pub fn runtime_candidates(configured: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if !configured.as_os_str().is_empty() {
        out.push(configured.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    let cache = std::env::var_os("WARREN_CACHE_DIR").map(PathBuf::from).or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("warren"))
    });
    if let Some(c) = cache {
        out.push(c.join(format!("onnxruntime-{ORT_VERSION}")).join(format!("libonnxruntime.so.{ORT_VERSION}")));
    }
    out
}

fn environment(configured: &Path) -> anyhow::Result<&'static ort::environment::Environment> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let candidates = runtime_candidates(configured);
    let Some(lib) = candidates.iter().find(|p| p.is_file()) else {
        bail!(
            "ONNX Runtime {ORT_VERSION} not found (looked in: {}). Run scripts/setup.sh, which fetches it \
             from PyPI's onnxruntime=={ORT_VERSION} wheel, or point ORT_DYLIB_PATH or model.onnxruntime_path \
             at libonnxruntime.so.{ORT_VERSION}",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    };
    let env = ort::init_from(lib)
        .with_context(|| format!("loading ONNX Runtime from {}", lib.display()))?
        .with_name("warren")
        .build()
        .context("creating the ONNX Runtime environment")?;
    // Two threads racing here build two environments; one wins and both are valid.
    Ok(ENVIRONMENT.get_or_init(|| env))
}
