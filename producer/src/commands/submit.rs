//! `warren-producer submit`: one job of any kind, its input as JSON, files attached as bytes
//! fields (base64, as the contract writes bytes in JSON); or, with `--each FIELD`, one job per
//! file. A kind this tool was not built with travels as JSON (bincode needs the kind's Rust type).

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use warren_common::{Encoding, Job, Ref, ResultStatus, kind};

use super::files;
use crate::cli::{FilesArgs, SubmitArgs};
use crate::client::PublishOptions;
use crate::context::Ctx;
use crate::exit_code::Outcome;
use crate::output;

pub async fn run(ctx: &mut Ctx, args: &SubmitArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(kind::valid_name(&args.kind), "{:?} is not a job kind's name", args.kind);
    // JSON unless bincode was asked for, which the envelope then refuses with its reason.
    ctx.encoding = Some(ctx.encoding.unwrap_or(Encoding::Json));
    let attached = args.bytes.iter().map(|b| attachment(b)).collect::<anyhow::Result<Vec<_>>>()?;
    let referenced = args.refs.iter().map(|r| reference(r)).collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(field) = &args.each {
        let template = with_refs(named(&args.kind, &args.job, &attached)?, &referenced)?;
        let template = serde_json::to_value(TemplateOf(&template))?;
        let stamp = |data: Vec<u8>| {
            let mut input = template.clone();
            set_bytes(&mut input, field, &data)?;
            Ok(Job::named(args.kind.clone(), input))
        };
        let files = FilesArgs {
            paths: args.paths.clone(),
            wait: args.wait,
            out: args.out.clone(),
            concurrency: args.concurrency,
        };
        return files::publish(ctx, &stamp, false, &files).await;
    }
    let job = with_refs(named(&args.kind, &args.job, &attached)?, &referenced)?;
    if args.wait {
        ctx.producer.enable_replies().await?;
    }
    let mut opts = PublishOptions {
        encoding: ctx.encoding,
        want_result: args.wait,
        priority: args.priority,
        output_to: args.output_to.clone(),
        ..Default::default()
    };
    if let Some(ms) = args.timeout_ms {
        opts = opts.timeout(std::time::Duration::from_millis(ms));
    }
    if let Some(ms) = args.delay_ms {
        opts = opts.delay(std::time::Duration::from_millis(ms));
    }
    let ticket = ctx.producer.publish(&job, &opts).await?;
    let job_id = ticket.job_id.clone();
    if !args.wait {
        println!("[{job_id}] {} published and confirmed", args.kind);
        return Ok(Outcome::from_failures(false));
    }
    let result = ticket.wait(ctx.result_timeout).await?;
    println!("[{job_id}] {}", output::summary(&result));
    if let Some(json) = result.output.as_ref().and_then(|o| o.to_json()) {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(Outcome::from_failures(result.status != ResultStatus::Ok))
}

/// A job of `kind` from JSON text (or @path) with `attached` files as bytes fields.
pub fn named(kind: &str, json: &str, attached: &[(String, Vec<u8>)]) -> anyhow::Result<Job> {
    let text = match json.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => json.to_owned(),
    };
    let mut input: Value = serde_json::from_str(&text).context("the job is not JSON")?;
    anyhow::ensure!(input.is_object(), "the job must be a JSON object (the kind's input)");
    for (field, bytes) in attached {
        set_bytes(&mut input, field, bytes)?;
    }
    Ok(Job::named(kind, input))
}

/// `FIELD=PATH` read into (field, bytes).
fn attachment(arg: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let (field, path) = arg.split_once('=').context("--bytes takes FIELD=PATH")?;
    let bytes = std::fs::read(Path::new(path)).with_context(|| format!("reading {path}"))?;
    Ok((field.to_owned(), bytes))
}

/// `FIELD=URL` read into (field, reference).
fn reference(arg: &str) -> anyhow::Result<(String, Ref)> {
    let (field, url) = arg.split_once('=').context("--ref takes FIELD=URL")?;
    let r = Ref::new(url).map_err(anyhow::Error::msg).with_context(|| format!("--ref {field}"))?;
    Ok((field.to_owned(), r))
}

/// `job` with each reference as its field (`{"ref": url}`).
fn with_refs(job: Job, refs: &[(String, Ref)]) -> anyhow::Result<Job> {
    if refs.is_empty() {
        return Ok(job);
    }
    let mut input = serde_json::to_value(TemplateOf(&job))?;
    let object = input.as_object_mut().context("the job must be a JSON object")?;
    for (field, r) in refs {
        object.insert(field.clone(), serde_json::json!({"ref": r.url()}));
    }
    Ok(Job::named(job.kind().to_owned(), input))
}

fn set_bytes(input: &mut Value, field: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let object = input.as_object_mut().context("the job must be a JSON object")?;
    object.insert(field.to_owned(), Value::String(STANDARD.encode(bytes)));
    Ok(())
}

/// A named job's input, back as JSON (to stamp copies of it).
struct TemplateOf<'a>(&'a Job);

impl serde::Serialize for TemplateOf<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_input(s)
    }
}

#[cfg(test)]
mod tests {
    use warren_common::JobEnvelope;

    use super::*;

    #[test]
    fn files_become_base64_fields_of_the_json_input() {
        let job = named("image.blurhash", r#"{"x": 4}"#, &[("image".into(), vec![1, 2, 3])]).unwrap();
        let body = JobEnvelope::encode(&job, Encoding::Json).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({"version": 1, "kind": "image.blurhash", "job": {"x": 4, "image": "AQID"}}));
        assert!(named("k", "[1]", &[]).is_err(), "an input is an object");
        assert!(attachment("no-equals").is_err());
        let refs = [reference("image=s3://in/a.jpg").unwrap()];
        let job = with_refs(named("image.resize", r#"{"width": 8}"#, &[]).unwrap(), &refs).unwrap();
        let v: Value = serde_json::from_slice(&JobEnvelope::encode(&job, Encoding::Json).unwrap()).unwrap();
        assert_eq!(v["job"], serde_json::json!({"width": 8, "image": {"ref": "s3://in/a.jpg"}}));
        assert!(reference("image=ftp://x/y").is_err(), "not a reference");
        assert!(reference("image").is_err());
    }
}
