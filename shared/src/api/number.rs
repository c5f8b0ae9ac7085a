//! Whole numbers as JSON writes them. JSON has one number type, and JSON
//! Schema's `integer` (what the OpenAPI document promises) includes `3.0`;
//! the original contract's server accepted it too. Serde's integer types
//! refuse it, so the request types read their integer fields through these
//! functions: any number with no fractional part within the type's range is
//! accepted, anything else is the usual type error.

use serde::de::{Deserializer, Error, Unexpected};
use serde::Deserialize;

/// A whole JSON number (`3` or `3.0`) as an `i64`; `3.5`, `1e300` and
/// non-numbers are refused with serde's own wording.
fn whole<'de, D: Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(de)?;
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => Ok(f as i64),
        Some(f) => Err(D::Error::invalid_type(Unexpected::Float(f), &"a whole number")),
        None => Err(D::Error::invalid_type(
            Unexpected::Other("number"),
            &"a whole number",
        )),
    }
}

/// An `i64` field, written `3` or `3.0`.
pub fn i64<'de, D: Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    whole(de)
}

/// An `i32` field, written `3` or `3.0`; out of range is serde's error.
pub fn i32<'de, D: Deserializer<'de>>(de: D) -> Result<i32, D::Error> {
    let n = whole(de)?;
    i32::try_from(n).map_err(|_| D::Error::invalid_value(Unexpected::Signed(n), &"a 32-bit integer"))
}

/// An optional `i64` field: absent or `null` is `None` (use with
/// `#[serde(default)]`), else as [`i64`](prim@i64).
pub fn opt_i64<'de, D: Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(de)?
        .map(|n| whole(n).map_err(D::Error::custom))
        .transpose()
}

/// A present (not `null`) `i64` field, `None` when absent: use with
/// `#[serde(default)]` for fields the server defaults.
pub fn present_i64<'de, D: Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    whole(de).map(Some)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Probe {
        #[serde(deserialize_with = "super::i32")]
        n: i32,
        #[serde(default, deserialize_with = "super::opt_i64")]
        m: Option<i64>,
    }

    fn probe(json: &str) -> Result<Probe, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn integral_floats_are_whole_numbers() {
        let p = probe(r#"{"n": 363.0, "m": 2.0}"#).unwrap();
        assert_eq!((p.n, p.m), (363, Some(2)));
        assert_eq!(probe(r#"{"n": -4}"#).unwrap().m, None);
        assert_eq!(probe(r#"{"n": 1, "m": null}"#).unwrap().m, None);
    }

    #[test]
    fn fractions_ranges_and_other_types_are_refused() {
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": "1"}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": null}"#,
        ] {
            assert!(probe(bad).is_err(), "{bad}");
        }
        let err = probe(r#"{"n": 1.5}"#).unwrap_err().to_string();
        assert!(err.starts_with("invalid type: floating point `1.5`"), "{err}");
    }
}
