//! Payloads by reference (issue 28): bytes fields given as `{"ref": ...}`, fetched by the worker
//! from a real S3-compatible server (s3s-fs, `warren_e2e::s3`) or a directory, and outputs
//! written back under `output_to`, against the real broker and worker.

use std::time::{Duration, Instant};

use image::ImageEncoder as _;
use rstest::rstest;
use warren_common::headers as h;
use warren_common::resize::{Filter, Resize, ResizeJob, ResizeMode};
use warren_common::{Encoding, Job, JobResult, Ref, ResultStatus};
use warren_e2e::https::HttpsServer;
use warren_e2e::s3::S3Server;
use warren_e2e::{DEADLINE, TempDir, Vhost, collect_messages, fleet_and_producer, settings_for, vhost, want_result};
use warren_infra::{Settings, fields};
use warren_producer::PublishOptions;

/// Pixels of a picture that compresses like a photo's noise would not: a gradient with grain.
fn picture(width: u32, height: u32, grain: u32) -> image::RgbImage {
    let mut seed = 0x2545_f491_u32;
    image::RgbImage::from_fn(width, height, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let g = (seed % grain.max(1)) as u8;
        image::Rgb([(x * 255 / width) as u8 ^ g, (y * 255 / height) as u8 ^ g, ((x + y) % 256) as u8 ^ g])
    })
}

fn jpeg(img: &image::RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(img).expect("jpeg");
    out
}

fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::NoFilter,
    )
    .write_image(img, img.width(), img.height(), image::ExtendedColorType::Rgb8)
    .expect("png");
    out
}

/// A thumbnail job of `image` (bytes, or a reference's bytes) to fit 320x320 as JPEG.
fn thumbnail(image: Vec<u8>) -> ResizeJob {
    ResizeJob {
        image,
        width: 320,
        height: 320,
        mode: ResizeMode::Fit,
        filter: Filter::Triangle,
        format: Some(warren_common::image_io::Format::Jpeg),
        quality: Some(80),
    }
}

/// A thumbnail job of the image at `url`.
fn by_ref(url: impl Into<String>) -> Job {
    Job::from(thumbnail(Ref::new(url).expect("a reference").to_bytes()))
}

/// How many times a job was set aside because its store did not answer, by `fleet`'s metrics.
fn set_aside(fleet: &warren_e2e::Fleet) -> f64 {
    fleet.scrape().value("warren_job_errors_total", &[("error_type", "store_unavailable")])
}

fn s3_settings(vhost: &Vhost, s3: &S3Server) -> Settings {
    let mut settings = settings_for(vhost);
    settings.store = s3.settings();
    settings
}

/// A worker's settings trusting `server`'s CA, and a photo of `width` x `height` it serves at
/// `/photo.jpg`.
fn https_settings(vhost: &Vhost, server: &HttpsServer, (width, height): (u32, u32)) -> Settings {
    server.put("photo.jpg", &jpeg(&picture(width, height, 16), 85));
    let mut settings = settings_for(vhost);
    settings.store.ca_file = server.ca_file();
    settings
}

/// The output image a result refers to, read from the server, with its dimensions.
fn stored_output(s3: &S3Server, r: &JobResult) -> (Ref, image::DynamicImage) {
    let Some(out) = r.output_as::<Resize>() else { panic!("not a resize output: {r:?}") };
    let at = Ref::from_bytes(&out.image).unwrap_or_else(|| panic!("the output is not a reference: {out:?}"));
    let (bucket, key) = at.url().strip_prefix("s3://").and_then(|k| k.split_once('/')).expect("an s3 reference");
    let bytes = s3.get(bucket, key).unwrap_or_else(|| panic!("{at} is not stored"));
    let img = image::load_from_memory(&bytes).expect("the stored output is an image");
    assert_eq!((img.width(), img.height()), (out.width, out.height), "{at}");
    (at, img)
}

