//! Cancel records and the set of cancelled job ids, pure: the stream that carries them is
//! `warren_infra::cancels`.
//!
//! A record is JSON: `{"version": 1, "job_ids": ["..."], "at_ms": <unix ms>}`, or a reader's
//! marker `{"version": 1, "marker": "<unique>"}`.

use std::collections::HashMap;
use std::time::Duration;

/// What one stream message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Cancel { job_ids: Vec<String>, at_ms: u64 },
    Marker(String),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    version: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    job_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    marker: Option<String>,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let wire = match self {
            Self::Cancel { job_ids, at_ms } => {
                Wire { version: 1, job_ids: job_ids.clone(), at_ms: Some(*at_ms), marker: None }
            }
            Self::Marker(m) => Wire { version: 1, job_ids: Vec::new(), at_ms: None, marker: Some(m.clone()) },
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Reads a stream message; anything else (another version, not JSON) is an error, which
    /// readers log and skip: one bad record never stops them.
    pub fn decode(body: &[u8]) -> Result<Self, String> {
        let wire: Wire = serde_json::from_slice(body).map_err(|e| format!("not a cancel record: {e}"))?;
        if wire.version != 1 {
            return Err(format!("cancel record of version {}; this reads version 1", wire.version));
        }
        match (wire.marker, wire.at_ms) {
            (Some(m), _) => Ok(Self::Marker(m)),
            (None, Some(at_ms)) => Ok(Self::Cancel { job_ids: wire.job_ids, at_ms }),
            (None, None) => Err("a cancel record without at_ms".into()),
        }
    }
}

/// The job ids cancelled within the retention, and when. Pure.
#[derive(Debug, Clone, Default)]
pub struct CancelSet {
    ids: HashMap<String, u64>,
    retention_ms: u64,
    expired_at_ms: u64,
}

impl CancelSet {
    pub fn new(retention: Duration) -> Self {
        Self { retention_ms: u64::try_from(retention.as_millis()).unwrap_or(u64::MAX), ..Self::default() }
    }

    /// Records `job_ids` as cancelled at `at_ms`; forgets what passed the retention, at most
    /// once a minute. Returns how many were new.
    pub fn insert(&mut self, job_ids: &[String], at_ms: u64, now_ms: u64) -> usize {
        if now_ms.saturating_sub(self.expired_at_ms) >= 60_000 {
            self.expire(now_ms);
        }
        // A record from a clock ahead of ours counts from now, not from its future.
        let at_ms = at_ms.min(now_ms);
        if self.is_past(at_ms, now_ms) {
            return 0;
        }
        let mut added = 0;
        for id in job_ids.iter().filter(|id| !id.is_empty()) {
            let at = self.ids.entry(id.clone()).or_insert_with(|| {
                added += 1;
                at_ms
            });
            *at = (*at).max(at_ms);
        }
        added
    }

    /// Whether `job_id` was cancelled within the retention.
    pub fn contains(&self, job_id: &str, now_ms: u64) -> bool {
        self.ids.get(job_id).is_some_and(|&at| !self.is_past(at, now_ms))
    }

    pub fn expire(&mut self, now_ms: u64) {
        let (retention, ids) = (self.retention_ms, &mut self.ids);
        ids.retain(|_, at| at.saturating_add(retention) > now_ms);
        self.expired_at_ms = now_ms;
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn is_past(&self, at_ms: u64, now_ms: u64) -> bool {
        at_ms.saturating_add(self.retention_ms) <= now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_errors() {
        let cancel = Record::Cancel { job_ids: vec!["a".into(), "b".into()], at_ms: 7 };
        assert_eq!(Record::decode(&cancel.encode()), Ok(cancel));
        let marker = Record::Marker("w1/x".into());
        assert_eq!(Record::decode(&marker.encode()), Ok(marker));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(
                &Record::Cancel { job_ids: vec!["a".into()], at_ms: 7 }.encode()
            )
            .unwrap_or_default(),
            serde_json::json!({"version": 1, "job_ids": ["a"], "at_ms": 7})
        );
        for bad in [&b"nope"[..], br#"{"version":2,"job_ids":["a"],"at_ms":1}"#, br#"{"version":1,"job_ids":["a"]}"#] {
            assert!(Record::decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_cancel_counts_within_its_retention_only() {
        let hour = 3_600_000;
        let mut set = CancelSet::new(Duration::from_millis(hour));
        assert_eq!(set.insert(&["a".into(), "b".into(), "a".into(), String::new()], 1_000, 1_000), 2);
        assert!(set.contains("a", 1_000) && set.contains("b", hour));
        assert!(!set.contains("c", 1_000), "unknown ids are not cancelled");
        assert!(!set.contains("a", 1_000 + hour), "past the retention it is forgotten");
        // A record read long after it was written (a worker starting late) that has passed
        // the retention is not taken.
        assert_eq!(set.insert(&["old".into()], 0, hour + 1), 0);
        set.expire(1_000 + hour);
        assert!(set.is_empty());
        // Expiry runs by itself at most once a minute.
        set.insert(&["x".into()], 10 * hour, 10 * hour);
        set.insert(&["y".into()], 11 * hour, 11 * hour + 1);
        assert_eq!(set.len(), 1, "x expired when y came");
        // A cancel from a clock ahead counts from now; a repeated one keeps the newest time.
        let mut set = CancelSet::new(Duration::from_millis(hour));
        set.insert(&["f".into()], u64::MAX, 1_000);
        assert!(!set.contains("f", 1_000 + hour), "a future at_ms does not outlive the retention");
        set.insert(&["r".into()], 1_000, 1_000);
        set.insert(&["r".into()], 2_000, 2_000);
        set.insert(&["r".into()], 500, 2_000);
        assert!(set.contains("r", 1_000 + hour) && !set.contains("r", 2_000 + hour));
    }
}
