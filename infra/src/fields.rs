//! Reading and writing AMQP header tables without caring which integer or string width a
//! publisher (in any language) chose.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

pub fn get<'a>(headers: Option<&'a FieldTable>, name: &str) -> Option<&'a AMQPValue> {
    headers?.inner().get(name)
}

pub fn get_str(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match get(headers, name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::ByteArray(b) => Some(String::from_utf8_lossy(b.as_slice()).into_owned()),
        _ => None,
    }
}

pub fn get_u64(headers: Option<&FieldTable>, name: &str) -> Option<u64> {
    match *get(headers, name)? {
        AMQPValue::ShortShortInt(v) => u64::try_from(v).ok(),
        AMQPValue::ShortShortUInt(v) => Some(u64::from(v)),
        AMQPValue::ShortInt(v) => u64::try_from(v).ok(),
        AMQPValue::ShortUInt(v) => Some(u64::from(v)),
        AMQPValue::LongInt(v) => u64::try_from(v).ok(),
        AMQPValue::LongUInt(v) => Some(u64::from(v)),
        AMQPValue::LongLongInt(v) => u64::try_from(v).ok(),
        AMQPValue::Timestamp(v) => Some(v),
        _ => None,
    }
}

pub fn set_str(headers: &mut FieldTable, name: &str, value: impl Into<String>) {
    let value: String = value.into();
    headers.insert(ShortString::from(name), AMQPValue::LongString(LongString::from(value)));
}

pub fn set_u64(headers: &mut FieldTable, name: &str, value: u64) {
    // Signed 64-bit is the integer type every client library decodes.
    headers.insert(ShortString::from(name), AMQPValue::LongLongInt(i64::try_from(value).unwrap_or(i64::MAX)));
}
