//! The two wire encodings and their content types. JSON is for everyone; bincode 2 (standard
//! configuration, through serde) is the compact encoding between Rust services.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::headers::{CONTENT_TYPE_BINCODE, CONTENT_TYPE_JSON};
use crate::names::{self, UnknownName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Json,
    Bincode,
}

impl Encoding {
    /// Every encoding, in declaration order.
    pub const ALL: [Self; 2] = [Self::Json, Self::Bincode];

    /// The encoding's name (serde's), as settings and flags spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Bincode => "bincode",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => CONTENT_TYPE_JSON,
            Self::Bincode => CONTENT_TYPE_BINCODE,
        }
    }

    /// The encoding a `content_type` property names. A missing content type means JSON, so a
    /// minimal publisher that sets no properties still works.
    pub fn from_content_type(content_type: Option<&str>) -> Option<Self> {
        let ct = content_type.unwrap_or(CONTENT_TYPE_JSON);
        // Parameters such as "; charset=utf-8" do not change the encoding.
        let essence = ct.split(';').next().unwrap_or("").trim();
        match essence.to_ascii_lowercase().as_str() {
            CONTENT_TYPE_JSON | "text/json" | "" => Some(Self::Json),
            CONTENT_TYPE_BINCODE | "application/bincode" => Some(Self::Bincode),
            _ => None,
        }
    }

    pub fn encode<T: Serialize>(self, value: &T) -> Result<Vec<u8>, String> {
        match self {
            Self::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
            Self::Bincode => bincode::serde::encode_to_vec(value, bincode_config()).map_err(|e| e.to_string()),
        }
    }

    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Self::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Self::Bincode => decode_bincode_prefix(bytes).and_then(|(v, used)| {
                if used == bytes.len() { Ok(v) } else { Err(format!("{} trailing bytes", bytes.len() - used)) }
            }),
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Encoding {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        names::parse("encoding", s, &Self::ALL, Self::as_str)
    }
}

/// Bincode's standard configuration with a cap on any single allocation a length prefix can ask
/// for, so a hostile prefix cannot make the decoder reserve gigabytes.
pub(crate) fn bincode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ 256 * 1024 * 1024 }>,
> {
    bincode::config::standard().with_limit::<{ 256 * 1024 * 1024 }>()
}

/// Decodes one value from the front of `bytes`, returning how many bytes it used.
pub(crate) fn decode_bincode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), String> {
    bincode::serde::decode_from_slice(bytes, bincode_config()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_parse_by_their_names() {
        names::check_wire_names(&Encoding::ALL);
    }
}