/// A camera's 4000x3000 JPEG and a 40 MB PNG (over the worker's 16 MiB body limit, refused when
/// sent inline) are resized by reference, JSON and bincode, their outputs written back to the
/// store under `output_to`; results carry references.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_images_are_resized_by_reference_and_their_outputs_written_back(vhost: Vhost) {
    let s3 = S3Server::start(&["inputs", "outputs"]).await;
    let camera = jpeg(&picture(4000, 3000, 24), 92);
    let scan = png(&picture(4096, 3400, 256));
    s3.put("inputs", "camera/4000x3000.jpg", &camera);
    s3.put("inputs", "scans/big.png", &scan);
    let settings = s3_settings(&vhost, &s3);
    assert!(scan.len() > 40_000_000 && scan.len() > settings.limits.max_body_bytes, "{} bytes", scan.len());
    println!("camera JPEG {} bytes, scan PNG {} bytes", camera.len(), scan.len());
    let (fleet, producer) = fleet_and_producer(&settings).await;
    for (url, source, encoding) in [
        ("s3://inputs/camera/4000x3000.jpg", (4000, 3000), Encoding::Json),
        ("s3://inputs/camera/4000x3000.jpg", (4000, 3000), Encoding::Bincode),
        ("s3://inputs/scans/big.png", (4096, 3400), Encoding::Json),
    ] {
        let job = by_ref(url);
        let opts = PublishOptions { encoding: Some(encoding), ..want_result() }.output_to("s3://outputs/thumbs/");
        let started = Instant::now();
        let ticket = producer.publish(&job, &opts).await.expect("publish");
        let job_id = ticket.job_id.clone();
        let r = ticket.wait(DEADLINE).await.expect("result");
        assert_eq!(r.status, ResultStatus::Ok, "{url} {encoding}: {r:?}");
        let out = r.output_as::<Resize>().expect("resize output");
        assert_eq!((out.source_width, out.source_height), source, "{url}");
        let (at, img) = stored_output(&s3, &r);
        assert_eq!(at.url(), format!("s3://outputs/thumbs/{job_id}/0.jpg"), "named by the job id");
        assert!(img.width() <= 320 && img.height() <= 320 && img.width().max(img.height()) == 320);
        println!("{url} ({encoding}): {:?} to answer, output {at}", started.elapsed());
    }
    // The JSON result names the object and its size.
    let job = by_ref("s3://inputs/camera/4000x3000.jpg");
    let opts = PublishOptions { encoding: Some(Encoding::Json), ..want_result() }.output_to("s3://outputs/json");
    let r = producer.publish(&job, &opts).await.expect("publish").wait(DEADLINE).await.expect("result");
    let json = r.output.as_ref().and_then(|o| o.to_json()).expect("json output");
    let url = json["image"]["ref"].as_str().expect("a reference");
    let key = url.strip_prefix("s3://outputs/").expect("under output_to");
    assert!(key.starts_with("json/"), "{json}");
    let object = s3.get("outputs", key).expect("stored");
    assert_eq!(json["image"]["size"].as_u64(), Some(object.len() as u64), "{json}");
    // Without output_to the output comes inline, as before.
    let job = by_ref("s3://inputs/camera/4000x3000.jpg");
    let r = producer.publish(&job, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("result");
    let out = r.output_as::<Resize>().expect("resize output");
    assert!(Ref::from_bytes(&out.image).is_none() && image::load_from_memory(&out.image).is_ok(), "inline bytes");
    // The same scan sent inline is over the body limit.
    let inline = Job::from(thumbnail(scan));
    let opts = PublishOptions { encoding: Some(Encoding::Bincode), ..want_result() };
    let r = producer.publish(&inline, &opts).await.expect("publish").wait(DEADLINE).await.expect("result");
    assert_eq!(r.error.map(|e| e.error_type).as_deref(), Some("body_too_large"));
    producer.close().await;
    fleet.stop().await;
}

