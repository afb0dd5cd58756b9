//! The AMQP connection to one of the configured nodes, and keeping credentials out of logs.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};

use crate::nodes;
use crate::redact::{redact_text, redact_url};
use crate::settings::BrokerSettings;

/// A connection, and the node it is to (`host:port`, as `broker.url` names it).
#[derive(Debug)]
pub struct Connected {
    pub connection: Connection,
    pub node: String,
}

/// Connects to the broker, naming the connection (visible in the management UI) after `role`.
pub async fn connect(broker: &BrokerSettings, role: &str) -> anyhow::Result<Connection> {
    Ok(connect_node(broker, role).await?.connection)
}

/// Connects to the first node of `broker.url` that answers, starting after the node this
/// process last connected to (see [`nodes`]); the error lists why each node failed.
pub async fn connect_node(broker: &BrokerSettings, role: &str) -> anyhow::Result<Connected> {
    let urls = nodes::split(&broker.url);
    anyhow::ensure!(!urls.is_empty(), "broker.url names no node");
    let tls = tls_config(broker)?;
    let mut failures = Vec::new();
    for i in nodes::dial_order(urls.len(), broker.rotation.load(Ordering::Relaxed)) {
        let node = nodes::host_port(urls[i]).to_owned();
        match connect_one(broker, urls[i], &node, role, &tls).await {
            Ok(connection) => {
                broker.rotation.store(nodes::next_start(urls.len(), i), Ordering::Relaxed);
                if !failures.is_empty() {
                    tracing::info!(%node, skipped = %failures.join("; "), "connected to another node");
                }
                return Ok(Connected { connection, node });
            }
            Err(e) => failures.push(format!("{}: {e:#}", redact_url(urls[i]))),
        }
    }
    let which =
        if urls.len() == 1 { "RabbitMQ at".to_owned() } else { format!("any of {} RabbitMQ nodes:", urls.len()) };
    anyhow::bail!("connecting to {which} {}", failures.join("; "))
}

async fn connect_one(
    broker: &BrokerSettings,
    url: &str,
    node: &str,
    role: &str,
    tls: &Option<OwnedTLSConfig>,
) -> anyhow::Result<Connection> {
    let name = format!("{} {role} pid={} node={node}", broker.connection_name, std::process::id());
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let connecting = async {
        match tls {
            // amqps:// URLs use rustls with the system's trusted roots.
            None => Connection::connect(url, props).await,
            Some(tls) => {
                let runtime = lapin::runtime::default_runtime()?;
                Connection::connect_with_config(url, props, tls.clone(), runtime).await
            }
        }
    };
    let timeout = Duration::from_millis(broker.connect_timeout_ms);
    match tokio::time::timeout(timeout, connecting).await {
        Ok(connected) => Ok(connected.map_err(|e| anyhow::anyhow!("{}", redact_text(&e.to_string(), url)))?),
        Err(_) => anyhow::bail!("no answer within {timeout:?} (broker.connect_timeout_ms)"),
    }
}

/// The CA to trust instead of the system's, and the client certificate to present, when set.
pub fn tls_config(broker: &BrokerSettings) -> anyhow::Result<Option<OwnedTLSConfig>> {
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p).with_context(|| format!("reading broker.{what} {}", p.display()))
    };
    let cert_chain = match broker.tls_ca_file.as_os_str().is_empty() {
        true => None,
        false => Some(
            String::from_utf8(read(&broker.tls_ca_file, "tls_ca_file")?)
                .context("broker.tls_ca_file is not PEM text")?,
        ),
    };
    let identity = match (broker.tls_cert_file.as_os_str().is_empty(), broker.tls_key_file.as_os_str().is_empty()) {
        (true, true) => None,
        (false, false) => Some(OwnedIdentity::PKCS8 {
            pem: read(&broker.tls_cert_file, "tls_cert_file")?,
            key: read(&broker.tls_key_file, "tls_key_file")?,
        }),
        _ => anyhow::bail!("broker.tls_cert_file and broker.tls_key_file go together: set both or neither"),
    };
    Ok((cert_chain.is_some() || identity.is_some()).then_some(OwnedTLSConfig { identity, cert_chain }))
}
