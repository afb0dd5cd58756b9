//! The AMQP connection, and keeping credentials out of logs.

use anyhow::Context as _;
use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties};

use crate::settings::BrokerSettings;

/// Connects to the broker, naming the connection (visible in the management UI) after `role`.
pub async fn connect(broker: &BrokerSettings, role: &str) -> anyhow::Result<Connection> {
    let name = format!("{} {role} pid={}", broker.connection_name, std::process::id());
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let connecting = if broker.tls_ca_file.as_os_str().is_empty() {
        // amqps:// URLs use rustls with the system's trusted roots.
        Connection::connect(&broker.url, props).await
    } else {
        let pem = std::fs::read_to_string(&broker.tls_ca_file)
            .with_context(|| format!("reading broker.tls_ca_file {}", broker.tls_ca_file.display()))?;
        let tls = OwnedTLSConfig { identity: None, cert_chain: Some(pem) };
        let runtime = lapin::runtime::default_runtime().context("async runtime for the AMQP connection")?;
        Connection::connect_with_config(&broker.url, props, tls, runtime).await
    };
    connecting.with_context(|| format!("connecting to RabbitMQ at {}", broker.redacted_url()))
}

/// `amqp://user:secret@host/vhost` becomes `amqp://user:***@host/vhost`; anything that does
/// not parse as a URL with credentials is returned unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let hidden = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_owned() };
    format!("{}://{hidden}{}", &url[..scheme_end], &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("amqps://u:p%40ss@h/v?x=1"), "amqps://u:***@h/v?x=1");
        assert_eq!(redact_url("amqp://token@h"), "amqp://***@h");
        assert_eq!(redact_url("amqp://h:5672/%2f"), "amqp://h:5672/%2f");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
