//! Turning files and directories into jobs.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use warren_common::Job;
use warren_common::checksum::ChecksumJob;
use warren_common::classify::ClassifyJob;
use warren_common::image_io::Format;
use warren_common::resize::{Filter, ResizeJob, ResizeMode};

/// What to make of each input file.
#[derive(Debug, Clone)]
pub enum JobTemplate {
    Resize {
        width: u32,
        height: u32,
        mode: ResizeMode,
        filter: Filter,
        format: Option<Format>,
        quality: Option<u8>,
    },
    Classify {
        top_k: Option<u32>,
    },
    Checksum {
        rounds: u32,
    },
}

impl JobTemplate {
    pub fn job(&self, data: Vec<u8>) -> Job {
        match self.clone() {
            Self::Resize {
                width,
                height,
                mode,
                filter,
                format,
                quality,
            } => Job::Resize(ResizeJob {
                image: data,
                width,
                height,
                mode,
                filter,
                format,
                quality,
            }),
            Self::Classify { top_k } => Job::Classify(ClassifyJob { image: data, top_k }),
            Self::Checksum { rounds } => Job::Checksum(ChecksumJob { data, rounds }),
        }
    }

    fn wants_images(&self) -> bool {
        !matches!(self, Self::Checksum { .. })
    }
}

/// The files named, with directories expanded (recursively, sorted); for image kinds only files
/// with an image extension are taken from directories.
pub fn collect(paths: &[PathBuf], template: &JobTemplate) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
        if meta.is_dir() {
            walk(p, template.wants_images(), &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, images_only: bool, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        if path.is_dir() {
            walk(&path, images_only, out)?;
        } else if !images_only || is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn is_image(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg" | "webp"))
}
