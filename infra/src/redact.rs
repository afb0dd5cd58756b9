//! Credentials kept out of logs, errors and `Debug` output: broker URLs shown with their
//! passwords replaced. Used by the settings (`Debug`, `redacted_url`) and the connection code
//! (its errors), which share it here rather than import each other.

/// `amqp://user:secret@host/vhost` becomes `amqp://user:***@host/vhost`, for each URL of a
/// comma-separated list; anything that does not parse as a URL with credentials is unchanged.
pub fn redact_url(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(redact_url).collect::<Vec<_>>().join(",");
    }
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

/// `text` with `url` (should an error quote it) and its password replaced by the redacted form.
pub fn redact_text(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    if let Some((userinfo, _)) = rest.split_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
        && !password.is_empty()
    {
        out = out.replace(password, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{redact_text, redact_url};

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("amqps://u:p%40ss@h/v?x=1"), "amqps://u:***@h/v?x=1");
        assert_eq!(redact_url("amqp://token@h"), "amqp://***@h");
        assert_eq!(redact_url("amqp://h:5672/%2f"), "amqp://h:5672/%2f");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn every_url_of_a_list_is_redacted() {
        let list = "amqp://a:one@h1:5672/%2f,amqp://b:two@h2:5672/%2f, amqps://c:three@h3:5671/v";
        let shown = redact_url(list);
        assert_eq!(shown, "amqp://a:***@h1:5672/%2f,amqp://b:***@h2:5672/%2f, amqps://c:***@h3:5671/v");
        for secret in ["one", "two", "three"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn an_error_that_quotes_its_url_or_password_is_redacted_too() {
        let url = "amqp://u:hunter2@h:5672/%2f";
        let shown = redact_text(&format!("invalid uri {url}: bad port; password hunter2"), url);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("amqp://u:***@h:5672/%2f"), "{shown}");
    }
}
