//! Output for people (tables) and machines (`--json`). Writing to a closed pipe (`| head`) ends
//! the process quietly with status 0: a reader that has seen enough is not an error.

use std::fmt::Display;
use std::io::{ErrorKind, IsTerminal as _, Write as _};

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};

/// Prints a line to stdout; a broken pipe exits quietly.
pub fn line(text: impl Display) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("warrenctl: writing output: {e}");
        std::process::exit(6);
    }
}

pub fn json(value: &serde_json::Value) {
    line(serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    table_within(header, rows, None);
}

/// A table at most `width` columns wide (long cells wrap), or as wide as its content.
pub fn table_within(header: &[&str], rows: Vec<Vec<String>>, width: Option<u16>) {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_content_arrangement(ContentArrangement::Dynamic).set_header(header.to_vec());
    if let Some(w) = width {
        t.set_width(w);
    }
    for r in rows {
        t.add_row(r);
    }
    line(t);
}

/// `text` cut to at most `max` characters, an ellipsis marking the cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Progress on stderr, only when a person is watching.
pub fn progress(len: Option<u64>, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style = indicatif::ProgressStyle::with_template("{spinner} {msg} {pos}/{len} [{elapsed}] {per_sec}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

pub fn rate(v: Option<f64>) -> String {
    v.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into())
}

pub fn duration_s(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) if s < 172_800.0 => format!("{:.1}h", s / 3600.0),
        Some(s) => format!("{:.1}d", s / 86_400.0),
    }
}
