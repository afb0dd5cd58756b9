//! One error type for the whole CLI, and the exit code of each kind, in one place.

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Config(String),
    #[error("queue {0:?} not found")]
    QueueNotFound(String),
    #[error("{0}")]
    JobNotFound(String),
    #[error("console: {0}")]
    Console(String),
    #[error("broker: {0}")]
    Broker(String),
    #[error("management API: {0}")]
    Management(String),
    #[error("{failed} of {total} messages could not be moved (they are still in the source queue)")]
    Partial { failed: u64, total: u64 },
    #[error("{0} difference(s) between the configuration and the broker")]
    Differs(usize),
    #[error("aborted")]
    Aborted,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl CtlError {
    /// 0 is success; these say what went wrong without reading the message.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Partial { .. } | Self::Differs(_) => 1,
            Self::Usage(_) | Self::Config(_) => 2,
            Self::Broker(_) | Self::Management(_) | Self::Console(_) => 3,
            Self::QueueNotFound(_) | Self::JobNotFound(_) => 4,
            Self::Aborted => 5,
            Self::Io(_) => 6,
        }
    }
}

impl From<lapin::Error> for CtlError {
    fn from(e: lapin::Error) -> Self {
        Self::Broker(e.to_string())
    }
}

impl From<anyhow::Error> for CtlError {
    fn from(e: anyhow::Error) -> Self {
        Self::Broker(format!("{e:#}"))
    }
}

pub type Result<T> = std::result::Result<T, CtlError>;
