//! Durations as people type them on a command line: `30` (seconds), `30s`, `1.5s`, `500ms`,
//! `5m`, `1h`, `1m30s`. One parser for both binaries' flags (`chaos-lab`, `loadgen`); the service's
//! environment settings stay plain seconds, as the original lab's were; [`seconds_within`] is the
//! range check both use, and the script API too.

use std::time::Duration;

/// Parses `s` as a duration; a bare number is seconds. The error says what was given and what is
/// accepted, so clap can show it as is.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("'{s}' is not a duration: use seconds (30), or a number with a unit: 500ms, 30s, 5m, 1h, 1m30s");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(v) = t.parse::<f64>() {
        return secs(v).ok_or_else(bad);
    }
    let mut total = 0.0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let unit_len = rest[num_len..].find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len() - num_len);
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        let scale = match &rest[num_len..num_len + unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[num_len + unit_len..];
    }
    secs(total).ok_or_else(bad)
}

fn secs(v: f64) -> Option<Duration> {
    seconds_within(v, 0.0, 1e9)
}

/// `v` seconds as a duration when it is a finite number within `min..=max`: the one range check
/// of every "seconds" a setting, a flag or a script gives.
pub fn seconds_within(v: f64, min: f64, max: f64) -> Option<Duration> {
    (v.is_finite() && (min..=max).contains(&v)).then(|| Duration::from_secs_f64(v))
}

/// Whole seconds, for the flags the API takes as integers (`timeout_seconds`, `--duration`).
/// A fraction is refused rather than silently rounded.
pub fn parse_whole_secs(s: &str) -> Result<u64, String> {
    let d = parse(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("'{s}' must be a whole number of seconds"));
    }
    Ok(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_are_seconds_and_units_add_up() {
        assert_eq!(parse("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_whole_secs("2m").unwrap(), 120);
    }

    #[test]
    fn nonsense_is_refused_with_the_accepted_forms() {
        for s in ["", "s", "5x", "-3", "1.2.3s", "m5", "inf", "5 m"] {
            let e = parse(s).unwrap_err();
            assert!(e.contains("500ms, 30s, 5m"), "{s}: {e}");
        }
        assert!(parse_whole_secs("1.5s").unwrap_err().contains("whole number"));
    }
}
