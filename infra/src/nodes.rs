//! Which broker node to dial, as pure functions: `broker.url` (and warrenctl's management URL)
//! may list several nodes of a cluster, comma-separated. A process dials them in order from the
//! first; once connected, the next connection it opens (after a loss, typically) starts from the
//! node after the one it was on, so a worker whose node died moves on instead of dialling it
//! again first. A full round of failures is then waited out by the caller's backoff.

/// The addresses of a comma-separated list, trimmed, empty entries dropped.
pub fn split(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
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
/// names and `/readyz` name a node.
pub fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority.rsplit_once('@').map_or(authority, |(_, host)| host)
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
