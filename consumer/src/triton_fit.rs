//! The Triton adapter's decisions, as plain functions over plain data: whether a model Triton
//! serves fits Warren's preprocessing (read from its metadata and config at start-up), what a
//! failed request means for the job, and the tensors' bytes on the wire.

use half::f16;
use ndarray::Array2;
use tonic::Code;
use warren_common::JobError;
use warren_common::classify::{ElementType, InputTensor};

/// One tensor as the model's metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    /// KServe v2 datatype: "FP32", "FP16", "INT64", ...
    pub datatype: String,
    /// With the batch dimension (-1) first when the model batches; -1 for any open dimension.
    pub shape: Vec<i64>,
}

/// What Warren needs of a model served by Triton.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub input: String,
    pub input_type: ElementType,
    /// The input's NCHW shape, batch dimension first (-1: any).
    pub nchw: Vec<i64>,
    pub output: String,
    pub output_type: ElementType,
    /// The output's class count (-1: not declared; checked per answer).
    pub classes: i64,
    /// Most images per request: Triton's max_batch_size, or 1 for a model without a batch
    /// dimension whose first dimension is 1; None when the model's own first dimension is open.
    pub max_batch: Option<usize>,
}

fn element_type(datatype: &str) -> Option<ElementType> {
    match datatype {
        "FP32" => Some(ElementType::F32),
        "FP16" => Some(ElementType::F16),
        _ => None,
    }
}

/// Checks the model's metadata (inputs, outputs) and config's `max_batch_size` against what
/// Warren sends and reads: one NCHW FP32/FP16 input, a [batch, classes] FP32/FP16 output, as
/// many images per request as the ml.classify route's `max_batch`, and one class per label.
pub fn fit(
    model: &str,
    inputs: &[Tensor],
    outputs: &[Tensor],
    max_batch_size: i32,
    warren_max_batch: usize,
    labels: usize,
) -> Result<Fit, String> {
    let [input] = inputs else {
        let names: Vec<&str> = inputs.iter().map(|t| t.name.as_str()).collect();
        return Err(format!(
            "Triton's model {model:?} has {} inputs {names:?}; Warren sends one image tensor",
            names.len()
        ));
    };
    let input_type = element_type(&input.datatype).ok_or_else(|| {
        format!("the input {:?} of Triton's model {model:?} is {}; FP32 or FP16 supported", input.name, input.datatype)
    })?;
    if input.shape.len() != 4 {
        return Err(format!(
            "the input {:?} of Triton's model {model:?} has shape {:?}; Warren sends NCHW images, [batch, channels, height, width]",
            input.name, input.shape
        ));
    }
    let max_batch = match (max_batch_size, input.shape[0]) {
        (n, _) if n < 0 => return Err(format!("Triton's model {model:?} has max_batch_size {n}")),
        (0, -1) => None,
        (0, 1) => Some(1),
        (0, d) => {
            return Err(format!(
                "Triton's model {model:?} has no batch dimension and takes exactly {d} images per request; Warren sends 1 to the route's max_batch"
            ));
        }
        (n, _) => Some(n as usize),
    };
    if let Some(most) = max_batch
        && warren_max_batch > most
    {
        return Err(format!(
            "the ml.classify route's max_batch = {warren_max_batch} but Triton's model {model:?} takes at most {most} images per request \
             (its max_batch_size); lower the route's max_batch or raise max_batch_size in its config.pbtxt"
        ));
    }
    let Some(output) = outputs.first() else {
        return Err(format!("Triton's model {model:?} declares no output"));
    };
    let output_type = element_type(&output.datatype).ok_or_else(|| {
        format!(
            "the output {:?} of Triton's model {model:?} is {}; FP32 or FP16 supported",
            output.name, output.datatype
        )
    })?;
    let classes = match output.shape.as_slice() {
        [_, c] => *c,
        other => {
            return Err(format!(
                "the output {:?} of Triton's model {model:?} has shape {other:?}; [batch, classes] expected",
                output.name
            ));
        }
    };
    if classes > 0 && classes as usize != labels {
        return Err(format!(
            "Triton's model {model:?} gives {classes} classes but model.labels_path has {labels} labels"
        ));
    }
    Ok(Fit {
        input: input.name.clone(),
        input_type,
        nchw: input.shape.clone(),
        output: output.name.clone(),
        output_type,
        classes,
        max_batch,
    })
}

