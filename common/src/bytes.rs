//! Serde for binary fields: standard base64 in human-readable formats (JSON), raw bytes in
//! compact ones (bincode). One field type, so both encodings share the same structs.
//!
//! A bytes field may instead hold a reference to bytes kept elsewhere ([`Ref`]: an object in an
//! S3-compatible store, a file on a shared mount, a presigned HTTPS URL): in JSON the object
//! `{"ref": "s3://bucket/key"}` in place of the base64 text; in bincode the field's bytes are
//! [`REF_MAGIC`] followed by the URL in UTF-8. In Rust, a field holding a reference holds those
//! same bytes ([`Ref::to_bytes`], [`Ref::from_bytes`]), so every kind's input and output type
//! carries references without a change.
//!
//! The worker resolves references around its own (synchronous) decoding and encoding, by
//! setting a mode for the current thread: [`collect_refs`] lists the references a job holds,
//! [`fill_refs`] decodes it again with the fetched bytes in their place, and [`upload_refs`]
//! writes an output's bytes as references to objects under a prefix, returning the bytes to
//! store. Without a mode, references are read and written as they are.

use std::cell::RefCell;
use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap as _;
use serde::{Deserializer, Serializer};

/// What a bytes field's bytes begin with when they are a reference (NUL, `warren-ref`, NUL):
/// no image or common binary format begins so. A payload that does cannot be sent inline.
pub const REF_MAGIC: &[u8] = b"\0warren-ref\0";

/// Longest reference URL accepted, in bytes.
pub const MAX_REF_LEN: usize = 4096;

/// Where a reference's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `s3://bucket/key`: an S3-compatible store, its endpoint and credentials from the
    /// worker's configuration.
    S3,
    /// `file:///absolute/path`: a file on a mount the worker shares.
    File,
    /// `https://...`: a presigned URL, read with a GET and nothing else.
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S3 => "s3",
            Self::File => "file",
            Self::Https => "https",
        }
    }
}

/// A reference to bytes kept outside the message.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ref {
    url: String,
    scheme: Scheme,
}

impl Ref {
    /// A reference to `url`: `s3://bucket/key`, `file:///path` or `https://...`, at most
    /// [`MAX_REF_LEN`] bytes, no control characters.
    pub fn new(url: impl Into<String>) -> Result<Self, String> {
        let url = url.into();
        if url.len() > MAX_REF_LEN {
            return Err(format!("a reference is at most {MAX_REF_LEN} bytes; this one is {}", url.len()));
        }
        if url.chars().any(char::is_control) {
            return Err("a reference holds no control characters".into());
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{:?} is not a URL", shown(&url)))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "s3" => Scheme::S3,
            "file" => Scheme::File,
            "https" => Scheme::Https,
            other => return Err(format!("references are s3://, file:// or https:// URLs, not {other}://")),
        };
        let fits = match scheme {
            Scheme::S3 => rest.split_once('/').is_some_and(|(bucket, key)| !bucket.is_empty() && !key.is_empty()),
            Scheme::File => rest.starts_with('/') && rest.len() > 1,
            Scheme::Https => rest.split(['/', '?']).next().is_some_and(|host| !host.is_empty()),
        };
        if !fits {
            let form = match scheme {
                Scheme::S3 => "s3://bucket/key",
                Scheme::File => "file:///absolute/path",
                Scheme::Https => "https://host/path",
            };
            return Err(format!("{:?} is not of the form {form}", shown(&url)));
        }
        Ok(Self { url, scheme })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The URL as logs and errors show it: without its query (a presigned URL's signature and
    /// credential are there).
    pub fn shown(&self) -> &str {
        shown(&self.url)
    }

    /// The bytes a bytes field holds for this reference.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REF_MAGIC.len() + self.url.len());
        out.extend_from_slice(REF_MAGIC);
        out.extend_from_slice(self.url.as_bytes());
        out
    }

    /// The reference a bytes field holds, if it holds one (and it is well formed).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::parse_field(bytes)?.ok()
    }

