//! Where warrenctl talks to, from flags, environment variables and the Warren configuration:
//! the AMQP URL (and from it the vhost and default management credentials), the management API.

use std::path::PathBuf;

use lapin::uri::AMQPUri;
use warren_infra::Settings;

use crate::cli::Global;
use crate::errors::{CtlError, Result};
use crate::mgmt::Mgmt;

#[derive(Debug)]
pub struct Ctx {
    pub settings: Settings,
    pub vhost: String,
    pub mgmt: Mgmt,
    pub json: bool,
}

impl Ctx {
    pub fn from_global(g: &Global) -> Result<Self> {
        let dir = g.config_dir.clone().unwrap_or_else(|| PathBuf::from("config"));
        let mut settings = Settings::load(&dir).map_err(|e| CtlError::Config(format!("{e:#}")))?;
        if let Some(url) = &g.url {
            settings.broker.url = url.clone();
        }
        Self::from_settings(settings, g.mgmt_url.clone(), g.mgmt_user.clone(), g.mgmt_password.clone(), g.json)
    }

    /// From loaded settings; the management API and its credentials default to each AMQP
    /// node's host (port 15672) and the AMQP URL's user.
    pub fn from_settings(
        settings: Settings,
        mgmt_url: Option<String>,
        mgmt_user: Option<String>,
        mgmt_password: Option<String>,
        json: bool,
    ) -> Result<Self> {
        let urls = warren_infra::nodes::split(&settings.broker.url);
        let uris = urls
            .iter()
            .map(|u| u.parse::<AMQPUri>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| CtlError::Config(format!("bad AMQP URL in {}: {e}", settings.broker.redacted_url())))?;
        let uri = uris.first().ok_or_else(|| CtlError::Config("the AMQP URL names no node".into()))?;
        let user = mgmt_user.unwrap_or_else(|| uri.authority.userinfo.username.clone());
        let password = mgmt_password.unwrap_or_else(|| uri.authority.userinfo.password.clone());
        let mgmt_url = mgmt_url.unwrap_or_else(|| {
            uris.iter().map(|u| format!("http://{}:15672", u.authority.host)).collect::<Vec<_>>().join(",")
        });
        Ok(Self { vhost: uri.vhost.clone(), mgmt: Mgmt::new(&mgmt_url, &user, &password), settings, json })
    }

    pub async fn connect(&self) -> Result<lapin::Connection> {
        Ok(warren_infra::connect(&self.settings.broker, "warrenctl").await?)
    }

    /// Warren's work queues and their dead-letter queues, from the configuration.
    pub fn warren_queues(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.settings.routes {
            out.push(r.queue.clone());
            out.push(self.settings.dead_queue(&r.queue));
        }
        if !self.settings.topology.results_queue.is_empty() {
            out.push(self.settings.topology.results_queue.clone());
        }
        out
    }
}
