//! The value parsers of the settings: each error is a sentence that names the variable and the
//! accepted values, as clap shows it.

use std::net::IpAddr;
use std::time::Duration;

use super::Retain;

pub(super) fn parse_host(s: &str) -> Result<IpAddr, String> {
    s.trim().parse().map_err(|_| format!("APP_HOST must be an IP address such as 127.0.0.1 or 0.0.0.0, got '{s}'"))
}

pub(super) fn parse_port(s: &str) -> Result<u16, String> {
    s.trim().parse().map_err(|_| format!("APP_PORT must be a port number from 0 to 65535, got '{s}'"))
}

pub(super) fn parse_redis_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("REDIS_PORT must be a port number from 1 to 65535, got '{s}'")),
    }
}

pub(super) fn parse_redis_host(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.contains(['/', ' ', '@']) {
        return Err(format!("REDIS_HOST must be a host name or IP address, got '{s}'"));
    }
    Ok(s.to_string())
}

/// A parser for an http(s) base URL; the trailing slash is dropped.
pub(super) fn parse_http_url(name: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |s: &str| {
        let t = s.trim().trim_end_matches('/');
        match reqwest::Url::parse(t) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(t.to_string()),
            _ => Err(format!("{name} must be an http(s) URL such as https://management.azure.com, got '{s}'")),
        }
    }
}

pub(super) fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("REQUEST_COUNTER_SAMPLE_RATE must be a number from 0.0 to 1.0, got '{s}'")),
    }
}

pub(super) fn parse_log_level(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let s = s.trim().to_ascii_lowercase();
    let message = || {
        format!(
            "LOG_LEVEL must be one of trace, debug, info, warn, error, off, or a tracing directive like \
             'chaos_lab=debug,info', got '{s}'"
        )
    };
    // A bare word must be a level: EnvFilter would take a typo such as "verbose" as a target name
    // and silently log nothing.
    if !s.contains(['=', ',']) && !LEVELS.contains(&s.as_str()) {
        return Err(message());
    }
    tracing_subscriber::EnvFilter::try_new(&s).map_err(|e| format!("{} ({e})", message()))?;
    Ok(s)
}

/// A parser for a number of seconds (fractions allowed) within `min..=max`.
pub(super) fn seconds(name: &'static str, min: f64, max: f64) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .and_then(|v| super::duration::seconds_within(v, min, max))
            .ok_or_else(|| format!("{name} must be a number of seconds from {min} to {max}, got '{s}'"))
    }
}

/// A parser for a whole number within `min..=max`.
pub(super) fn count(name: &'static str, min: usize, max: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s: &str| match s.trim().parse::<usize>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!("{name} must be a whole number from {min} to {max}, got '{s}'")),
    }
}

/// A parser for booleans that accepts what Python's lab accepted (`true/false/1/0/yes/no`).
pub(super) fn boolean(name: &'static str) -> impl Fn(&str) -> Result<bool, String> + Clone {
    move |s: &str| match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{name} must be true or false (also accepted: 1/0, yes/no, on/off), got '{s}'")),
    }
}

/// Parses `RUNS_RETAIN`: `"<count>"`, `"<age>"` or `"<count>,<age>"`, the age a whole number of
/// days, hours or minutes (`30d`, `12h`, `90m`).
pub fn parse_retain(s: &str) -> Result<Retain, String> {
    let bad = |why: &str| {
        format!(
            "RUNS_RETAIN must be '<count>', '<age>' or '<count>,<age>', the age in days, hours or minutes \
             (e.g. '1000,30d', '500', '12h'); {why}, got '{s}'"
        )
    };
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() > 2 {
        return Err(bad("it has more than two parts"));
    }
    let (mut max_runs, mut max_age) = (None, None);
    for part in parts {
        if part.is_empty() {
            return Err(bad("a part is empty"));
        }
        if part.bytes().all(|b| b.is_ascii_digit()) {
            let n: usize = part.parse().map_err(|_| bad("the count is too large"))?;
            if n == 0 {
                return Err(bad("a count of 0 would delete every run"));
            }
            if max_runs.replace(n).is_some() {
                return Err(bad("it gives two counts"));
            }
        } else {
            let age = parse_age(part).ok_or_else(|| bad(&format!("'{part}' is neither a count nor an age")))?;
            if age.is_zero() {
                return Err(bad("an age of 0 would delete every run"));
            }
            if max_age.replace(age).is_some() {
                return Err(bad("it gives two ages"));
            }
        }
    }
    Ok(Retain { max_runs: max_runs.unwrap_or(usize::MAX), max_age })
}

/// `30d`, `12h`, `90m`.
fn parse_age(s: &str) -> Option<Duration> {
    let unit = match s.chars().last()? {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        _ => return None,
    };
    let n = &s[..s.len() - 1];
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse::<u64>().ok()?.checked_mul(unit).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_count_an_age_or_both() {
        let day = 86_400;
        assert_eq!(parse_retain(crate::config::RETAIN_DEFAULT).unwrap(), Retain::default());
        assert_eq!(
            parse_retain("1000,30d").unwrap(),
            Retain { max_runs: 1000, max_age: Some(Duration::from_secs(30 * day)) }
        );
        assert_eq!(parse_retain("50").unwrap(), Retain { max_runs: 50, max_age: None });
        assert_eq!(
            parse_retain("12h").unwrap(),
            Retain { max_runs: usize::MAX, max_age: Some(Duration::from_secs(12 * 3600)) }
        );
        assert_eq!(
            parse_retain(" 90m , 7 ").unwrap(),
            Retain { max_runs: 7, max_age: Some(Duration::from_secs(90 * 60)) }
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_give_an_example() {
        for bad in ["", "0", "0,30d", "30x", "d", "1,2", "1d,2h", "1,2d,3", "-5", "0d", "1.5d", "99999999999999999999"]
        {
            let Err(e) = parse_retain(bad) else { panic!("'{bad}' was accepted") };
            assert!(
                e.contains("RUNS_RETAIN") && e.contains("'1000,30d'") && e.contains(&format!("got '{bad}'")),
                "{e}"
            );
        }
        assert!(parse_retain("0").unwrap_err().contains("a count of 0 would delete every run"));
    }
}