    /// None: plain bytes; Some(Err): bytes that begin as a reference but are not a good one.
    fn parse_field(bytes: &[u8]) -> Option<Result<Self, String>> {
        let url = bytes.strip_prefix(REF_MAGIC)?;
        Some(
            std::str::from_utf8(url)
                .map_err(|_| "a reference's URL is not UTF-8".to_owned())
                .and_then(|u| Self::new(u.to_owned())),
        )
    }
}

impl std::fmt::Debug for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ref({})", self.shown())
    }
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shown())
    }
}

/// A URL without its query and fragment.
fn shown(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// What the current thread does with references while it decodes or encodes.
enum Mode {
    /// Lists each reference met (decoding), in order.
    Collect(Vec<Ref>),
    /// Puts the fetched bytes in each reference's place (decoding): by URL, with how many
    /// fields still take them (the last one takes the bytes, the others a copy).
    Fill(HashMap<String, (Vec<u8>, usize)>),
    /// Writes each plain bytes field as a reference to a new object under `prefix`
    /// (encoding), keeping the bytes to store.
    Upload { prefix: String, objects: Vec<(Ref, Vec<u8>)> },
}

thread_local! {
    static MODE: RefCell<Option<Mode>> = const { RefCell::new(None) };
}

/// Runs `f` in `mode`, then gives the mode back (also when `f` panics, the thread's mode is
/// restored to what it was).
fn with_mode<T>(mode: Mode, f: impl FnOnce() -> T) -> (T, Mode) {
    struct Restore(Option<Mode>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            MODE.with(|m| *m.borrow_mut() = previous);
        }
    }
    let previous = MODE.with(|m| m.borrow_mut().replace(mode));
    let restore = Restore(previous);
    let out = f();
    let mode = MODE.with(|m| m.borrow_mut().take()).expect("the mode set above");
    drop(restore);
    (out, mode)
}

/// Runs `f` (a decoding), listing every reference its bytes fields hold, in order (a URL met
/// twice is listed twice). The fields themselves hold the references' bytes ([`Ref::to_bytes`]).
pub fn collect_refs<T>(f: impl FnOnce() -> T) -> (T, Vec<Ref>) {
    match with_mode(Mode::Collect(Vec::new()), f) {
        (out, Mode::Collect(refs)) => (out, refs),
        _ => unreachable!("the mode is the one given"),
    }
}

/// Runs `f` (a decoding) with each reference replaced by its fetched bytes: `fetched` holds
/// them by URL, with how many fields refer to the URL (as [`collect_refs`] listed them). A
/// reference not in `fetched` fails the decoding.
pub fn fill_refs<T>(fetched: HashMap<String, (Vec<u8>, usize)>, f: impl FnOnce() -> T) -> T {
    with_mode(Mode::Fill(fetched), f).0
}

/// Runs `f` (an encoding) writing each plain bytes field as a reference to
/// `{prefix}{n}{extension}`, `n` counting the fields from 0 in the order written and the
/// extension guessed from the bytes (`.jpg`, `.png`, `.webp`, else none); returns the objects to
/// store. Fields that already hold references are written as they are.
pub fn upload_refs<T>(prefix: &str, f: impl FnOnce() -> T) -> (T, Vec<(Ref, Vec<u8>)>) {
    match with_mode(Mode::Upload { prefix: prefix.to_owned(), objects: Vec::new() }, f) {
        (out, Mode::Upload { objects, .. }) => (out, objects),
        _ => unreachable!("the mode is the one given"),
    }
}

/// Whether this thread is inside [`upload_refs`] now: an output holding bytes in another form
/// than a bytes field (a hosted kind's JSON text) writes them as fields then.
pub fn uploading() -> bool {
    MODE.with(|m| matches!(&*m.borrow(), Some(Mode::Upload { .. })))
}

/// The file name extension of an image format recognised by its first bytes.
pub fn extension_of(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        ".jpg"
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        ".png"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        ".webp"
    } else {
        ""
    }
}

pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    let uploaded = MODE.with(|m| match &mut *m.borrow_mut() {
        Some(Mode::Upload { prefix, objects }) if !bytes.starts_with(REF_MAGIC) => {
            let url = format!("{prefix}{}{}", objects.len(), extension_of(bytes));
            let r = Ref::new(url).map_err(serde::ser::Error::custom)?;
            objects.push((r.clone(), bytes.to_vec()));
            Ok(Some(r))
        }
        _ => Ok(None),
    })?;
    if let Some(r) = uploaded {
        return write_ref(&r, Some(bytes.len()), s);
    }
    match Ref::parse_field(bytes) {
        Some(Ok(r)) if s.is_human_readable() => write_ref(&r, None, s),
        Some(Err(e)) => Err(serde::ser::Error::custom(e)),
        _ if s.is_human_readable() => s.serialize_str(&STANDARD.encode(bytes)),
        _ => s.serialize_bytes(bytes),
    }
}

/// A reference as a field holds it: `{"ref": url}` (with the object's `size` when known) in
/// JSON, its bytes in bincode.
fn write_ref<S: Serializer>(r: &Ref, size: Option<usize>, s: S) -> Result<S::Ok, S::Error> {
    if !s.is_human_readable() {
        return s.serialize_bytes(&r.to_bytes());
    }
    let mut map = s.serialize_map(Some(1 + usize::from(size.is_some())))?;
    map.serialize_entry("ref", r.url())?;
    if let Some(size) = size {
        map.serialize_entry("size", &size)?;
    }
    map.end()
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let field =
        if d.is_human_readable() { d.deserialize_any(BytesVisitor)? } else { d.deserialize_byte_buf(BytesVisitor)? };
    let r = match field {
        Field::Ref(r) => r,
        Field::Bytes(bytes) => match Ref::parse_field(&bytes) {
            None => return Ok(bytes),
            Some(parsed) => parsed.map_err(de::Error::custom)?,
        },
    };
    MODE.with(|m| match &mut *m.borrow_mut() {
        Some(Mode::Collect(refs)) => {
            refs.push(r.clone());
            Ok(r.to_bytes())
        }
        Some(Mode::Fill(fetched)) => match fetched.get_mut(r.url()) {
            Some((bytes, uses)) if *uses > 1 => {
                *uses -= 1;
                Ok(bytes.clone())
            }
            Some((bytes, uses)) if *uses == 1 => {
                *uses = 0;
                Ok(std::mem::take(bytes))
            }
            _ => Err(de::Error::custom(format!("the reference {r} was not fetched"))),
        },
        _ => Ok(r.to_bytes()),
    })
}

