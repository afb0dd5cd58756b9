//! Credentials kept out of logs, errors and `Debug` output: broker URLs shown with their
//! passwords replaced, and URLs refused, with a reason that shows no credential, when they cannot
//! be dialled as written. Used by the settings (`Debug`, `redacted_url`, validation) and the
//! connection code (its errors), which share it here rather than import each other.

use crate::nodes;

/// `amqp://user:secret@host/vhost` becomes `amqp://user:***@host/vhost`, for each URL of a
/// comma-separated list (cut as [`nodes::split`] cuts it). The credentials run to the URL's last
/// `@`, so a password holding `/`, `?`, `#`, `@`, `,` or `:` unencoded is hidden whole too;
/// anything without credentials is unchanged.
pub fn redact_url(list: &str) -> String {
    let mut out = String::with_capacity(list.len());
    for (i, (a, b)) in nodes::ranges(list).into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&redact_one(&list[a..b]));
    }
    out
}

fn redact_one(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let hidden = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{}://{hidden}@{host}", &url[..scheme_end])
}

/// The password of one URL, as written (the credentials up to the URL's last `@`).
fn password(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (userinfo, _) = rest.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, p)| p).filter(|p| !p.is_empty())
}

/// `text` with `url` (should an error quote it) and its password replaced by the redacted form.
pub fn redact_text(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    if let Some(password) = password(url) {
        out = out.replace(password, "***");
    }
    out
}

/// Refuses a broker URL list that cannot be dialled as written, saying why without any of its
/// credentials: a user name or password holding `/`, `?`, `#` or `@` unencoded (the URL's parts
/// cannot be told apart then; a comma is fine), or a URL lapin cannot parse.
pub fn check_urls(list: &str) -> Result<(), String> {
    let urls = nodes::split(list);
    if urls.is_empty() {
        return Err("names no node".to_owned());
    }
    for (i, url) in urls.iter().enumerate() {
        let which = if urls.len() == 1 { String::new() } else { format!("node {} ", i + 1) };
        let shown = redact_one(url);
        if !url.contains("://") {
            return Err(format!("{which}{shown:?} is not a URL: expected amqp://user:password@host:5672/vhost"));
        }
        let rest = url.split_once("://").map_or(*url, |(_, r)| r);
        if let Some((userinfo, _)) = rest.rsplit_once('@')
            && userinfo.contains(['/', '?', '#', '@'])
        {
            return Err(format!(
                "{which}{shown}: its user name or password holds a reserved character ('/', '?', '#' or '@'): \
                 percent-encode reserved characters in the password (for example '/' as %2F, '@' as %40)"
            ));
        }
        if url.parse::<lapin::uri::AMQPUri>().is_err() {
            return Err(format!(
                "{which}{shown} is not a valid AMQP URL: check its scheme, host, port and vhost, and \
                 percent-encode reserved characters in the user name and password"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_urls as check, redact_text, redact_url};

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

    /// Reserved characters a password may hold unencoded (by mistake): none of it shows.
    const RESERVED: [char; 7] = ['/', '?', '#', '@', ',', ':', '%'];

    #[test]
    fn no_character_of_a_password_shows_whatever_it_holds() {
        for c in RESERVED {
            let url = format!("amqp://u:ab{c}cd{c}ef@h:5672/%2f");
            let shown = redact_url(&url);
            for part in ["ab", "cd", "ef"] {
                assert!(!shown.contains(part), "{c:?}: {shown}");
            }
            assert!(shown.starts_with("amqp://u:***@"), "{c:?}: {shown}");
            let list = format!("amqp://a:one{c}x@h1/%2f,amqp://b:two{c}y@h2/%2f");
            let shown = redact_url(&list);
            assert!(!shown.contains("one") && !shown.contains("two"), "{c:?}: {shown}");
        }
    }

    #[test]
    fn a_password_with_reserved_characters_unencoded_is_refused_without_showing_it() {
        for c in ['/', '?', '#', '@'] {
            let e = check(&format!("amqp://u:Xq7{c}Zk9@h:5672/%2f")).expect_err("refused");
            assert!(e.contains("percent-encode") && !e.contains("Xq7") && !e.contains("Zk9"), "{c:?}: {e}");
        }
        assert!(check("amqp://u:pa%2Fss%3F%23%40%2C@h:5672/%2f").is_ok(), "percent-encoded");
        assert!(check("amqp://u:a,b@h1/%2f,amqp://v:c@h2/%2f").is_ok(), "a comma needs no encoding");
        let e = check("amqp://u:secret@h:port/%2f").expect_err("a bad port");
        assert!(!e.contains("secret") && e.contains("amqp://u:***@h:port/%2f"), "{e}");
    }

    #[test]
    fn an_error_that_quotes_its_url_or_password_is_redacted_too() {
        let url = "amqp://u:hunter2@h:5672/%2f";
        let shown = redact_text(&format!("invalid uri {url}: bad port; password hunter2"), url);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("amqp://u:***@h:5672/%2f"), "{shown}");
    }
}
