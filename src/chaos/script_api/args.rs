//! How script values become what the functions need: option maps, seconds, numbers, text, and
//! the run's parameters in the type of the script's default. Every function reads its options
//! through these, so every refusal reads alike.

use std::time::Duration;

use rhai::{Dynamic, Map};
use serde_json::Value;

/// Refuses an options map with a key `known` does not list, naming the function and the keys.
pub(super) fn known_options(function: &str, m: &Map, known: &[&str]) -> Result<(), String> {
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown {function} option '{k}' (known: {})", known.join(", "))),
        None => Ok(()),
    }
}

/// A number (int or float) from a script value.
fn number(v: &Dynamic) -> Option<f64> {
    v.as_float().ok().or_else(|| v.as_int().ok().map(|i| i as f64))
}

/// A number of seconds from a script value (int or float, 0 to 24 h).
pub(super) fn seconds(what: &str, v: &Dynamic) -> Result<Duration, String> {
    let s = number(v).ok_or_else(|| format!("{what} must be a number of seconds, got {}", v.type_name()))?;
    crate::config::duration::seconds_within(s, 0.0, 86_400.0)
        .ok_or_else(|| format!("{what} must be between 0 and 86400 seconds, got {s}"))
}

/// A finite number more than 0.
pub(super) fn positive(what: &str, v: &Dynamic) -> Result<f64, String> {
    match number(v) {
        Some(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(format!("{what} must be a number more than 0, got {v}")),
    }
}

/// A string.
pub(super) fn text(what: &str, v: &Dynamic) -> Result<String, String> {
    v.clone().into_string().map_err(|_| format!("{what} must be a string, got {}", v.type_name()))
}

pub(super) fn int_arg(what: &str, v: &Dynamic) -> Result<i64, String> {
    v.as_int()
        .ok()
        .or_else(|| v.as_float().ok().map(|f| f.round() as i64))
        .ok_or_else(|| format!("{what} must be a number, got {}", v.type_name()))
}

/// Turns the run's parameter into the type of the script's default (CLI params arrive as strings).
pub(super) fn coerce_param(name: &str, given: &Value, default: &Dynamic) -> Result<Dynamic, String> {
    let text = given.as_str().map(str::to_string).unwrap_or_else(|| given.to_string());
    let bad =
        |want: &str| format!("parameter '{name}' must be {want} (the script's default is {default}), got {given}");
    if default.is_int() {
        // A fractional number where the default is whole is still a number: keep it as given.
        given
            .as_i64()
            .or_else(|| text.trim().parse().ok())
            .map(Dynamic::from_int)
            .or_else(|| given.as_f64().or_else(|| text.trim().parse().ok()).map(Dynamic::from_float))
            .ok_or_else(|| bad("a number"))
    } else if default.is_float() {
        given.as_f64().or_else(|| text.trim().parse().ok()).map(Dynamic::from_float).ok_or_else(|| bad("a number"))
    } else if default.is_bool() {
        given.as_bool().or_else(|| text.trim().parse().ok()).map(Dynamic::from_bool).ok_or_else(|| bad("true or false"))
    } else if default.is_string() {
        Ok(Dynamic::from(text))
    } else {
        rhai::serde::to_dynamic(given).map_err(|e| bad(&e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn params_take_the_type_of_their_default() {
        let d = |v: Value, default: Dynamic| coerce_param("p", &v, &default);
        assert_eq!(d(json!("5"), Dynamic::from_int(1)).unwrap().as_int().unwrap(), 5);
        assert_eq!(d(json!(0.5), Dynamic::from_int(1)).unwrap().as_float().unwrap(), 0.5);
        assert_eq!(d(json!("2.5"), Dynamic::from_float(1.0)).unwrap().as_float().unwrap(), 2.5);
        assert!(d(json!("true"), Dynamic::FALSE).unwrap().as_bool().unwrap());
        assert_eq!(d(json!(7), Dynamic::from("x")).unwrap().into_string().unwrap(), "7");
        let e = d(json!("five"), Dynamic::from_int(1)).unwrap_err();
        assert!(e.contains("parameter 'p' must be a number"), "{e}");
    }
}
