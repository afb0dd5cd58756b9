//! Writing results for people: one line per job on stdout, outputs into a directory.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use warren_common::{JobOutput, JobResult, ResultStatus};

/// A one-line summary of a result.
pub fn summary(result: &JobResult) -> String {
    match (&result.status, &result.output, &result.error) {
        (ResultStatus::Ok, Some(JobOutput::Resize(r)), _) => format!(
            "ok {}x{} -> {}x{} {} ({} bytes)",
            r.source_width,
            r.source_height,
            r.width,
            r.height,
            r.format.as_str(),
            r.image.len()
        ),
        (ResultStatus::Ok, Some(JobOutput::Classify(c)), _) => {
            let top: Vec<String> = c.predictions.iter().map(|p| format!("{} {:.3}", p.label, p.score)).collect();
            format!("ok {}: {}", c.model, top.join(", "))
        }
        (ResultStatus::Ok, Some(JobOutput::Fault(f)), _) => format!("ok on attempt {}", f.attempt),
        (ResultStatus::Ok, Some(JobOutput::Checksum(c)), _) => {
            format!("ok crc32 {:08x} over {} bytes x {}", c.crc32, c.bytes, c.rounds)
        }
        (_, _, Some(e)) => format!("error {} ({}): {}", e.error_type, e.class.as_str(), e.message),
        _ => "error: result with neither output nor error".to_owned(),
    }
}

/// Writes a result's output next to others in `dir`: images as files, everything else as JSON.
/// Returns the path written.
pub fn write(dir: &Path, input: &Path, result: &JobResult) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = input.file_stem().and_then(|s| s.to_str()).unwrap_or("job");
    let (path, bytes) = match &result.output {
        Some(JobOutput::Resize(r)) => (dir.join(format!("{stem}.{}", r.format.extension())), r.image.clone()),
        Some(JobOutput::Classify(c)) => (dir.join(format!("{stem}.json")), serde_json::to_vec_pretty(c)?),
        Some(JobOutput::Fault(f)) => (dir.join(format!("{stem}.json")), serde_json::to_vec_pretty(f)?),
        Some(JobOutput::Checksum(c)) => (dir.join(format!("{stem}.json")), serde_json::to_vec_pretty(c)?),
        None => (dir.join(format!("{stem}.error.json")), serde_json::to_vec_pretty(&result.error)?),
    };
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
