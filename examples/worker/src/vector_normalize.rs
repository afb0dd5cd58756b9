//! `vector.normalize`: an embedding scaled to unit length (L2), with its norm. Batched: the
//! micro-batcher hands a batch of vectors to one call, which walks them as one pass (an
//! embedding model's post-processing would run here on the whole batch at once).
//!
//! Errors, all permanent: `invalid_params` (more than `MAX_DIMS` values), `empty_vector`,
//! `zero_vector` (no direction to keep), `not_finite` (a NaN or an infinity).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_consumer::{BatchKind, Context, JobError, Kind, Limits, RouteDefaults};

/// Longest vector accepted.
pub const MAX_DIMS: usize = 65_536;

#[derive(Debug, Clone, Copy, Default)]
pub struct Normalize;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalizeJob {
    pub values: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalizeOutput {
    pub norm: f32,
    pub unit: Vec<f32>,
}

impl Kind for Normalize {
    const NAME: &'static str = "vector.normalize";
    type Input = NormalizeJob;
    type Output = NormalizeOutput;

    fn validate(&self, job: &NormalizeJob, _limits: &Limits) -> Result<(), JobError> {
        if job.values.len() > MAX_DIMS {
            return Err(JobError::InvalidParams(format!("{} values, at most {MAX_DIMS}", job.values.len())));
        }
        Ok(())
    }

    fn route() -> RouteDefaults {
        RouteDefaults {
            time_limit: Duration::from_secs(10),
            max_batch: 32,
            max_batch_wait: Duration::from_millis(2),
            ..RouteDefaults::default()
        }
    }
}

impl BatchKind for Normalize {
    fn run_batch(&self, batch: &[(NormalizeJob, Context)]) -> Vec<Result<NormalizeOutput, JobError>> {
        batch.iter().map(|(job, _)| normalize(&job.values)).collect()
    }
}

fn normalize(values: &[f32]) -> Result<NormalizeOutput, JobError> {
    if values.is_empty() {
        return Err(JobError::permanent("empty_vector", "the vector has no values"));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(JobError::permanent("not_finite", "the vector holds a NaN or an infinity"));
    }
    let norm = values.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    if norm == 0.0 {
        return Err(JobError::permanent("zero_vector", "a zero vector has no direction to keep"));
    }
    Ok(NormalizeOutput { norm: norm as f32, unit: values.iter().map(|v| (f64::from(*v) / norm) as f32).collect() })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    fn batch(vectors: &[&[f32]]) -> Vec<(NormalizeJob, Context)> {
        let cx = Context::new(0, Instant::now() + Duration::from_secs(5), Arc::new(Limits::default()));
        vectors.iter().map(|v| (NormalizeJob { values: v.to_vec() }, cx.clone())).collect()
    }

    #[test]
    fn each_vector_of_a_batch_keeps_its_own_outcome() {
        let out = Normalize.run_batch(&batch(&[&[3.0, 4.0], &[0.0, 0.0], &[], &[1.0, f32::NAN], &[2.0]]));
        assert_eq!(out[0], Ok(NormalizeOutput { norm: 5.0, unit: vec![0.6, 0.8] }));
        let types: Vec<&str> = out[1..4].iter().map(|r| r.as_ref().unwrap_err().error_type()).collect();
        assert_eq!(types, ["zero_vector", "empty_vector", "not_finite"]);
        assert_eq!(out[4], Ok(NormalizeOutput { norm: 2.0, unit: vec![1.0] }));
        assert!(out[1..4].iter().all(|r| r.as_ref().unwrap_err().class().as_str() == "permanent"));
    }

    #[test]
    fn a_vector_too_long_is_refused_before_any_work() {
        let long = NormalizeJob { values: vec![1.0; MAX_DIMS + 1] };
        assert_eq!(Normalize.validate(&long, &Limits::default()).unwrap_err().error_type(), "invalid_params");
    }
}
