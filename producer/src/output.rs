//! Writing results for people: one line per job on stdout, outputs into a directory.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use warren_common::{JobOutput, JobResult, ResultStatus};

/// The line printed for a file's result, with where its output was written.
pub fn result_line(input: &Path, job_id: &str, result: &JobResult, written: Option<&Path>) -> String {
    let mut line = format!("{} [{job_id}] {}", input.display(), summary(result));
    if let Some(path) = written {
        line.push_str(&format!(" -> {}", path.display()));
    }
    line
}

/// The line printed for a file whose result did not come (a timeout, a lost reply consumer).
pub fn no_result_line(input: &Path, job_id: &str, error: &dyn std::fmt::Display) -> String {
    format!("{} [{job_id}] error: {error}", input.display())
}

/// The last line of a one-job-per-file command.
pub fn totals(ok: usize, failed: usize, waited: bool) -> String {
    if waited {
        format!("{} jobs: {ok} ok, {failed} failed", ok + failed)
    } else {
        format!("{ok} jobs published and confirmed")
    }
}

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

#[cfg(test)]
mod tests {
    use warren_common::Timing;
    use warren_common::checksum::ChecksumOutput;

    use super::*;

    fn checksum_result() -> JobResult {
        let output = JobOutput::Checksum(ChecksumOutput { crc32: 0x1c29_1ca3, bytes: 17, rounds: 2 });
        JobResult::ok("job-1".into(), "checksum".into(), output, 1, "worker-1".into(), Timing::default())
    }

    #[test]
    fn a_result_line_names_the_file_the_job_and_what_came_back() {
        let r = checksum_result();
        assert_eq!(
            result_line(Path::new("a.bin"), "job-1", &r, None),
            "a.bin [job-1] ok crc32 1c291ca3 over 17 bytes x 2"
        );
        assert_eq!(
            result_line(Path::new("a.bin"), "job-1", &r, Some(Path::new("out/a.json"))),
            "a.bin [job-1] ok crc32 1c291ca3 over 17 bytes x 2 -> out/a.json"
        );
        assert_eq!(no_result_line(Path::new("a.bin"), "job-1", &"timed out"), "a.bin [job-1] error: timed out");
    }

    #[test]
    fn totals_count_results_only_when_they_were_awaited() {
        assert_eq!(totals(3, 1, true), "4 jobs: 3 ok, 1 failed");
        assert_eq!(totals(3, 0, false), "3 jobs published and confirmed");
    }
}