/// A bytes field as read: bytes, or (JSON) a reference object.
enum Field {
    Bytes(Vec<u8>),
    Ref(Ref),
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("base64 text, bytes, or a reference {\"ref\": \"s3://bucket/key\"}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
        STANDARD.decode(v).map(Field::Bytes).map_err(|e| E::custom(format!("invalid base64: {e}")))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Field, E> {
        Ok(Field::Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Field, E> {
        Ok(Field::Bytes(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(Field::Bytes(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        let mut url: Option<String> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "ref" {
                url = Some(map.next_value()?);
            } else {
                // Other members (an output's `size`) are for people and other readers.
                map.next_value::<IgnoredAny>()?;
            }
        }
        let url = url.ok_or_else(|| de::Error::custom("a reference object needs \"ref\": a URL"))?;
        Ref::new(url).map(Field::Ref).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoding;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Two {
        #[serde(with = "crate::bytes")]
        a: Vec<u8>,
        #[serde(with = "crate::bytes")]
        b: Vec<u8>,
        n: u32,
    }

    fn r(url: &str) -> Ref {
        Ref::new(url).unwrap()
    }

    #[test]
    fn references_are_s3_file_or_https_urls_of_their_form() {
        for ok in ["s3://b/k", "s3://bucket/a/b.jpg", "file:///mnt/x.png", "https://h/p?X-Amz-Signature=1", "S3://b/k"]
        {
            assert!(Ref::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "b/k",
            "s3://b",
            "s3://b/",
            "s3:///k",
            "file://rel/x",
            "file:///",
            "http://h/p",
            "https://",
            "s3://b/k\n",
        ] {
            assert!(Ref::new(bad).is_err(), "{bad:?}");
        }
        assert!(Ref::new(format!("s3://b/{}", "k".repeat(MAX_REF_LEN))).is_err(), "too long");
        assert_eq!(r("https://h/p?X-Amz-Signature=secret").shown(), "https://h/p", "no query shown");
        assert_eq!(format!("{:?}", r("https://h/p?sig=secret")), "Ref(https://h/p)");
    }

    #[test]
    fn a_field_reads_bytes_or_a_reference_in_both_encodings() {
        let json = br#"{"a": "AQI=", "b": {"ref": "s3://bucket/k.jpg", "extra": [1]}, "n": 7}"#;
        let two: Two = Encoding::Json.decode(json).unwrap();
        assert_eq!(two.a, vec![1, 2]);
        assert_eq!(Ref::from_bytes(&two.b), Some(r("s3://bucket/k.jpg")), "held as the reference's bytes");
        // Written back as it came; bincode carries the same bytes.
        let again = Encoding::Json.encode(&two).unwrap();
        assert_eq!(String::from_utf8(again).unwrap(), r#"{"a":"AQI=","b":{"ref":"s3://bucket/k.jpg"},"n":7}"#);
        let bin = Encoding::Bincode.encode(&two).unwrap();
        assert_eq!(Encoding::Bincode.decode::<Two>(&bin).unwrap(), two);
        for bad in [r#"{"a": {"ref": "ftp://x/y"}, "b": "", "n": 1}"#, r#"{"a": {"url": "s3://b/k"}, "b": "", "n": 1}"#]
        {
            let e = Encoding::Json.decode::<Two>(bad.as_bytes()).unwrap_err();
            assert!(e.contains("ref"), "{e}");
        }
        let mut broken = REF_MAGIC.to_vec();
        broken.extend_from_slice(b"gopher://x");
        let bin = Encoding::Bincode.encode(&(broken, 1u32)).unwrap();
        let e = Encoding::Bincode.decode::<Two>(&[bin.as_slice(), &[0, 1]].concat()).unwrap_err();
        assert!(e.contains("gopher"), "{e}");
    }

    #[test]
    fn collecting_then_filling_puts_the_fetched_bytes_in_place() {
        for enc in Encoding::ALL {
            let job = Two { a: r("s3://b/x").to_bytes(), b: r("s3://b/x").to_bytes(), n: 3 };
            let body = enc.encode(&job).unwrap();
            let (decoded, refs) = collect_refs(|| enc.decode::<Two>(&body));
            assert_eq!(decoded.unwrap(), job, "{enc}");
            assert_eq!(refs, vec![r("s3://b/x"), r("s3://b/x")], "{enc}: each field, in order");
            let fetched = HashMap::from([("s3://b/x".to_owned(), (vec![9, 9], 2))]);
            let filled = fill_refs(fetched, || enc.decode::<Two>(&body)).unwrap();
            assert_eq!(filled, Two { a: vec![9, 9], b: vec![9, 9], n: 3 }, "{enc}");
            let e = fill_refs(HashMap::new(), || enc.decode::<Two>(&body)).unwrap_err();
            assert!(e.contains("was not fetched"), "{enc}: {e}");
            // The mode ends with the call.
            assert_eq!(enc.decode::<Two>(&body).unwrap(), job, "{enc}");
        }
        let plain = Two { a: vec![1], b: vec![2], n: 0 };
        let (_, refs) = collect_refs(|| Encoding::Json.decode::<Two>(&Encoding::Json.encode(&plain).unwrap()));
        assert!(refs.is_empty());
    }

    #[test]
    fn uploading_writes_each_plain_field_as_a_reference_under_the_prefix() {
        let jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 1];
        let out = Two { a: jpeg.clone(), b: r("s3://in/kept").to_bytes(), n: 1 };
        let (json, objects) = upload_refs("s3://out/job-1/", || Encoding::Json.encode(&out));
        assert_eq!(
            String::from_utf8(json.unwrap()).unwrap(),
            r#"{"a":{"ref":"s3://out/job-1/0.jpg","size":5},"b":{"ref":"s3://in/kept"},"n":1}"#
        );
        assert_eq!(objects, vec![(r("s3://out/job-1/0.jpg"), jpeg.clone())]);
        let (bin, objects) = upload_refs("file:///o/", || Encoding::Bincode.encode(&out));
        let back: Two = Encoding::Bincode.decode(&bin.unwrap()).unwrap();
        assert_eq!(Ref::from_bytes(&back.a), Some(r("file:///o/0.jpg")));
        assert_eq!(objects.len(), 1);
        assert_eq!(extension_of(b"\x89PNG\r\n\x1a\nxx"), ".png");
        assert_eq!(extension_of(b"RIFF\0\0\0\0WEBPVP8 "), ".webp");
        assert_eq!(extension_of(b"plain"), "");
    }

    #[test]
    fn a_json_text_outputs_bytes_are_stored_at_their_pointers_only_when_uploading() {
        use crate::result::Output;
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 7];
        let b64 = STANDARD.encode(jpeg);
        let text = format!(r#"{{"image":"{b64}","more":{{"a/b":["{b64}"]}},"label":"{b64}","w":2}}"#);
        let raw = serde_json::value::RawValue::from_string(text.clone()).unwrap();
        let pointers = ["/image", "/more/a~1b/0", "/not/there"].map(String::from).to_vec();
        let out = Output::from_json_with_bytes("py.x", raw, pointers);
        // Not uploading: the text as the kind wrote it.
        assert_eq!(
            serde_json::to_value(&out).unwrap()["py.x"],
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        );
        let (value, objects) = upload_refs("s3://out/j/", || serde_json::to_value(&out));
        let value = &value.unwrap()["py.x"];
        assert_eq!(value["image"], serde_json::json!({"ref": "s3://out/j/0.jpg", "size": 5}));
        assert_eq!(value["more"]["a/b"][0], serde_json::json!({"ref": "s3://out/j/1.jpg", "size": 5}));
        assert_eq!((value["label"].as_str(), value["w"].as_u64()), (Some(b64.as_str()), Some(2)), "others untouched");
        assert_eq!(objects, vec![(r("s3://out/j/0.jpg"), jpeg.to_vec()), (r("s3://out/j/1.jpg"), jpeg.to_vec())]);
        // The whole output as bytes: the pointer "".
        let raw = serde_json::value::RawValue::from_string(format!("\"{b64}\"")).unwrap();
        let whole = Output::from_json_with_bytes("py.x", raw, vec![String::new()]);
        let (value, objects) = upload_refs("s3://out/k/", || serde_json::to_value(&whole));
        assert_eq!(value.unwrap()["py.x"], serde_json::json!({"ref": "s3://out/k/0.jpg", "size": 5}));
        assert_eq!(objects.len(), 1);
        // A pointer to something that is not base64 text fails the writing, with where.
        let raw = serde_json::value::RawValue::from_string(r#"{"image":5}"#.into()).unwrap();
        let bad = Output::from_json_with_bytes("py.x", raw, vec!["/image".into()]);
        let (e, _) = upload_refs("s3://out/j/", || serde_json::to_value(&bad));
        assert!(e.unwrap_err().to_string().contains("\"/image\""));
    }

    #[test]
    fn a_panic_inside_a_mode_leaves_the_thread_without_it() {
        let caught = std::panic::catch_unwind(|| collect_refs(|| panic!("inside")));
        assert!(caught.is_err());
        let job = Two { a: r("s3://b/x").to_bytes(), b: vec![], n: 0 };
        let body = Encoding::Json.encode(&job).unwrap();
        assert_eq!(Encoding::Json.decode::<Two>(&body).unwrap(), job, "read as a plain reference again");
    }
}