/// What a failed request means for its jobs. All are transient. A server that is down,
/// overloaded or lacks the model is no job's fault: its jobs go back without spending an
/// attempt. A request past its deadline, cancelled or aborted may be its jobs' doing (a slow
/// input): they spend an attempt. Neither kind of failure is an image's fault, so a failed
/// batch is not split to find a guilty image; anything else is an inference failure.
pub fn job_error(code: Code, message: &str) -> JobError {
    let text = format!("Triton answered {}: {message}", code_label(code));
    match code {
        Code::Unavailable | Code::ResourceExhausted | Code::NotFound => JobError::ModelUnavailable(text),
        Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => JobError::ModelRequestFailed(text),
        _ => JobError::Inference(text),
    }
}

/// The code of a failed request: tonic ends a call it timed out itself (from the request's
/// grpc-timeout) as `Cancelled`; past the deadline that is the deadline, not a cancellation.
pub fn code_of(code: Code, elapsed: std::time::Duration, deadline: std::time::Duration) -> Code {
    if code == Code::Cancelled && elapsed >= deadline { Code::DeadlineExceeded } else { code }
}

/// The fixed, low-cardinality label of a gRPC status code.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// A batch as Triton's raw input contents: its datatype, shape and little-endian bytes.
pub fn encode(input: &InputTensor) -> (&'static str, Vec<i64>, Vec<u8>) {
    let shape = |s: &[usize]| s.iter().map(|d| *d as i64).collect::<Vec<_>>();
    match input {
        InputTensor::F32(a) => {
            let mut bytes = Vec::with_capacity(a.len() * 4);
            // Logical (row-major) order, whatever the array's memory layout.
            a.iter().for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
            ("FP32", shape(a.shape()), bytes)
        }
        InputTensor::F16(a) => {
            let mut bytes = Vec::with_capacity(a.len() * 2);
            a.iter().for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
            ("FP16", shape(a.shape()), bytes)
        }
    }
}