/// A missing object, wrong credentials, an object over `limits.max_ref_bytes`, a reference the
/// worker may not follow: each is a permanent error of its own type, dead-lettered with the
/// reason, and no credential appears in any result or dead letter.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_denied_and_oversized_references_are_dead_lettered_with_their_types(vhost: Vhost) {
    let s3 = S3Server::start(&["inputs"]).await;
    s3.put("inputs", "photo.jpg", &jpeg(&picture(640, 480, 8), 85));
    let mut settings = s3_settings(&vhost, &s3);
    settings.limits.max_ref_bytes = 1_000_000;
    s3.put("inputs", "huge.bin", &vec![7u8; 1_000_001]);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let cases = [
        ("s3://inputs/nope.jpg", "ref_not_found"),
        ("s3://inputs/huge.bin", "limit_exceeded"),
        ("s3://nobucket/x.jpg", "ref_not_found"),
        ("file:///etc/passwd", "ref_denied"),
    ];
    for (url, error_type) in cases {
        let job = by_ref(url);
        let r = producer.publish(&job, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("result");
        let e = r.error.as_ref().unwrap_or_else(|| panic!("{url}: {r:?}"));
        assert_eq!((e.error_type.as_str(), r.attempt), (error_type, 0), "{url}: {e:?}");
        assert!(e.message.contains(url), "{url}: the message names it: {}", e.message);
    }
    // An output_to the worker cannot write is refused before any work.
    let job = by_ref("s3://inputs/photo.jpg");
    let r = producer
        .publish(&job, &want_result().output_to("https://example.com/out/"))
        .await
        .expect("publish")
        .wait(DEADLINE)
        .await
        .expect("result");
    assert_eq!(r.error.map(|e| e.error_type).as_deref(), Some("invalid_params"));
    let dead = collect_messages(&settings, "warren.image.resize.dead", cases.len() + 1, DEADLINE).await;
    for d in &dead {
        let reason = fields::get_str(d.properties.headers().as_ref(), h::DEAD_REASON).unwrap_or_default();
        assert_eq!(reason, "permanent_error");
    }
    producer.close().await;
    fleet.stop().await;

    // Wrong credentials: denied, and neither the key nor the secret appears anywhere.
    let mut wrong = settings.clone();
    wrong.store.s3_access_key_id = s3.access_key.clone();
    wrong.store.s3_secret_access_key = warren_infra::settings::Secret("not-the-secret-0123456789".into());
    let (fleet, producer) = fleet_and_producer(&wrong).await;
    let job = by_ref("s3://inputs/photo.jpg");
    let r = producer.publish(&job, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("result");
    let e = r.error.as_ref().expect("an error");
    assert_eq!(e.error_type, "ref_denied", "{e:?}");
    // The first five were taken above.
    let dead = collect_messages(&settings, "warren.image.resize.dead", 1, DEADLINE).await;
    let table = dead[0].properties.headers().clone().unwrap_or_default();
    let headers: String =
        table.inner().keys().filter_map(|k| fields::get_str(Some(&table), k.as_str())).collect::<Vec<_>>().join(" ");
    assert!(headers.contains("ref_denied"), "{headers}");
    for secret in [&s3.secret_key, "not-the-secret-0123456789", &s3.access_key] {
        assert!(!e.message.contains(secret) && !headers.contains(secret), "{secret} leaked: {} {headers}", e.message);
    }
    producer.close().await;
    fleet.stop().await;
}

/// The store stopped mid-run: jobs by reference are set aside (no attempt spent) while jobs
/// without references go on being answered; once it is back, every job is answered.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_stopped_mid_run_pauses_only_its_jobs_and_every_job_is_answered(vhost: Vhost) {
    let mut s3 = S3Server::start(&["inputs", "outputs"]).await;
    let photo = jpeg(&picture(1280, 960, 16), 85);
    const JOBS: usize = 60;
    for i in 0..JOBS {
        s3.put("inputs", &format!("p/{i}.jpg"), &photo);
    }
    let mut settings = s3_settings(&vhost, &s3);
    settings.store.timeout_ms = 1_000;
    settings.store.retries = 0;
    settings.retry.base_delay_ms = 200;
    settings.retry.max_delay_ms = 1_000;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let mut tickets = Vec::new();
    for i in 0..JOBS {
        let job = by_ref(format!("s3://inputs/p/{i}.jpg"));
        tickets.push(producer.publish(&job, &want_result().output_to("s3://outputs/t/")).await.expect("publish"));
        if i == 10 {
            s3.stop().await;
        }
    }
    // While it is down, jobs without references are answered.
    let started = Instant::now();
    let answered = warren_e2e::answer_checksum_jobs(&producer, 20).await;
    println!("store down: 20 checksum jobs answered in {:?}", started.elapsed());
    assert_eq!(answered.len(), 20);
    tokio::time::sleep(Duration::from_secs(2)).await; // the store stays down a while (what is tested)
    s3.restart().await;
    for t in tickets {
        let r = t.wait(DEADLINE).await.expect("result");
        assert_eq!(r.status, ResultStatus::Ok, "{r:?}");
        assert_eq!(r.attempt, 0, "no attempt spent while the store was down");
        stored_output(&s3, &r);
    }
    let set_aside = set_aside(&fleet);
    println!("all {JOBS} jobs by reference answered; {set_aside} times one was set aside while the store was down");
    assert!(set_aside >= 1.0, "the store's outage was met");
    producer.close().await;
    fleet.stop().await;
}

