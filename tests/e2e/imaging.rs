//! Scaled JPEG decoding keeps the quality a Python service gets from Pillow's draft mode: for
//! every resize mode and filter on the sample photos, and at the sizes where a scale starts or
//! stops covering the output (crops whose sides are not multiples of 8), Warren's output (the
//! workers' pipeline, PNG so only the resampling differs) is compared by PSNR with a
//! full-decode Lanczos reference made by Pillow, beside Pillow's own draft-mode output against
//! the same reference.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;
use warren_common::Limits;
use warren_common::image_io::Format;
use warren_common::resize::{Filter, ResizeJob, ResizeMode, resize};
use warren_e2e::{TempDir, repo_root};

const IMAGES: [&str; 5] = [
    "images/china.jpg",
    "photos/photo_1920x1080.jpg",
    "photos/photo_4000x3000.jpg",
    "images/flower.png",
    "images/china_small.webp",
];
const MODES: [ResizeMode; 3] = [ResizeMode::Fit, ResizeMode::Fill, ResizeMode::Exact];
const FILTERS: [Filter; 5] =
    [Filter::Nearest, Filter::Triangle, Filter::CatmullRom, Filter::Gaussian, Filter::Lanczos3];
const SIZES: [(u32, u32); 2] = [(256, 256), (100, 75)];

/// Crops of the 1920x1080 photo (its top-left corner, JPEG quality 90, 4:2:0, written by
/// Pillow) whose sides are not all multiples of 8: at 1/d libjpeg-turbo decodes them to
/// ceil(side / d), one more pixel than the image at exactly 1/d holds.
const BOUNDARY_CROPS: [(u32, u32); 3] = [(1913, 1080), (1919, 1079), (641, 427)];
const BOUNDARY_FILTERS: [Filter; 4] = [Filter::Nearest, Filter::Triangle, Filter::CatmullRom, Filter::Lanczos3];

/// `Exact` outputs of a `w x h` source that need, on one side, as many pixels as libjpeg-turbo's
/// rounded-up 1/d decode has (ceil(side / d), times the filter's margin) where that is more than
/// the image at exactly 1/d holds; the other side is covered at 1/d. Pillow's `draft()` decodes
/// those at a larger scale than 1/d, and so must Warren.
fn boundary_outputs(w: u32, h: u32, filter: Filter) -> Vec<(u32, u32)> {
    let margin = filter.decode_margin();
    let mut outputs = Vec::new();
    for d in [2, 4, 8] {
        let at_boundary = |side: u32| !side.is_multiple_of(d) && side.div_ceil(d).is_multiple_of(margin);
        let covered = |side: u32| side / d / margin;
        if at_boundary(w) && covered(h) > 0 {
            outputs.push((w.div_ceil(d) / margin, covered(h)));
        }
        if at_boundary(h) && covered(w) > 0 {
            outputs.push((covered(w), h.div_ceil(d) / margin));
        }
    }
    outputs
}

/// How far below Pillow-draft's PSNR Warren may fall and still count as "not worse". The two
/// resamplers (`fast_image_resize`, Pillow's) place and weigh samples slightly differently: on
/// the PNG and WebP photos, where no decode is scaled, Warren's nearest and Catmull-Rom land up
/// to 0.17 dB either side of Pillow's. A quarter of a dB is below what anyone can see.
const TOLERANCE_DB: f64 = 0.25;

/// Above this PSNR two images are the same to the eye (beyond JPEG quality 95's own error);
/// where Pillow's draft path decodes at full size it *is* the reference (infinite PSNR), and
/// Warren's different resampler then scores 55-58 dB: a tie, not a loss.
const SAME_DB: f64 = 50.0;

/// PSNR of the PNG at `a` against the one at `b`, over RGBA (the PNG with alpha keeps it).
fn psnr(a: &Path, b: &Path) -> f64 {
    let load = |p: &Path| image::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).to_rgba8();
    warren_common::quality::psnr(&load(a), &load(b)).unwrap_or_else(|e| panic!("{}: {e}", a.display()))
}

fn snake(value: impl serde::Serialize) -> String {
    serde_json::to_value(value).expect("serialises").as_str().expect("a string").to_owned()
}

struct Case {
    id: String,
    label: String,
    filter: Filter,
}

