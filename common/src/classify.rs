//! `ml.classify`: decode an image, preprocess it to the model's declared input (size, channels,
//! mean/std normalisation, NCHW, f32 or f16), run the model through the [`Classifier`] port,
//! then softmax and top-k with labels.

use half::f16;
use ndarray::{Array2, Array4, ArrayView1, Axis};
use serde::{Deserialize, Serialize};

use crate::error::JobError;
use crate::image_io::{self, Decoded};
use crate::kind::{BatchKind, Context, Kind, RouteDefaults};
use crate::limits::Limits;
use crate::resize::Filter;

/// Element type of the model's input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElementType {
    F32,
    F16,
}

/// What a model expects and what its outputs mean: what the adapter read from the model file,
/// completed by configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub input_type: ElementType,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Per-channel normalisation applied to pixels scaled to [0, 1]: (x - mean) / std.
    /// One value applies to every channel.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub filter: Filter,
    /// One label per output class, in output order.
    pub labels: Vec<String>,
    /// Whether the model outputs logits (softmax is applied) or probabilities already.
    pub outputs_logits: bool,
    /// The most elongated image (long side / short side) that is still classified; squeezing a
    /// panorama into the model's input would give a confident answer about noise.
    pub max_aspect_ratio: f32,
}

impl ModelSpec {
    /// Checks the spec is self-consistent; adapters call it once, at load time.
    pub fn check(&self) -> Result<(), String> {
        if !matches!(self.channels, 1 | 3) {
            return Err(format!("models with {} input channels are not supported (1 or 3)", self.channels));
        }
        if self.height == 0 || self.width == 0 {
            return Err("the model input has no fixed height and width; set model.height and model.width".into());
        }
        for (name, v) in [("mean", &self.mean), ("std", &self.std)] {
            if v.len() != 1 && v.len() != self.channels {
                return Err(format!("model.{name} needs 1 or {} values, got {}", self.channels, v.len()));
            }
        }
        if self.std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return Err("model.std values must be finite and non-zero".into());
        }
        if self.max_aspect_ratio.is_nan() || self.max_aspect_ratio < 1.0 {
            return Err("model.max_aspect_ratio must be at least 1".into());
        }
        if self.labels.is_empty() {
            return Err("the model has no labels".into());
        }
        Ok(())
    }
}

/// A preprocessed batch, in the element type the model declares.
#[derive(Debug, Clone, PartialEq)]
pub enum InputTensor {
    F32(Array4<f32>),
    F16(Array4<f16>),
}

impl InputTensor {
    pub fn batch_size(&self) -> usize {
        match self {
            Self::F32(a) => a.len_of(Axis(0)),
            Self::F16(a) => a.len_of(Axis(0)),
        }
    }
}

/// The port to an inference engine. Implementations must be safe to call from several blocking
/// threads at once.
pub trait Classifier: Send + Sync {
    fn spec(&self) -> &ModelSpec;
    /// Runs the model on an NCHW batch and returns one row of scores per image, one column per
    /// label (logits or probabilities, as the spec says).
    fn infer(&self, input: InputTensor) -> Result<Array2<f32>, JobError>;

    /// [`Self::infer`], given up after `within` where the backend can bound a request (a model
    /// server: its request's timeout); in-process backends run to the end.
    fn infer_within(&self, input: InputTensor, within: std::time::Duration) -> Result<Array2<f32>, JobError> {
        let _ = within;
        self.infer(input)
    }
}

/// A model whose every run is bounded by `within` (the time its jobs have left).
struct Within<'a> {
    model: &'a dyn Classifier,
    within: std::time::Duration,
}