/// A store that hangs (stopped with SIGSTOP: it accepts connections and never answers) rather
/// than refusing them: each transfer gives up after its time budget, the jobs are set aside
/// without spending an attempt while jobs without references are answered, and once it goes on
/// every job is answered.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_hangs_pauses_only_its_jobs_and_every_job_is_answered(vhost: Vhost) {
    let s3 = S3Server::start(&["inputs", "outputs"]).await;
    let photo = jpeg(&picture(640, 480, 16), 85);
    const JOBS: usize = 12;
    for i in 0..JOBS {
        s3.put("inputs", &format!("h/{i}.jpg"), &photo);
    }
    let mut settings = s3_settings(&vhost, &s3);
    (settings.store.timeout_ms, settings.store.retries) = (500, 0);
    (settings.retry.base_delay_ms, settings.retry.max_delay_ms) = (200, 1_000);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    s3.signal("STOP");
    let mut tickets = Vec::new();
    for i in 0..JOBS {
        let job = by_ref(format!("s3://inputs/h/{i}.jpg"));
        tickets.push(producer.publish(&job, &want_result().output_to("s3://outputs/h/")).await.expect("publish"));
    }
    warren_e2e::eventually("jobs set aside while the store hangs", || async { set_aside(&fleet) >= JOBS as f64 }).await;
    let answered = warren_e2e::answer_checksum_jobs(&producer, 20).await;
    assert_eq!(answered.len(), 20, "jobs without references are answered meanwhile");
    s3.signal("CONT");
    for t in tickets {
        let r = t.wait(DEADLINE).await.expect("result");
        assert_eq!((r.status, r.attempt), (ResultStatus::Ok, 0), "{r:?}");
        stored_output(&s3, &r);
    }
    println!("a hanging store: {} set-asides, all {JOBS} jobs answered once it went on", set_aside(&fleet));
    producer.close().await;
    fleet.stop().await;
}

/// A drain that comes while a job waits on its references' fetch (the store hangs) hands the job
/// back at the drain timeout, rather than waiting out the fetch's own (30 s here) or the settle
/// bound; the job is answered by the next worker once the store goes on.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_hands_back_a_job_waiting_on_its_fetch(vhost: Vhost) {
    let s3 = S3Server::start(&["inputs", "outputs"]).await;
    s3.put("inputs", "d.jpg", &jpeg(&picture(320, 240, 16), 85));
    let mut settings = s3_settings(&vhost, &s3);
    (settings.store.timeout_ms, settings.store.retries) = (30_000, 0);
    settings.consumer.drain_timeout_ms = 1_000;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    s3.signal("STOP");
    let job = by_ref("s3://inputs/d.jpg");
    let ticket = producer.publish(&job, &want_result()).await.expect("publish");
    let queue = "warren.image.resize";
    warren_e2e::eventually("the job delivered to the worker", || async {
        warren_e2e::queue_depth(&settings, queue).await == 0
    })
    .await;
    let started = Instant::now();
    fleet.stop().await;
    let stopped_in = started.elapsed();
    println!("a drain with a fetch hanging: stopped in {stopped_in:?}");
    assert!(stopped_in < Duration::from_secs(6), "the drain timeout (1 s) cut the fetch: {stopped_in:?}");
    assert_eq!(warren_e2e::queue_depth(&settings, queue).await, 1, "the job is back in its queue");
    s3.signal("CONT");
    let fleet = warren_e2e::Fleet::start(settings.clone()).await;
    let r = ticket.wait(DEADLINE).await.expect("result");
    assert_eq!((r.status, r.attempt), (ResultStatus::Ok, 0), "{r:?}");
    producer.close().await;
    fleet.stop().await;
}

