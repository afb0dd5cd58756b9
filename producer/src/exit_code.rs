//! The exit codes of `warren-producer`, in one place: 0 every job published (and, with `--wait`,
//! every result ok); 1 some job failed or its result did not come in time; 2 a usage,
//! configuration or broker error. clap exits 2 on a usage error itself, before any of this runs.

/// How a command that ran to the end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every job published (and, when results were awaited, every one ok).
    Ok,
    /// Some job failed, was not published, or its result did not come in time.
    JobsFailed,
}

impl Outcome {
    pub fn from_failures(any_failed: bool) -> Self {
        if any_failed { Self::JobsFailed } else { Self::Ok }
    }
}

/// A command that could not run: configuration, connecting, reading inputs, a refused publish.
pub const ERROR: i32 = 2;

/// The process's exit code for how the command ended.
pub fn of(ended: &anyhow::Result<Outcome>) -> i32 {
    match ended {
        Ok(Outcome::Ok) => 0,
        Ok(Outcome::JobsFailed) => 1,
        Err(_) => ERROR,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn the_codes_are_the_documented_ones() {
        assert_eq!(of(&Ok(Outcome::from_failures(false))), 0);
        assert_eq!(of(&Ok(Outcome::from_failures(true))), 1);
        assert_eq!(of(&Err(anyhow::anyhow!("broker down"))), 2);
    }

    #[test]
    fn a_usage_error_exits_with_the_same_code_as_any_other_error() {
        let err =
            Cli::try_parse_from(["warren-producer", "resize", "--width", "1", "--height", "1", "--mode", "x", "a"])
                .unwrap_err();
        assert_eq!(err.exit_code(), ERROR);
        let err = Cli::try_parse_from(["warren-producer", "checksum"]).unwrap_err();
        assert_eq!(err.exit_code(), ERROR, "paths are required");
    }
}
