//! Which broker node to dial, as pure functions: `broker.url` (and warrenctl's management URL)
//! may list several nodes of a cluster, comma-separated. A process dials them in order from the
//! first; once connected, the next connection it opens (after a loss, typically) starts from the
//! node after the one it was on, so a worker whose node died moves on instead of dialling it
//! again first. A full round of failures is then waited out by the caller's backoff.

/// The addresses of a comma-separated list, trimmed, empty entries dropped. A comma starts a new
/// address only where a scheme (`amqp://`, `http://`, ...) follows it, so that a comma inside a
/// password never cuts its URL in two.
pub fn split(list: &str) -> Vec<&str> {
    ranges(list)
        .into_iter()
        .map(|(a, b)| list[a..b].trim_matches(|c: char| c.is_whitespace() || c == ','))
        .filter(|u| !u.is_empty())
        .collect()
}

/// Where each address of `list` lies (byte ranges, untrimmed: blanks and stray commas around an
/// address are [`split`]'s to drop).
pub fn ranges(list: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in list.match_indices(',') {
        if starts_with_scheme(&list[i + 1..]) {
            out.push((start, i));
            start = i + 1;
        }
    }
    out.push((start, list.len()));
    out
}

/// Whether `s` (leading blanks aside) begins with `scheme://`.
fn starts_with_scheme(s: &str) -> bool {
    let s = s.trim_start();
    let Some(end) = s.find("://") else { return false };
    let scheme = &s[..end];
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// The order in which to dial `count` nodes, starting from `start` (any number: it wraps).
pub fn dial_order(count: usize, start: usize) -> Vec<usize> {
    (0..count).map(|i| (start + i) % count.max(1)).collect()
}

/// Where the next connection starts once one to node `connected` was made.
pub fn next_start(count: usize, connected: usize) -> usize {
    (connected + 1) % count.max(1)
}

/// `host:port` of an AMQP or HTTP URL, without credentials, path or query: how logs, connection
/// names and `/readyz` name a node. Credentials end at the URL's last `@` (a host never holds
/// one), so nothing of a password with reserved characters in it shows.
pub fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    &host[..host.find(['/', '?', '#']).unwrap_or(host.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_split_on_commas_and_blank_entries_are_dropped() {
        assert_eq!(split("amqp://a:5672/%2f"), vec!["amqp://a:5672/%2f"]);
        assert_eq!(split(" amqp://a , amqp://b,,amqp://c ,"), vec!["amqp://a", "amqp://b", "amqp://c"]);
        assert!(split(" , ").is_empty());
    }

    #[test]
    fn a_comma_in_a_password_does_not_split_its_url() {
        assert_eq!(split("amqp://u:a,b@h1/%2f, amqps://v:c@h2/%2f"), vec!["amqp://u:a,b@h1/%2f", "amqps://v:c@h2/%2f"]);
        assert_eq!(split("amqp://u:a,,b@h1"), vec!["amqp://u:a,,b@h1"]);
    }

    #[test]
    fn a_node_is_named_without_any_of_a_password_that_holds_reserved_characters() {
        for c in ['/', '?', '#', '@'] {
            let url = format!("amqp://u:pa{c}ss@h:5672/%2f");
            assert_eq!(host_port(&url), "h:5672", "{c:?}");
        }
    }

    #[test]
    fn dialling_goes_round_from_the_start_and_moves_on_after_a_connection() {
        assert_eq!(dial_order(3, 0), vec![0, 1, 2]);
        assert_eq!(dial_order(3, 2), vec![2, 0, 1]);
        assert_eq!(dial_order(3, 7), vec![1, 2, 0]);
        assert_eq!(dial_order(1, 5), vec![0]);
        assert!(dial_order(0, 0).is_empty());
        assert_eq!(next_start(3, 0), 1);
        assert_eq!(next_start(3, 2), 0, "wraps");
        assert_eq!(next_start(1, 0), 0, "one node: always it");
    }

    #[test]
    fn a_node_is_named_by_host_and_port_only() {
        assert_eq!(host_port("amqp://guest:secret@10.0.0.2:5672/%2f"), "10.0.0.2:5672");
        assert_eq!(host_port("amqps://u:p%40ss@rabbit-1.svc:5671/prod?heartbeat=10"), "rabbit-1.svc:5671");
        assert_eq!(host_port("http://127.0.0.1:15672"), "127.0.0.1:15672");
        assert_eq!(host_port("amqp://h"), "h");
        assert_eq!(host_port("weird"), "weird");
    }
}