/// `file://` references on a temporary directory (the worker's `store.file_roots`), the output
/// written there too; a reference outside the roots is denied.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_references_are_read_and_written_under_the_roots(vhost: Vhost) {
    let dir = TempDir::new("warren-refs").expect("dir");
    let photo = jpeg(&picture(2000, 1500, 16), 88);
    std::fs::write(dir.path().join("in.jpg"), &photo).expect("write");
    let mut settings = settings_for(&vhost);
    settings.store.file_roots = vec![dir.path().to_path_buf()];
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let url = format!("file://{}/in.jpg", dir.path().display());
    let out = format!("file://{}/out/", dir.path().display());
    let job = by_ref(&url);
    let ticket = producer.publish(&job, &want_result().output_to(&out)).await.expect("publish");
    let job_id = ticket.job_id.clone();
    let r = ticket.wait(DEADLINE).await.expect("result");
    assert_eq!(r.status, ResultStatus::Ok, "{r:?}");
    let output = r.output_as::<Resize>().expect("output");
    let at = Ref::from_bytes(&output.image).expect("a reference");
    assert_eq!(at.url(), format!("{out}{job_id}/0.jpg"));
    let written = std::fs::read(dir.path().join("out").join(&job_id).join("0.jpg")).expect("written");
    let img = image::load_from_memory(&written).expect("an image");
    assert_eq!((img.width(), img.height()), (320, 240));
    let outside = by_ref("file:///etc/hostname");
    let r = producer.publish(&outside, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("result");
    assert_eq!(r.error.map(|e| e.error_type).as_deref(), Some("ref_denied"));
    // No S3 store configured here: an s3:// reference is refused at once, not tried.
    let s3 = by_ref("s3://inputs/a.jpg");
    let r = producer.publish(&s3, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("result");
    let e = r.error.expect("an error");
    assert_eq!((e.error_type.as_str(), r.attempt), ("ref_denied", 0), "{}", e.message);
    assert!(e.message.contains("no S3 store configured"), "{}", e.message);
    // The producer's binary: --ref and --output-to.
    let cli_out = format!("file://{}/cli/", dir.path().display());
    let run = tokio::process::Command::new(warren_e2e::bin("warren-producer"))
        .args(["submit", "--kind", "image.resize", "--job", r#"{"width": 100, "height": 100}"#])
        .args(["--ref", &format!("image={url}"), "--output-to", &cli_out, "--wait"])
        .env("WARREN_CONFIG_DIR", warren_e2e::repo_root().join("config"))
        .env("WARREN__BROKER__URL", vhost.amqp_url())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("warren-producer runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains(&format!("\"ref\": \"{cli_out}")), "the result names the stored output: {stdout}");
    let written: Vec<_> = std::fs::read_dir(dir.path().join("cli")).expect("cli outputs").collect();
    assert_eq!(written.len(), 1, "one job's directory");
    producer.close().await;
    fleet.stop().await;
}

/// Presigned `https://` URLs (a real HTTPS server with a CA of the test's, trusted through
/// `store.ca_file`): read with one GET; 404 is `ref_not_found`, 403 `ref_denied`, and the
/// URL's query (where the signature is) appears in no error; a host not in
/// `store.https_hosts` is refused without a request.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_https_urls_are_read_and_their_signatures_never_shown(vhost: Vhost) {
    let server = HttpsServer::start().await;
    let mut settings = https_settings(&vhost, &server, (1600, 1200));
    settings.store.https_hosts = vec![format!("127.0.0.1:{}", server.port)];
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let signed =
        |path: &str| format!("{}?X-Amz-Credential=AKIDSIGNED&X-Amz-Signature=0123456789abcdef", server.url(path));
    let job = by_ref(signed("photo.jpg"));
    let r = producer.publish(&job, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("result");
    assert_eq!(r.status, ResultStatus::Ok, "{r:?}");
    let out = r.output_as::<Resize>().expect("output");
    assert_eq!((out.source_width, out.source_height, out.width, out.height), (1600, 1200, 320, 240));
    for (path, error_type) in
        [("missing.jpg", "ref_not_found"), ("status/403", "ref_denied"), ("status/410", "ref_not_found")]
    {
        let job = by_ref(signed(path));
        let r = producer.publish(&job, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("result");
        let e = r.error.as_ref().unwrap_or_else(|| panic!("{path}: {r:?}"));
        assert_eq!(e.error_type, error_type, "{path}: {e:?}");
        assert!(e.message.contains(&server.url(path)), "{path}: names the URL: {}", e.message);
        assert!(!e.message.contains("0123456789abcdef") && !e.message.contains("AKIDSIGNED"), "{}", e.message);
    }
    // The same server by another name, not in store.https_hosts: refused before any request.
    let elsewhere = by_ref(format!("https://localhost:{}/photo.jpg", server.port));
    let r = producer.publish(&elsewhere, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("result");
    let e = r.error.expect("refused");
    assert_eq!((e.error_type.as_str(), r.attempt), ("ref_denied", 0), "{}", e.message);
    assert!(e.message.contains("store.https_hosts"), "{}", e.message);
    assert_eq!(server.requests("photo.jpg"), 1, "only the first job's GET reached the server");
    producer.close().await;
    fleet.stop().await;
}

/// `ml.classify` by reference: digits from the store, batched with jobs that carry their bytes
/// (one model run serves both), each answered as the model predicts; a missing object fails
/// alone, the batch around it answered.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_jobs_by_reference_share_model_runs_with_inline_ones(vhost: Vhost) {
    use warren_common::classify::{Classify, ClassifyJob};
    let dir = warren_e2e::repo_root().join("models/digits");
    let s3 = S3Server::start(&["digits"]).await;
    let mut settings = s3_settings(&vhost, &s3);
    settings.consumer.kinds = vec!["ml.classify".into()];
    settings.consumer.pool_size = 1;
    let route = warren_e2e::route(&mut settings, "ml.classify");
    (route.max_batch, route.max_batch_wait_ms) = (8, Some(50));
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).expect("expected")).expect("json");
    let names: Vec<String> = expected["truth"].as_object().expect("truth").keys().take(24).cloned().collect();
    let mut tickets = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let bytes = std::fs::read(dir.join("samples").join(name)).expect("sample");
        // Two of three by reference (JSON and bincode), one in three inline; one reference missing.
        let image = match i % 3 {
            _ if i == 7 => Ref::new("s3://digits/missing.png").expect("ref").to_bytes(),
            0 => bytes,
            _ => {
                s3.put("digits", name, &bytes);
                Ref::new(format!("s3://digits/{name}")).expect("ref").to_bytes()
            }
        };
        let encoding = if i % 2 == 0 { Encoding::Json } else { Encoding::Bincode };
        let opts = PublishOptions { encoding: Some(encoding), ..want_result() };
        let job = Job::from(ClassifyJob { image, top_k: Some(1) });
        tickets.push(producer.publish(&job, &opts).await.expect("publish"));
    }
    for (i, (name, t)) in names.iter().zip(tickets).enumerate() {
        let r = t.wait(DEADLINE).await.expect("result");
        if i == 7 {
            assert_eq!((r.error.expect("missing").error_type.as_str(), r.attempt), ("ref_not_found", 0));
            continue;
        }
        let Some(out) = r.output_as::<Classify>() else { panic!("{name}: {:?}", r.error) };
        let predicted = expected["models"]["f32"]["predicted"][name].as_u64().expect("predicted");
        assert_eq!(u64::from(out.predictions[0].index), predicted, "{name} (job {i})");
    }
    let s = fleet.scrape();
    let (runs, jobs) = (s.value("warren_batch_size_count", &[]), s.value("warren_batch_size_sum", &[]));
    println!("classify by reference: {jobs} jobs in {runs} model runs (max batch 8)");
    assert_eq!(jobs, 23.0, "every job but the missing reference reached the model");
    assert!(runs < 23.0, "jobs by reference and inline shared model runs: {runs} runs");
    producer.close().await;
    fleet.stop().await;
}

