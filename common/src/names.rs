//! Parsing Warren's small enums (resize mode, filter, image format, encoding) from text by the
//! names serde gives them on the wire, so a command-line flag takes exactly the words a job (or
//! a setting, through serde) carries. Each enum lists its variants in `ALL` and names them in
//! `as_str`; the tests beside it check, with `check_wire_names`, that those agree with serde for
//! every variant.

/// A name that is none of an enum's variants; says which names are accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {got:?}; expected one of: {}", .expected.join(", "))]
pub struct UnknownName {
    /// What was being named, e.g. "resize mode".
    pub what: &'static str,
    pub got: String,
    pub expected: Vec<&'static str>,
}

/// The variant of `all` whose `name` is `s`, exactly (names are case-sensitive, as on the wire).
pub(crate) fn parse<T: Copy>(
    what: &'static str,
    s: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, UnknownName> {
    all.iter().copied().find(|v| name(*v) == s).ok_or_else(|| UnknownName {
        what,
        got: s.to_owned(),
        expected: all.iter().map(|v| name(*v)).collect(),
    })
}

/// Asserts that `all` is every variant of `T` in declaration order, and that `Display`,
/// `FromStr` and serde name each one the same way.
#[cfg(test)]
pub(crate) fn check_wire_names<T>(all: &[T])
where
    T: Copy + PartialEq + std::fmt::Debug + std::fmt::Display + std::str::FromStr<Err = UnknownName>,
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let names: Vec<String> = all.iter().map(T::to_string).collect();
    assert_eq!(names, serde_variants::<T>(), "ALL and the names differ from serde's variants");
    for (v, name) in all.iter().zip(&names) {
        assert_eq!(serde_json::to_value(v).expect("serialises"), serde_json::Value::String(name.clone()));
        assert_eq!(serde_json::from_value::<T>(name.as_str().into()).expect("deserialises"), *v);
        assert_eq!(name.parse::<T>(), Ok(*v), "{name} parses back");
    }
    let err = "no such name".parse::<T>().expect_err("an unknown name is refused");
    assert_eq!(err.expected, names);
}

/// The names serde's derive gives `T`'s variants (after `rename_all`), in declaration order.
/// The derived `Deserialize` hands them to `deserialize_enum`; a deserializer that only records
/// them reads them without depending on any error message's wording.
#[cfg(test)]
fn serde_variants<T: serde::de::DeserializeOwned>() -> Vec<&'static str> {
    use serde::de::{Error as _, Visitor, value::Error};

    struct Probe(std::cell::Cell<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for &Probe {
        type Error = Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("not an enum"))
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            self.0.set(variants);
            Err(Error::custom("only recording the variants"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
        }
    }
    let probe = Probe(std::cell::Cell::new(&[]));
    let _ = T::deserialize(&probe);
    probe.0.get().to_vec()
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    /// Named the way serde names it.
    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Colour {
        Red,
        DarkBlue,
    }

    impl Colour {
        const ALL: [Self; 2] = [Self::Red, Self::DarkBlue];
        fn as_str(self) -> &'static str {
            match self {
                Self::Red => "red",
                Self::DarkBlue => "dark_blue",
            }
        }
    }

    impl std::fmt::Display for Colour {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.as_str())
        }
    }

    impl std::str::FromStr for Colour {
        type Err = UnknownName;
        fn from_str(s: &str) -> Result<Self, UnknownName> {
            parse("colour", s, &Self::ALL, Self::as_str)
        }
    }

    /// Drifted: one name is not serde's.
    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Shade {
        Light,
        DarkGrey,
    }

    impl Shade {
        const ALL: [Self; 2] = [Self::Light, Self::DarkGrey];
        fn as_str(self) -> &'static str {
            match self {
                Self::Light => "light",
                Self::DarkGrey => "dark-grey",
            }
        }
    }

    impl std::fmt::Display for Shade {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.as_str())
        }
    }

    impl std::str::FromStr for Shade {
        type Err = UnknownName;
        fn from_str(s: &str) -> Result<Self, UnknownName> {
            parse("shade", s, &Self::ALL, Self::as_str)
        }
    }

    #[test]
    fn an_unknown_name_lists_the_accepted_ones() {
        let err = "blue".parse::<Colour>().unwrap_err();
        assert_eq!(err.to_string(), r#"unknown colour "blue"; expected one of: red, dark_blue"#);
        assert_eq!("Red".parse::<Colour>().unwrap_err().got, "Red", "names are case-sensitive");
        assert_eq!("dark_blue".parse::<Colour>(), Ok(Colour::DarkBlue));
    }

    #[test]
    fn serde_variants_reads_the_renamed_names() {
        assert_eq!(serde_variants::<Colour>(), ["red", "dark_blue"]);
    }

    #[test]
    fn names_that_agree_with_serde_pass() {
        check_wire_names(&Colour::ALL);
    }

    #[test]
    #[should_panic(expected = "ALL and the names differ from serde's variants")]
    fn a_name_serde_does_not_use_fails() {
        check_wire_names(&Shade::ALL);
    }

    #[test]
    #[should_panic(expected = "ALL and the names differ from serde's variants")]
    fn a_variant_missing_from_all_fails() {
        check_wire_names(&[Colour::Red]);
    }
}