impl Classifier for Within<'_> {
    fn spec(&self) -> &ModelSpec {
        self.model.spec()
    }

    fn infer(&self, input: InputTensor) -> Result<Array2<f32>, JobError> {
        self.model.infer_within(input, self.within)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyJob {
    #[serde(with = "crate::bytes")]
    pub image: Vec<u8>,
    /// How many of the best labels to return (default 5, at most the number of labels).
    #[serde(default)]
    pub top_k: Option<u32>,
}

impl ClassifyJob {
    pub fn validate(&self) -> Result<(), JobError> {
        if self.top_k == Some(0) {
            return Err(JobError::InvalidParams("top_k must be at least 1".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub label: String,
    pub index: u32,
    /// Probability in [0, 1].
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyOutput {
    pub model: String,
    /// Best first.
    pub predictions: Vec<Prediction>,
}

pub const DEFAULT_TOP_K: u32 = 5;

pub fn classify(job: &ClassifyJob, model: &dyn Classifier, limits: &Limits) -> Result<ClassifyOutput, JobError> {
    classify_batch(&[job], model, limits).pop().unwrap_or_else(|| Err(JobError::Inference("empty batch".into())))
}

/// Classifies several jobs with one model run (micro-batching). Each job keeps its own outcome:
/// an image that cannot be decoded fails its job only; when the batch's model run fails, each
/// image is run again on its own, so that only the image the model cannot take fails, unless
/// the model was unavailable, which fails them all without more runs.
pub fn classify_batch(
    jobs: &[&ClassifyJob],
    model: &dyn Classifier,
    limits: &Limits,
) -> Vec<Result<ClassifyOutput, JobError>> {
    classify_batch_decoding(jobs, model, limits, true)
}

/// [`classify_batch`] with every JPEG decoded at full size: what warren-bench measures the
/// scaled decode against.
#[cfg(feature = "pipelines")]
pub fn classify_batch_full_decode(
    jobs: &[&ClassifyJob],
    model: &dyn Classifier,
    limits: &Limits,
) -> Vec<Result<ClassifyOutput, JobError>> {
    classify_batch_decoding(jobs, model, limits, false)
}

fn classify_batch_decoding(
    jobs: &[&ClassifyJob],
    model: &dyn Classifier,
    limits: &Limits,
    scaled_decode: bool,
) -> Vec<Result<ClassifyOutput, JobError>> {
    let spec = model.spec();
    let mut outcomes: Vec<Result<ClassifyOutput, JobError>> = Vec::with_capacity(jobs.len());
    let mut images = Vec::with_capacity(jobs.len());
    let mut slots = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        match prepare(job, spec, limits, scaled_decode) {
            Ok(img) => {
                images.push(img);
                slots.push(i);
                outcomes.push(Err(JobError::Inference("not run".into())));
            }
            Err(e) => outcomes.push(Err(e)),
        }
    }
    if images.is_empty() {
        return outcomes;
    }
    let answer = |scores: &Array2<f32>, row: usize, job: &ClassifyJob| {
        let probs = if spec.outputs_logits { softmax(scores.row(row)) } else { scores.row(row).to_vec() };
        let k = job.top_k.unwrap_or(DEFAULT_TOP_K);
        ClassifyOutput { model: spec.name.clone(), predictions: top_k(&probs, k, &spec.labels) }
    };
    match score(&images, model) {
        Ok(scores) => {
            for (row, &i) in slots.iter().enumerate() {
                outcomes[i] = Ok(answer(&scores, row, jobs[i]));
            }
        }
        // No image is to blame when the model is unavailable (a server down, overloaded or past
        // its deadline): every job of the batch fails alike, and is retried later.
        Err(e) if images.len() == 1 || matches!(e, JobError::ModelUnavailable(_) | JobError::ModelRequestFailed(_)) => {
            for &i in &slots {
                outcomes[i] = Err(e.clone());
            }
        }
        // One image may have failed the whole run: each gets a run of its own.
        Err(_) => {
            for (img, &i) in images.iter().zip(&slots) {
                outcomes[i] = score(std::slice::from_ref(img), model).map(|scores| answer(&scores, 0, jobs[i]));
            }
        }
    }
    outcomes
}

/// One model run over `images`, its output checked to be one row of scores per image.
fn score(images: &[Decoded], model: &dyn Classifier) -> Result<Array2<f32>, JobError> {
    let spec = model.spec();
    let scores = model.infer(preprocess_batch(images, spec)?)?;
    if scores.nrows() != images.len() || scores.ncols() != spec.labels.len() {
        // The model's fault, not an image's (a server now serving another version): the job
        // goes back without spending an attempt.
        return Err(JobError::ModelUnavailable(format!(
            "the model returned {}x{} scores, expected {}x{} (did the model change?)",
            scores.nrows(),
            scores.ncols(),
            images.len(),
            spec.labels.len()
        )));
    }
    Ok(scores)
}

/// Validates, decodes (at a reduced scale if `scaled_decode`) and checks one job's image
/// against the model.
fn prepare(job: &ClassifyJob, spec: &ModelSpec, limits: &Limits, scaled_decode: bool) -> Result<Decoded, JobError> {
    job.validate()?;
    // The image is stretched to the model's input, so a JPEG is decoded at the smallest
    // DCT scale still covering it (times the filter's margin; `image_io::dct_scale`): a
    // 1920x1080 photo for a 224x224 model decodes at 1/4, 480x270 (at 1/2 for filters wider
    // than bilinear).
    let side = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).saturating_mul(spec.filter.decode_margin());
    let needed = |w, h| if scaled_decode { (side(spec.width), side(spec.height)) } else { (w, h) };
    let decoded = image_io::decode_for(&job.image, limits, needed)?;
    let (w, h) = (decoded.source.0.max(1), decoded.source.1.max(1));
    let ratio = w.max(h) as f32 / w.min(h) as f32;
    if ratio > spec.max_aspect_ratio {
        return Err(JobError::ModelInputMismatch(format!(
            "a {w}x{h} image (aspect ratio {ratio:.1}:1) cannot be fitted to the model's {}x{} input; at most {}:1 is accepted",
            spec.width, spec.height, spec.max_aspect_ratio
        )));
    }
    Ok(decoded)
}

/// Resizes, converts and normalises images into one NCHW batch of the model's element type.
/// Each image is resampled from exactly its source ([`Decoded::whole`]), as a resize is: a
/// scaled decode's rounded-up last column or row, partly the encoder's padding, is left out.
pub fn preprocess_batch(images: &[Decoded], spec: &ModelSpec) -> Result<InputTensor, JobError> {
    let (c, h, w) = (spec.channels, spec.height, spec.width);
    let mut batch = Array4::<f32>::zeros((images.len(), c, h, w));
    let (width, height) = (
        u32::try_from(w).map_err(|_| JobError::ModelInputMismatch(format!("model width {w} is too large")))?,
        u32::try_from(h).map_err(|_| JobError::ModelInputMismatch(format!("model height {h} is too large")))?,
    );
    for (n, decoded) in images.iter().enumerate() {
        let resized = crate::resize::resample(&decoded.image, (width, height), spec.filter, decoded.whole())?;
        let pixels: Vec<u8> = match c {
            1 => resized.to_luma8().into_raw(),
            3 => resized.to_rgb8().into_raw(),
            other => {
                return Err(JobError::ModelInputMismatch(format!("{other} input channels")));
            }
        };
        let mut item = batch.index_axis_mut(Axis(0), n);
        // Interleaved HWC bytes to planar CHW floats.
        for (i, px) in pixels.iter().enumerate() {
            let ch = i % c;
            let pos = i / c;
            let mean = spec.mean.get(ch).or(spec.mean.first()).copied().unwrap_or(0.0);
            let std = spec.std.get(ch).or(spec.std.first()).copied().unwrap_or(1.0);
            item[[ch, pos / w, pos % w]] = (f32::from(*px) / 255.0 - mean) / std;
        }
    }
    Ok(match spec.input_type {
        ElementType::F32 => InputTensor::F32(batch),
        ElementType::F16 => InputTensor::F16(batch.mapv(f16::from_f32)),
    })
}

/// Numerically stable softmax.
pub fn softmax(logits: ArrayView1<'_, f32>) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` best scores with their labels, best first; ties keep the lower index first.
pub fn top_k(probs: &[f32], k: u32, labels: &[String]) -> Vec<Prediction> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    idx.into_iter()
        .take(k as usize)
        .map(|i| Prediction {
            label: labels.get(i).cloned().unwrap_or_else(|| i.to_string()),
            index: i as u32,
            score: probs[i],
        })
        .collect()
}

/// The `ml.classify` kind, over the model it was registered with (ONNX Runtime in-process or
/// Triton: see the `Classifier` adapters of warren-consumer).
#[derive(Clone)]
pub struct Classify {
    pub model: std::sync::Arc<dyn Classifier>,
}

impl std::fmt::Debug for Classify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classify").field("model", &self.model.spec().name).finish()
    }
}

impl Kind for Classify {
    const NAME: &'static str = "ml.classify";
    type Input = ClassifyJob;
    type Output = ClassifyOutput;

    fn validate(&self, input: &ClassifyJob, _limits: &Limits) -> Result<(), JobError> {
        input.validate()
    }

    fn route() -> RouteDefaults {
        RouteDefaults {
            time_limit: std::time::Duration::from_secs(30),
            max_batch: 8,
            max_batch_wait: std::time::Duration::from_millis(5),
            ..RouteDefaults::default()
        }
    }
}

impl BatchKind for Classify {
    fn run_batch(&self, batch: &[(ClassifyJob, Context)]) -> Vec<Result<ClassifyOutput, JobError>> {
        let Some((_, cx)) = batch.first() else { return Vec::new() };
        let jobs: Vec<&ClassifyJob> = batch.iter().map(|(j, _)| j).collect();
        // One request serves the whole batch: it may take as long as the job with the most
        // time left has (its deadline, or its time limit).
        let within = batch.iter().map(|(_, cx)| cx.remaining()).max().unwrap_or_default();
        classify_batch(&jobs, &Within { model: self.model.as_ref(), within }, &cx.limits)
    }
}

impl From<ClassifyJob> for crate::job::Job {
    fn from(job: ClassifyJob) -> Self {
        crate::job::Job::new::<Classify>(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::DynamicImage;
    use ndarray::array;

    /// `image` as if decoded at full size.
    fn full(image: DynamicImage) -> Decoded {
        let source = (image.width(), image.height());
        Decoded { image, format: image_io::Format::Png, source, scale: 1 }
    }

    fn spec(input_type: ElementType, channels: usize) -> ModelSpec {
        ModelSpec {
            name: "test".into(),
            input_type,
            channels,
            height: 2,
            width: 2,
            mean: vec![0.5],
            std: vec![0.5],
            filter: Filter::Nearest,
            labels: vec!["a".into(), "b".into(), "c".into()],
            outputs_logits: true,
            max_aspect_ratio: 4.0,
        }
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(array![1.0_f32, 3.0, 2.0].view());
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[2] && p[2] > p[0]);
        // Large logits do not overflow.
        let p = softmax(array![1000.0_f32, 1000.0].view());
        assert!((p[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn top_k_orders_and_labels() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let top = top_k(&[0.2, 0.5, 0.3], 2, &labels);
        assert_eq!(top.iter().map(|p| p.label.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(top_k(&[0.2, 0.5, 0.3], 10, &labels).len(), 3);
    }

    #[test]
    fn preprocess_normalises_nchw() {
        // A 2x2 grey image: black, white / white, black.
        let img = image::GrayImage::from_raw(2, 2, vec![0, 255, 255, 0]).expect("2x2");
        let t = preprocess_batch(&[full(DynamicImage::ImageLuma8(img))], &spec(ElementType::F32, 1)).expect("pre");
        let InputTensor::F32(a) = t else { panic!("expected f32") };
        assert_eq!(a.shape(), &[1, 1, 2, 2]);
        assert_eq!(a[[0, 0, 0, 0]], -1.0);
        assert_eq!(a[[0, 0, 0, 1]], 1.0);
    }

    #[test]
    fn preprocess_rgb_planar_and_f16() {
        let img = image::RgbImage::from_pixel(2, 2, image::Rgb([255, 0, 255]));
        let t = preprocess_batch(&[full(DynamicImage::ImageRgb8(img))], &spec(ElementType::F16, 3)).expect("pre");
        let InputTensor::F16(a) = t else { panic!("expected f16") };
        assert_eq!(a.shape(), &[1, 3, 2, 2]);
        assert_eq!(a[[0, 0, 1, 1]].to_f32(), 1.0);
        assert_eq!(a[[0, 1, 1, 1]].to_f32(), -1.0);
        assert_eq!(a[[0, 2, 0, 0]].to_f32(), 1.0);
    }

    /// A stand-in model that records each batch size and gives row r the class r mod 3.
    struct Counting {
        spec: ModelSpec,
        batches: std::sync::Mutex<Vec<usize>>,
    }

    impl Classifier for Counting {
        fn spec(&self) -> &ModelSpec {
            &self.spec
        }
        fn infer(&self, input: InputTensor) -> Result<Array2<f32>, JobError> {
            let n = input.batch_size();
            self.batches.lock().expect("lock").push(n);
            Ok(Array2::from_shape_fn((n, 3), |(r, c)| if c == r % 3 { 5.0 } else { 0.0 }))
        }
    }

    #[test]
    fn a_batch_runs_once_and_a_bad_image_fails_only_its_job() {
        let model = Counting { spec: spec(ElementType::F32, 1), batches: Default::default() };
        let png = crate::image_io::encode(
            &DynamicImage::ImageLuma8(image::GrayImage::new(4, 4)),
            crate::image_io::Format::Png,
            None,
        )
        .expect("png");
        let good = ClassifyJob { image: png, top_k: Some(1) };
        let bad = ClassifyJob { image: b"not an image".to_vec(), top_k: Some(1) };
        let out = classify_batch(&[&good, &bad, &good], &model, &Limits::default());
        assert_eq!(*model.batches.lock().expect("lock"), vec![2], "one model run for the two good images");
        assert_eq!(out[0].as_ref().expect("first ok").predictions[0].label, "a");
        assert_eq!(out[1].as_ref().unwrap_err().error_type(), "unsupported_format");
        assert_eq!(out[2].as_ref().expect("third ok").predictions[0].label, "b", "row 1 of the batch");
    }

    /// A stand-in model that refuses any batch holding a white image (mean input above 0.5).
    struct WhiteIntolerant {
        spec: ModelSpec,
        runs: std::sync::Mutex<Vec<usize>>,
    }

    impl Classifier for WhiteIntolerant {
        fn spec(&self) -> &ModelSpec {
            &self.spec
        }
        fn infer(&self, input: InputTensor) -> Result<Array2<f32>, JobError> {
            let InputTensor::F32(a) = input else { panic!("f32 expected") };
            let n = a.shape()[0];
            self.runs.lock().expect("lock").push(n);
            if a.outer_iter().any(|img| img.mean().unwrap_or(0.0) > 0.5) {
                return Err(JobError::ModelInputMismatch("a white image".into()));
            }
            Ok(Array2::from_shape_fn((n, 3), |(_, c)| if c == 0 { 5.0 } else { 0.0 }))
        }
    }

    #[test]
    fn a_failed_batch_run_is_run_again_image_by_image_so_only_the_guilty_fails() {
        let model = WhiteIntolerant { spec: spec(ElementType::F32, 1), runs: Default::default() };
        let png = |v: u8| {
            let img = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([v])));
            crate::image_io::encode(&img, crate::image_io::Format::Png, None).expect("png")
        };
        let black = ClassifyJob { image: png(0), top_k: Some(1) };
        let white = ClassifyJob { image: png(255), top_k: Some(1) };
        let out = classify_batch(&[&black, &white, &black], &model, &Limits::default());
        assert_eq!(*model.runs.lock().expect("lock"), vec![3, 1, 1, 1], "the batch, then each alone");
        assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
        assert_eq!(out[1].as_ref().unwrap_err().error_type(), "model_input_mismatch");
    }

    /// A stand-in for a model server that is down.
    struct Down {
        spec: ModelSpec,
        runs: std::sync::Mutex<usize>,
    }

    impl Classifier for Down {
        fn spec(&self) -> &ModelSpec {
            &self.spec
        }
        fn infer(&self, _: InputTensor) -> Result<Array2<f32>, JobError> {
            *self.runs.lock().expect("lock") += 1;
            Err(JobError::ModelUnavailable("connection refused".into()))
        }
    }

    #[test]
    fn an_unavailable_model_fails_the_whole_batch_once_without_blaming_an_image() {
        let model = Down { spec: spec(ElementType::F32, 1), runs: Default::default() };
        let png = crate::image_io::encode(
            &DynamicImage::ImageLuma8(image::GrayImage::new(4, 4)),
            crate::image_io::Format::Png,
            None,
        )
        .expect("png");
        let job = ClassifyJob { image: png, top_k: Some(1) };
        let out = classify_batch(&[&job, &job, &job], &model, &Limits::default());
        assert_eq!(*model.runs.lock().expect("lock"), 1, "one request, not one per image");
        for o in &out {
            let e = o.as_ref().expect_err("fails");
            assert_eq!((e.error_type(), e.class()), ("model_unavailable", crate::ErrorClass::Transient));
        }
    }

    fn photo() -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/photos/photo_1920x1080.jpg");
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn model_input(filter: Filter) -> ModelSpec {
        ModelSpec { height: 224, width: 224, filter, ..spec(ElementType::F32, 3) }
    }

    fn tensor(decoded: Decoded, spec: &ModelSpec) -> Array4<f32> {
        match preprocess_batch(&[decoded], spec).expect("preprocess") {
            InputTensor::F32(a) => a,
            InputTensor::F16(_) => unreachable!("the spec asks for f32"),
        }
    }

    /// A JPEG 121 pixels wide decodes at 1/8 to 16 columns that hold 15.125 of it (libjpeg-turbo
    /// rounds up; the rest is the encoder's padding). The model's input is resampled from the
    /// 15.125, as a resize's output is, so a horizontal ramp lands where a full decode puts it.
    #[test]
    fn the_models_input_is_resampled_from_the_image_not_the_decoders_padding() {
        let ramp = image::RgbImage::from_fn(121, 64, |x, _| image::Rgb([(x * 2) as u8; 3]));
        let jpeg = image_io::encode(&DynamicImage::ImageRgb8(ramp), image_io::Format::Jpeg, Some(95)).expect("jpeg");
        let spec = ModelSpec { width: 15, height: 8, filter: Filter::Triangle, ..spec(ElementType::F32, 3) };
        let scaled = prepare(&ClassifyJob { image: jpeg.clone(), top_k: None }, &spec, &Limits::default(), true)
            .expect("prepare");
        assert_eq!((scaled.scale, scaled.image.width(), scaled.image.height()), (8, 16, 8));
        let reference = full(image_io::decode(&jpeg, &Limits::default()).expect("decode").0);
        let diff = (tensor(scaled, &spec) - tensor(reference, &spec)).mapv(f32::abs);
        let (mean, max) = (diff.mean().expect("non-empty"), diff.fold(0.0f32, |m, d| m.max(*d)));
        println!("ramp 121x64 at 1/8 for 15x8: mean difference {mean}, largest {max}");
        // Measured: largest 0.016 (one step of the ramp); 0.094 when the 16 columns were
        // resampled whole, the ramp squeezed into 15.125 / 16 of the input's width.
        assert!(max < 0.05, "mean difference {mean}, largest {max}");
    }

    /// A photo for a 224x224 model decodes at the smallest DCT scale still covering the input
    /// (twice it for Lanczos), and the model sees nearly what a full decode would give it.
    #[rstest::rstest]
    #[case::bilinear(Filter::Triangle, (480, 270))]
    #[case::lanczos(Filter::Lanczos3, (960, 540))]
    fn a_photo_is_decoded_only_as_large_as_the_model_needs(#[case] filter: Filter, #[case] decoded: (u32, u32)) {
        let spec = model_input(filter);
        let job = ClassifyJob { image: photo(), top_k: None };
        let img = prepare(&job, &spec, &Limits::default(), true).expect("prepare");
        assert_eq!((img.image.width(), img.image.height()), decoded);
        let full = prepare(&job, &spec, &Limits::default(), false).expect("prepare at full size");
        assert_eq!((full.image.width(), full.image.height()), (1920, 1080));
        let (scaled, reference) = (tensor(img, &spec), tensor(full, &spec));
        // Inputs normalised to [-1, 1]: a mean difference of 0.02 is about 2.5 grey levels in 255.
        let mean_diff = (&scaled - &reference).mapv(f32::abs).mean().expect("non-empty");
        println!("{filter:?}: mean difference {mean_diff}");
        assert!(mean_diff < 0.02, "{filter:?}: mean difference {mean_diff}");
    }

    #[test]
    fn the_aspect_ratio_is_judged_on_the_source_not_the_scaled_decode() {
        let wide = image::RgbImage::from_fn(1600, 200, |x, _| image::Rgb([(x % 256) as u8, 0, 0]));
        let jpeg = crate::image_io::encode(&DynamicImage::ImageRgb8(wide), crate::image_io::Format::Jpeg, Some(80))
            .expect("encode");
        let spec = ModelSpec { max_aspect_ratio: 4.0, height: 16, width: 16, ..model_input(Filter::Triangle) };
        let err = prepare(&ClassifyJob { image: jpeg, top_k: None }, &spec, &Limits::default(), true).unwrap_err();
        assert_eq!(err.error_type(), "model_input_mismatch");
        assert!(err.to_string().contains("1600x200"), "{err}");
    }

    #[test]
    fn spec_check_refuses_bad_normalisation() {
        let mut s = spec(ElementType::F32, 3);
        s.mean = vec![0.1, 0.2];
        assert!(s.check().is_err());
        s.mean = vec![0.5];
        s.std = vec![0.0];
        assert!(s.check().is_err());
    }
}