/// One row of scores per image from an output's raw contents, checked against what was asked.
pub fn decode(datatype: &str, shape: &[i64], raw: &[u8], rows: usize) -> Result<Array2<f32>, JobError> {
    // The server answers for a model other than the one the worker checked at start-up (a new
    // version loaded under the same name): no image's fault, so the job goes back without
    // spending an attempt, while the readiness check pauses the route.
    let mismatch = |why: String| {
        JobError::ModelUnavailable(format!("Triton's answer {why} (did the model change on the server?)"))
    };
    let (r, c) = match *shape {
        [r, c] if r >= 0 && c >= 0 => (r as usize, c as usize),
        _ => return Err(mismatch(format!("has shape {shape:?}, not [batch, classes]"))),
    };
    if r != rows {
        return Err(mismatch(format!("has {r} rows for {rows} images")));
    }
    let elements = r.saturating_mul(c);
    let values: Vec<f32> = match element_type(datatype) {
        Some(ElementType::F32) if raw.len() / 4 == elements && raw.len().is_multiple_of(4) => {
            raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        Some(ElementType::F16) if raw.len() / 2 == elements && raw.len().is_multiple_of(2) => {
            raw.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
        _ => return Err(mismatch(format!("holds {} bytes of {datatype} for shape {shape:?}", raw.len()))),
    };
    Array2::from_shape_vec((r, c), values).map_err(|e| mismatch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use ndarray::Array4;

    use super::*;

    fn tensor(name: &str, datatype: &str, shape: &[i64]) -> Tensor {
        Tensor { name: name.into(), datatype: datatype.into(), shape: shape.to_vec() }
    }

    fn digits(datatype: &str) -> (Vec<Tensor>, Vec<Tensor>) {
        (vec![tensor("input", datatype, &[-1, 1, 8, 8])], vec![tensor("logits", "FP32", &[-1, 10])])
    }

    #[test]
    fn a_batching_nchw_classifier_fits() {
        let (i, o) = digits("FP16");
        let fit = fit("digits", &i, &o, 32, 8, 10).expect("fits");
        assert_eq!(fit.input_type, ElementType::F16);
        assert_eq!((fit.input.as_str(), fit.output.as_str(), fit.classes), ("input", "logits", 10));
        assert_eq!(fit.max_batch, Some(32));
        assert_eq!(fit.nchw, vec![-1, 1, 8, 8]);
    }

    #[test]
    fn models_warren_cannot_feed_or_read_are_refused_with_the_reason() {
        let (i, o) = digits("FP32");
        let err = |inputs: &[Tensor], outputs: &[Tensor], mbs: i32, batch: usize, labels: usize| {
            fit("m", inputs, outputs, mbs, batch, labels).expect_err("refused")
        };
        assert!(err(&i, &o, 4, 8, 10).contains("max_batch = 8 but Triton's model \"m\" takes at most 4"));
        assert!(err(&[tensor("x", "INT64", &[-1, 1, 8, 8])], &o, 8, 8, 10).contains("is INT64; FP32 or FP16"));
        assert!(err(&[tensor("x", "FP32", &[-1, 64])], &o, 8, 8, 10).contains("has shape [-1, 64]; Warren sends NCHW"));
        assert!(err(&[i[0].clone(), i[0].clone()], &o, 8, 8, 10).contains("has 2 inputs"));
        assert!(err(&i, &[], 8, 8, 10).contains("declares no output"));
        assert!(err(&i, &[tensor("y", "FP32", &[-1, 10, 1])], 8, 8, 10).contains("[batch, classes] expected"));
        assert!(err(&i, &[tensor("y", "BF16", &[-1, 10])], 8, 8, 10).contains("is BF16"));
        assert!(err(&i, &o, 8, 8, 1000).contains("gives 10 classes but model.labels_path has 1000 labels"));
        assert!(err(&[tensor("x", "FP32", &[4, 1, 8, 8])], &o, 0, 1, 10).contains("exactly 4 images per request"));
        assert!(err(&[tensor("x", "FP32", &[1, 1, 8, 8])], &o, 0, 2, 10).contains("takes at most 1"));
    }

    #[test]
    fn a_model_without_a_batch_dimension_takes_what_its_first_dimension_allows() {
        let o = [tensor("y", "FP32", &[1, 10])];
        let one = fit("m", &[tensor("x", "FP32", &[1, 1, 8, 8])], &o, 0, 1, 10).expect("one at a time");
        assert_eq!(one.max_batch, Some(1));
        let any = fit("m", &[tensor("x", "FP32", &[-1, 1, 8, 8])], &o, 0, 64, 10).expect("the model batches itself");
        assert_eq!(any.max_batch, None);
        let open = fit("m", &[tensor("x", "FP32", &[-1, 1, 8, 8])], &[tensor("y", "FP32", &[-1, -1])], 8, 8, 10);
        assert_eq!(open.expect("classes checked per answer").classes, -1);
    }

    #[test]
    fn an_unavailable_model_is_told_apart_from_a_failed_inference_and_both_are_retried() {
        for code in
            [Code::Unavailable, Code::DeadlineExceeded, Code::ResourceExhausted, Code::Cancelled, Code::NotFound]
        {
            let e = job_error(code, "x");
            assert_eq!(e.error_type(), "model_unavailable", "{code:?}");
            assert_eq!(e.class(), warren_common::ErrorClass::Transient);
        }
        for code in [Code::Internal, Code::InvalidArgument, Code::Unknown] {
            let e = job_error(code, "boom");
            assert_eq!(e.error_type(), "inference_failed", "{code:?}");
            assert_eq!(e.class(), warren_common::ErrorClass::Transient);
        }
        assert_eq!(
            job_error(Code::DeadlineExceeded, "late").to_string(),
            "model unavailable: Triton answered deadline_exceeded: late"
        );
        // A server down, overloaded or without the model is no job's doing (handed back
        // without an attempt); a request past its deadline may be (it spends one).
        for code in [Code::Unavailable, Code::ResourceExhausted, Code::NotFound] {
            assert!(matches!(job_error(code, "x"), JobError::ModelUnavailable(_)), "{code:?}");
        }
        for code in [Code::DeadlineExceeded, Code::Cancelled, Code::Aborted] {
            assert!(matches!(job_error(code, "x"), JobError::ModelRequestFailed(_)), "{code:?}");
        }
    }

    #[test]
    fn a_call_cancelled_at_its_deadline_counts_as_past_the_deadline() {
        use std::time::Duration;
        let (late, early, deadline) =
            (Duration::from_millis(301), Duration::from_millis(10), Duration::from_millis(300));
        assert_eq!(code_of(Code::Cancelled, late, deadline), Code::DeadlineExceeded);
        assert_eq!(code_of(Code::Cancelled, early, deadline), Code::Cancelled, "cancelled by someone else");
        assert_eq!(code_of(Code::Unavailable, late, deadline), Code::Unavailable);
    }

    #[test]
    fn tensors_cross_the_wire_little_endian_in_row_major_order() {
        let a = Array4::from_shape_fn((2, 1, 2, 2), |(n, _, y, x)| (n * 4 + y * 2 + x) as f32);
        let (dt, shape, bytes) = encode(&InputTensor::F32(a.clone()));
        assert_eq!((dt, shape.as_slice(), bytes.len()), ("FP32", &[2, 1, 2, 2][..], 32));
        assert_eq!(&bytes[4..8], &1.0f32.to_le_bytes());
        // A transposed view is sent in logical order too.
        let t = a.clone().permuted_axes([0, 1, 3, 2]);
        let (_, _, tb) = encode(&InputTensor::F32(t));
        assert_eq!(&tb[4..8], &2.0f32.to_le_bytes());
        let (dt, _, hb) = encode(&InputTensor::F16(a.mapv(f16::from_f32)));
        assert_eq!((dt, hb.len(), &hb[2..4]), ("FP16", 16, &f16::from_f32(1.0).to_le_bytes()[..]));

        let scores: Vec<u8> = [0.5f32, -1.0, 2.0, 3.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let m = decode("FP32", &[2, 2], &scores, 2).expect("decodes");
        assert_eq!(m, ndarray::array![[0.5, -1.0], [2.0, 3.0]]);
        let halves: Vec<u8> = [0.5f32, 2.0].iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect();
        assert_eq!(decode("FP16", &[1, 2], &halves, 1).expect("f16"), ndarray::array![[0.5, 2.0]]);
    }

    #[test]
    fn an_answer_of_the_wrong_size_is_an_error_not_a_panic() {
        let four = [0u8; 16];
        assert!(decode("FP32", &[2, 2], &four, 3).is_err(), "rows for another batch");
        assert!(decode("FP32", &[2, 2], &four[..12], 2).is_err(), "short");
        assert!(decode("FP32", &[4], &four, 1).is_err(), "not 2-D");
        assert!(decode("INT64", &[2, 1], &four, 2).is_err(), "datatype");
        assert!(decode("FP32", &[-1, 2], &four, 2).is_err(), "negative");
        assert!(decode("FP32", &[i64::MAX, 2], &four, 2).is_err(), "huge");
        assert!(decode("FP32", &[2, i64::MAX], &four, 2).is_err(), "huge classes");
    }
}