/// Runs python3 (or `$PYTHON`) on tests/e2e/pillow_resize.py with `request` on stdin; returns
/// its output line.
fn pillow(request: &serde_json::Value) -> String {
    let mut python = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(repo_root().join("tests/e2e/pillow_resize.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/setup.sh installs Pillow)");
    serde_json::to_writer(python.stdin.take().expect("stdin"), request).expect("request");
    let done = python.wait_with_output().expect("python");
    assert!(done.status.success(), "pillow_resize.py failed");
    String::from_utf8_lossy(&done.stdout).trim().to_owned()
}

/// The images and jobs compared: every sample in every mode, filter and size, then each
/// boundary crop (made by Pillow in `dir`) at its boundary outputs. Each job with its image's
/// path and name.
fn jobs(dir: &Path) -> Vec<(PathBuf, String, ResizeJob)> {
    let job = |image: &[u8], (width, height), mode, filter| ResizeJob {
        image: image.to_vec(),
        width,
        height,
        mode,
        filter,
        format: Some(Format::Png),
        quality: None,
    };
    let mut jobs = Vec::new();
    for name in IMAGES {
        let path: PathBuf = repo_root().join("samples").join(name);
        let bytes = std::fs::read(&path).expect("sample");
        for mode in MODES {
            for filter in FILTERS {
                for size in SIZES {
                    jobs.push((path.clone(), name.to_owned(), job(&bytes, size, mode, filter)));
                }
            }
        }
    }
    let photo = repo_root().join("samples/photos/photo_1920x1080.jpg");
    let crops: Vec<_> = BOUNDARY_CROPS
        .iter()
        .map(|(w, h)| json!({"image": photo, "box": [0, 0, w, h], "out": dir.join(format!("crop_{w}x{h}.jpg"))}))
        .collect();
    pillow(&json!({"out": dir, "crops": crops, "cases": []}));
    for (w, h) in BOUNDARY_CROPS {
        let path = dir.join(format!("crop_{w}x{h}.jpg"));
        let bytes = std::fs::read(&path).expect("crop");
        for filter in BOUNDARY_FILTERS {
            for size in boundary_outputs(w, h, filter) {
                jobs.push((path.clone(), format!("crop {w}x{h}"), job(&bytes, size, ResizeMode::Exact, filter)));
            }
        }
    }
    jobs
}

#[test]
fn scaled_decoding_is_not_worse_than_pillows_draft_mode() {
    let temp = TempDir::new("warren-imaging").expect("temp dir");
    let dir = temp.path();
    let mut cases = Vec::new();
    let mut requests = Vec::new();
    for (path, name, job) in jobs(dir) {
        let out = resize(&job, &Limits::default()).expect("resize");
        let id = format!("{}", cases.len());
        std::fs::write(dir.join(format!("{id}.warren.png")), &out.image).expect("write");
        let g = job.geometry(out.source_width, out.source_height);
        assert_eq!(g.output, (out.width, out.height));
        requests.push(json!({
            "id": id, "image": path, "filter": snake(job.filter),
            "output": g.output, "scaled": g.scaled, "region": g.region,
        }));
        let label = format!("{name} {} {}x{}", snake(job.mode), job.width, job.height);
        cases.push(Case { id, label, filter: job.filter });
    }
    println!("{}", pillow(&json!({"out": dir, "cases": requests})));

    println!(
        "{:<34} {:<12} {:>9} {:>12} {:>9} {:>10}",
        "case", "filter", "Warren dB", "Pillow-draft", "margin", "thumbnail"
    );
    let mut worse = Vec::new();
    let (mut margins, mut vs_thumbnail) = (Vec::new(), Vec::new());
    for case in &cases {
        let file = |side: &str| dir.join(format!("{}.{side}.png", case.id));
        let warren = psnr(&file("warren"), &file("reference"));
        let filter = snake(case.filter);
        if case.filter == Filter::Gaussian {
            println!("{:<34} {filter:<12} {warren:>9.2} {:>12} {:>9} {:>10}", case.label, "-", "-", "-");
            continue;
        }
        let (draft, thumbnail) =
            (psnr(&file("draft"), &file("reference")), psnr(&file("thumbnail"), &file("reference")));
        println!(
            "{:<34} {filter:<12} {warren:>9.2} {draft:>12.2} {:>+9.2} {thumbnail:>10.2}",
            case.label,
            warren.min(SAME_DB) - draft.min(SAME_DB)
        );
        margins.push(warren.min(SAME_DB) - draft.min(SAME_DB));
        vs_thumbnail.push(warren.min(SAME_DB) - thumbnail.min(SAME_DB));
        if warren.min(SAME_DB) < draft.min(SAME_DB) - TOLERANCE_DB {
            worse.push(format!("{} {filter}: {warren:.2} dB against Pillow-draft's {draft:.2}", case.label));
        }
    }
    let range = |v: &[f64]| {
        (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max))
    };
    println!(
        "Warren minus Pillow-draft (both capped at {SAME_DB} dB): {:+.2} to {:+.2} dB over {} cases; minus Pillow \
         thumbnail(): {:+.2} to {:+.2} dB",
        range(&margins).0,
        range(&margins).1,
        margins.len(),
        range(&vs_thumbnail).0,
        range(&vs_thumbnail).1
    );
    drop(temp);
    assert!(worse.is_empty(), "worse than Pillow's draft mode:\n{}", worse.join("\n"));
}
