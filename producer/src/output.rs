//! Writing results for people: one line per job on stdout, outputs into a directory.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use warren_common::checksum::Checksum;
use warren_common::classify::Classify;
use warren_common::fault::Fault;
use warren_common::resize::Resize;
use warren_common::{JobResult, Output, ResultStatus};

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

/// A one-line summary of a result: the built-in kinds' outputs in words, any other kind's as
/// its JSON (clipped).
pub fn summary(result: &JobResult) -> String {
    match (&result.status, &result.output, &result.error) {
        (ResultStatus::Ok, Some(output), _) => format!("ok {}", output_summary(output)),
        (_, _, Some(e)) => format!("error {} ({}): {}", e.error_type, e.class.as_str(), e.message),
        _ => "error: result with neither output nor error".to_owned(),
    }
}

fn output_summary(output: &Output) -> String {
    if let Ok(r) = output.decode::<Resize>() {
        return format!(
            "{}x{} -> {}x{} {} ({} bytes)",
            r.source_width,
            r.source_height,
            r.width,
            r.height,
            r.format.as_str(),
            r.image.len()
        );
    }
    if let Ok(c) = output.decode::<Classify>() {
        let top: Vec<String> = c.predictions.iter().map(|p| format!("{} {:.3}", p.label, p.score)).collect();
        return format!("{}: {}", c.model, top.join(", "));
    }
    if let Ok(f) = output.decode::<Fault>() {
        return format!("on attempt {}", f.attempt);
    }
    if let Ok(c) = output.decode::<Checksum>() {
        return format!("crc32 {:08x} over {} bytes x {}", c.crc32, c.bytes, c.rounds);
    }
    match output.to_json() {
        Some(json) => {
            let text = json.to_string();
            let clipped: String = text.chars().take(100).collect();
            let more = if clipped.len() < text.len() { "..." } else { "" };
            format!("{}: {clipped}{more}", output.kind())
        }
        None => format!("{} (a bincode output; ask for JSON to read it here)", output.kind()),
    }
}

/// Writes a result's output next to others in `dir`: images as files, everything else as JSON.
/// Returns the path written.
pub fn write(dir: &Path, input: &Path, result: &JobResult) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = input.file_stem().and_then(|s| s.to_str()).unwrap_or("job");
    let resized = result.output.as_ref().and_then(|o| o.decode::<Resize>().ok());
    let (path, bytes) = match (&result.output, resized) {
        (_, Some(r)) => (dir.join(format!("{stem}.{}", r.format.extension())), r.image),
        (Some(output), None) => {
            let json = output_json(output).context("a bincode output of a kind this tool does not know")?;
            (dir.join(format!("{stem}.json")), serde_json::to_vec_pretty(&json)?)
        }
        (None, None) => (dir.join(format!("{stem}.error.json")), serde_json::to_vec_pretty(&result.error)?),
    };
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// An output as JSON: as it came when it came as JSON; a built-in kind's from its type when it
/// came as bincode.
fn output_json(output: &Output) -> Option<serde_json::Value> {
    fn typed<K: warren_common::Kind>(o: &Output) -> Option<serde_json::Value> {
        o.decode::<K>().ok().and_then(|v| serde_json::to_value(v).ok())
    }
    output
        .to_json()
        .or_else(|| typed::<Resize>(output))
        .or_else(|| typed::<Classify>(output))
        .or_else(|| typed::<Checksum>(output))
        .or_else(|| typed::<Fault>(output))
}

#[cfg(test)]
mod tests {
    use warren_common::Timing;
    use warren_common::checksum::ChecksumOutput;

    use super::*;

    fn checksum_result() -> JobResult {
        let output = Output::new::<Checksum>(ChecksumOutput { crc32: 0x1c29_1ca3, bytes: 17, rounds: 2 });
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
    fn any_other_kind_is_summarised_as_its_json() {
        let body = br#"{"version":1,"job_id":"j","kind":"image.blurhash","status":"ok","output":{"image.blurhash":{"hash":"LEHV6nWB2yk8"}},"error":null,"attempt":0,"worker":"w","timing":{"started_at_us":0,"finished_at_us":0}}"#;
        let r = JobResult::decode(body, warren_common::Encoding::Json).expect("a result");
        assert_eq!(summary(&r), r#"ok image.blurhash: {"hash":"LEHV6nWB2yk8"}"#);
    }

    #[test]
    fn totals_count_results_only_when_they_were_awaited() {
        assert_eq!(totals(3, 1, true), "4 jobs: 3 ok, 1 failed");
        assert_eq!(totals(3, 0, false), "3 jobs published and confirmed");
    }
}
