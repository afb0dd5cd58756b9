//! The dump file: JSON lines. The first line describes the dump; each further line is one
//! message with its exchange, routing key, redelivered flag, every AMQP property and its
//! headers in lapin's typed serde form (an `i8` stays an `i8`, a timestamp a timestamp), and the
//! body in base64. `load` publishes exactly what `dump` read.

use std::io::{BufRead, Write};

use lapin::BasicProperties;
use serde::{Deserialize, Serialize};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DumpHeader {
    pub warren_dump: u32,
    pub vhost: String,
    pub queue: String,
    pub taken_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DumpRecord {
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
    pub properties: BasicProperties,
    #[serde(with = "warren_common::bytes")]
    pub body: Vec<u8>,
}

pub fn write_header(w: &mut impl Write, header: &DumpHeader) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, header)?;
    w.write_all(b"\n")
}

pub fn write_record(w: &mut impl Write, record: &DumpRecord) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, record)?;
    w.write_all(b"\n")
}

/// Reads a dump: its header and records, or the line that is wrong.
pub fn read(r: impl BufRead) -> Result<(DumpHeader, Vec<DumpRecord>), String> {
    let mut lines = r.lines().enumerate();
    let header: DumpHeader = match lines.next() {
        Some((_, Ok(l))) => {
            serde_json::from_str(&l).map_err(|e| format!("line 1 is not a warrenctl dump header: {e}"))?
        }
        Some((_, Err(e))) => return Err(e.to_string()),
        None => return Err("empty file".into()),
    };
    if header.warren_dump != FORMAT_VERSION {
        return Err(format!(
            "dump format {} is not supported (this warrenctl reads {FORMAT_VERSION})",
            header.warren_dump
        ));
    }
    let mut records = Vec::new();
    for (i, line) in lines {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        records.push(serde_json::from_str(&line).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok((header, records))
}
