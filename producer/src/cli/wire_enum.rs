//! Flags that take one of common's small enums (resize mode, filter, image format, encoding):
//! clap parses them with the enum's own `FromStr` and offers the enum's own `ALL`, named by its
//! `as_str`, as the possible values. The flags take exactly the names a job carries on the
//! wire, `--help` lists them, and nothing here can drift from common.

use std::ffi::OsStr;
use std::str::FromStr;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::error::ErrorKind;

/// A value parser for the enum whose variants are `all`, named by `name`.
pub fn wire_enum<T>(all: &'static [T], name: fn(T) -> &'static str) -> WireEnum<T> {
    WireEnum { all, name }
}

#[derive(Debug)]
pub struct WireEnum<T: 'static> {
    all: &'static [T],
    name: fn(T) -> &'static str,
}

// Not derived: a derive would ask for `T: Clone`, and `WireEnum` copies only a slice and a fn.
impl<T> Clone for WireEnum<T> {
    fn clone(&self) -> Self {
        Self { all: self.all, name: self.name }
    }
}

impl<T> TypedValueParser for WireEnum<T>
where
    T: FromStr + Copy + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<T, clap::Error> {
        // Before these flags took common's names, clap spelled `catmull_rom` as `catmull-rom`;
        // that spelling still works, so no script that used it breaks.
        if let Some(v) = value.to_str().and_then(|s| s.replace('-', "_").parse().ok()) {
            return Ok(v);
        }
        // Not a name: clap's own parser words the error (the possible values, a near miss).
        PossibleValuesParser::new(self.names().map(PossibleValue::new)).parse_ref(cmd, arg, value)?;
        // It accepts only the names, which `FromStr` parses (common's tests hold them together).
        Err(clap::Error::new(ErrorKind::InvalidValue).with_cmd(cmd))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.names().map(PossibleValue::new)))
    }
}

impl<T: Copy> WireEnum<T> {
    fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.all.iter().map(|v| (self.name)(*v))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use warren_common::Encoding;
    use warren_common::resize::{Filter, ResizeMode};

    use super::*;

    #[derive(Parser, Debug)]
    struct Flags {
        #[arg(long, value_parser = wire_enum(&Filter::ALL, Filter::as_str), default_value = "lanczos3")]
        filter: Filter,
        #[arg(long, value_parser = wire_enum(&Encoding::ALL, Encoding::as_str))]
        encoding: Option<Encoding>,
    }

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        Flags::try_parse_from(std::iter::once("flags").chain(args.iter().copied()))
    }

    #[test]
    fn every_wire_name_parses_to_its_variant() {
        for f in Filter::ALL {
            assert_eq!(parse(&["--filter", f.as_str()]).unwrap().filter, f);
        }
        for e in Encoding::ALL {
            assert_eq!(parse(&["--encoding", e.as_str()]).unwrap().encoding, Some(e));
        }
        let defaults = parse(&[]).unwrap();
        assert_eq!((defaults.filter, defaults.encoding), (Filter::Lanczos3, None));
    }

    #[test]
    fn the_old_hyphenated_spelling_still_parses() {
        assert_eq!(parse(&["--filter", "catmull-rom"]).unwrap().filter, Filter::CatmullRom);
    }

    #[test]
    fn an_unknown_name_is_a_usage_error_listing_the_names() {
        let err = parse(&["--filter", "catmull"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        let text = err.to_string();
        assert!(text.contains("invalid value 'catmull' for '--filter <FILTER>'"), "{text}");
        assert!(text.contains("[possible values: nearest, triangle, catmull_rom, gaussian, lanczos3]"), "{text}");
        assert!(text.contains("a similar value exists: 'catmull_rom'"), "{text}");
        // Names are case-sensitive, as on the wire and as clap's own enums were.
        assert_eq!(parse(&["--filter", "Lanczos3"]).unwrap_err().kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn help_lists_the_wire_names() {
        let parser = wire_enum(&ResizeMode::ALL, ResizeMode::as_str);
        let listed: Vec<String> = parser.possible_values().expect("listed").map(|v| v.get_name().to_owned()).collect();
        assert_eq!(listed, ["fit", "fill", "exact"]);
    }
}
