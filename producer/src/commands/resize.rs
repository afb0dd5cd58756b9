//! `warren-producer resize`: an `image.resize` job for every image in PATHS.

use warren_common::Job;
use warren_common::resize::{Resize, ResizeJob};

use super::files;
use crate::cli::ResizeArgs;
use crate::context::Ctx;
use crate::exit_code::Outcome;

pub async fn run(ctx: &mut Ctx, args: &ResizeArgs) -> anyhow::Result<Outcome> {
    let stamp = |image| Ok(Job::new::<Resize>(ResizeJob { image, ..template(args) }));
    files::publish(ctx, &stamp, true, &args.files).await
}

/// The job every image is stamped into.
fn template(args: &ResizeArgs) -> ResizeJob {
    ResizeJob {
        image: Vec::new(),
        width: args.width,
        height: args.height,
        mode: args.mode,
        filter: args.filter,
        format: args.format,
        quality: args.quality,
    }
}

#[cfg(test)]
mod tests {
    use warren_common::image_io::Format;
    use warren_common::resize::{Filter, ResizeMode};

    use super::*;
    use crate::cli::Command;
    use crate::cli::parse;

    fn job(args: &[&str]) -> ResizeJob {
        let Command::Resize(args) = parse(args) else { panic!("a resize command") };
        template(&args)
    }

    #[test]
    fn the_flags_become_the_job() {
        let j = job(&[
            "resize",
            "--width",
            "128",
            "--height",
            "96",
            "--mode",
            "fill",
            "--filter",
            "catmull_rom",
            "--format",
            "jpeg",
            "--quality",
            "80",
            "samples/images",
        ]);
        assert_eq!((j.width, j.height, j.mode, j.filter), (128, 96, ResizeMode::Fill, Filter::CatmullRom));
        assert_eq!((j.format, j.quality), (Some(Format::Jpeg), Some(80)));
        assert!(j.image.is_empty(), "each file's bytes go in later");
    }

    #[test]
    fn unset_flags_take_the_documented_defaults() {
        let j = job(&["resize", "--width", "8", "--height", "8", "a.png"]);
        assert_eq!((j.mode, j.filter, j.format, j.quality), (ResizeMode::Fit, Filter::Lanczos3, None, None));
    }
}