/// A URL that answers 503 is `store_unavailable`: the job is set aside without spending an
/// attempt and answered once the URL serves.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_answering_503_sets_its_job_aside_until_it_serves(vhost: Vhost) {
    let server = HttpsServer::start().await;
    let settings = https_settings(&vhost, &server, (800, 600));
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let job = by_ref(server.url("busy/3/photo.jpg"));
    let r = producer.publish(&job, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("result");
    assert_eq!((r.status, r.attempt), (ResultStatus::Ok, 0), "{r:?}");
    let out = r.output_as::<Resize>().expect("output");
    assert_eq!((out.source_width, out.source_height), (800, 600));
    assert_eq!(server.requests("busy/3/photo.jpg"), 4, "three 503s, then the photo");
    assert!(set_aside(&fleet) >= 3.0, "each 503 set the job aside: {}", set_aside(&fleet));
    producer.close().await;
    fleet.stop().await;
}

/// A store that hangs is not tried by every job: after three transfers in a row without an
/// answer its jobs are set aside at once, one probe per pause (1 s, then 2, 4, ...), so it holds
/// no transfer slots; jobs naming another store (a directory here) go on meanwhile. The hanging
/// jobs end at their deadline (6 s), `deadline_exceeded`.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_host_is_not_tried_by_every_job_and_other_stores_go_on(vhost: Vhost) {
    let server = HttpsServer::start().await;
    let dir = TempDir::new("warren-refs").expect("dir");
    std::fs::write(dir.path().join("in.jpg"), jpeg(&picture(640, 480, 16), 85)).expect("write");
    let mut settings = https_settings(&vhost, &server, (640, 480));
    settings.store.file_roots = vec![dir.path().to_path_buf()];
    (settings.store.timeout_ms, settings.store.retries) = (500, 0);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let started = Instant::now();
    let opts = want_result().timeout(Duration::from_secs(6));
    let mut hanging = Vec::new();
    for _ in 0..10 {
        hanging.push(producer.publish(&by_ref(server.url("hang/photo.jpg")), &opts).await.expect("publish"));
    }
    let url = format!("file://{}/in.jpg", dir.path().display());
    for i in 0..20 {
        let r = producer.publish(&by_ref(&url), &want_result()).await.expect("p").wait(DEADLINE).await.expect("r");
        assert_eq!(r.status, ResultStatus::Ok, "file job {i}: {r:?}");
    }
    let others_done = started.elapsed();
    for t in hanging {
        let r = t.wait(DEADLINE).await.expect("answered");
        assert_eq!(r.error.map(|e| e.error_type).as_deref(), Some("deadline_exceeded"));
    }
    let tried = server.requests("hang/photo.jpg");
    println!(
        "a hanging host: 20 jobs of another store answered in {others_done:?}; 10 hanging jobs tried it {tried} times \
         in {:?}",
        started.elapsed()
    );
    // At most one try per job before the breaker opens (the first wave, all in flight at once),
    // then one probe per pause: 1 s and 2 s fit in the 6 s.
    assert!(tried <= 10 + 3, "the hanging host was tried {tried} times");
    assert!(others_done < Duration::from_secs(6), "the other store's jobs waited for the hanging one: {others_done:?}");
    producer.close().await;
    fleet.stop().await;
}
