//! Load profiles: one TOML file per profile in `loadtests/profiles/`, shared with the Locust shape.
//!
//! A profile is a list of stages. During a stage, users move towards the stage's `users` at
//! `spawn_rate` users per second, then hold; a stage without `spawn_rate` holds the previous
//! count. An optional `rate` (requests/s) makes the stage open-model in `loadgen`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where profiles live when neither `--profiles-dir` nor `LOADGEN_PROFILES_DIR` says otherwise.
pub const DEFAULT_DIR: &str = "loadtests/profiles";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub description: String,
    /// Think time between two tasks of one user, uniform in `[min, max]` seconds.
    pub wait_seconds: [f64; 2],
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub duration_seconds: f64,
    pub users: u64,
    pub spawn_rate: Option<f64>,
    /// Requests per second for the open model.
    pub rate: Option<f64>,
}

/// How a run changes a profile: users × `users`, durations × `time`.
#[derive(Debug, Clone, Copy)]
pub struct Scaling {
    pub users: f64,
    pub time: f64,
}

impl Scaling {
    /// A scaled user count: rounded, and never 0 for a stage that had users.
    pub fn users(&self, users: u64) -> usize {
        if users == 0 {
            return 0;
        }
        ((users as f64 * self.users).round() as usize).max(1)
    }
}

/// The profiles found in `dir` (file stems of `*.toml`), sorted.
pub fn available(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    names
}

/// Loads a profile by name (`staged` → `<dir>/staged.toml`) or by path (anything with a `/` or
/// ending in `.toml`).
pub fn load(dir: &Path, name: &str) -> Result<(PathBuf, Profile), String> {
    let path = if name.contains('/') || name.ends_with(".toml") {
        PathBuf::from(name)
    } else {
        dir.join(format!("{name}.toml"))
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let known = available(dir);
        let hint = if known.is_empty() {
            format!("no profiles in {} (set --profiles-dir or LOADGEN_PROFILES_DIR)", dir.display())
        } else {
            format!("available profiles in {}: {}", dir.display(), known.join(", "))
        };
        format!("profile '{name}': cannot read {}: {e}; {hint}", path.display())
    })?;
    let profile = parse(&text).map_err(|e| format!("profile {}: {e}", path.display()))?;
    Ok((path, profile))
}

/// Parses and checks a profile; errors name the line or the stage and field.
pub fn parse(text: &str) -> Result<Profile, String> {
    let profile: Profile = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| line_col(text, s.start))
            .map(|(l, c)| format!("line {l}, column {c}: "))
            .unwrap_or_default();
        format!("{at}{}", e.message())
    })?;
    profile.validate()?;
    Ok(profile)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

impl Profile {
    fn validate(&self) -> Result<(), String> {
        let [min, max] = self.wait_seconds;
        if !(min.is_finite() && max.is_finite() && min >= 0.0 && min <= max) {
            return Err(format!("wait_seconds must be [min, max] with 0 <= min <= max, got [{min}, {max}]"));
        }
        if self.stages.is_empty() {
            return Err("a profile needs at least one [[stages]] entry".into());
        }
        let mut previous = 0;
        for (i, s) in self.stages.iter().enumerate() {
            let n = i + 1;
            if !(s.duration_seconds.is_finite() && s.duration_seconds > 0.0) {
                return Err(format!("stage {n}: duration_seconds must be more than 0, got {}", s.duration_seconds));
            }
            match s.spawn_rate {
                Some(r) if !(r.is_finite() && r > 0.0) => {
                    return Err(format!("stage {n}: spawn_rate must be more than 0, got {r}"));
                }
                None if s.users != previous => {
                    return Err(format!(
                        "stage {n}: users goes from {previous} to {}, so the stage needs a spawn_rate \
                         (only a stage that keeps the user count may leave it out)",
                        s.users
                    ));
                }
                _ => {}
            }
            if let Some(r) = s.rate
                && !(r.is_finite() && r > 0.0)
            {
                return Err(format!("stage {n}: rate must be more than 0 requests/s, got {r}"));
            }
            previous = s.users;
        }
        if self.stages.iter().all(|s| s.users == 0) {
            return Err("every stage has 0 users: nothing would run".into());
        }
        Ok(())
    }

    /// Whether any stage sets a request rate (the open model).
    pub fn has_rates(&self) -> bool {
        self.stages.iter().any(|s| s.rate.is_some())
    }

    /// Total duration in seconds, unscaled.
    pub fn duration_seconds(&self) -> f64 {
        self.stages.iter().map(|s| s.duration_seconds).sum()
    }

    /// The goose test plan: `users,seconds` steps (goose plans have whole seconds). Each stage
    /// becomes a ramp step and a hold step; times are rounded on the cumulative clock so the
    /// scaled plan keeps the profile's total length. A plan that ends with users stops them.
    pub fn test_plan(&self, scaling: Scaling) -> Vec<(usize, u64)> {
        let mut steps = Vec::new();
        let (mut clock, mut rounded, mut previous) = (0.0_f64, 0_u64, 0_u64);
        let mut push = |users: usize, until: f64, steps: &mut Vec<(usize, u64)>| {
            let end = (until * scaling.time).round() as u64;
            let seconds = end.saturating_sub(rounded);
            // A step that neither changes the users nor lasts is left out (goose stalls on one).
            if seconds > 0 || steps.last().map(|s: &(usize, u64)| s.0).unwrap_or(0) != users {
                steps.push((users, seconds));
            }
            rounded = end;
        };
        for s in &self.stages {
            let users = scaling.users(s.users);
            let ramp = match s.spawn_rate {
                Some(rate) => (s.users.abs_diff(previous) as f64 / rate).min(s.duration_seconds),
                None => 0.0,
            };
            if ramp > 0.0 || s.users != previous {
                clock += ramp;
                push(users, clock, &mut steps);
            }
            if s.duration_seconds > ramp {
                clock += s.duration_seconds - ramp;
                push(users, clock, &mut steps);
            }
            previous = s.users;
        }
        if previous > 0 {
            steps.push((0, 0));
        }
        steps
    }

    /// [`Self::test_plan`] in goose's `--test-plan` syntax.
    pub fn goose_plan(&self, scaling: Scaling) -> String {
        self.test_plan(scaling).iter().map(|(u, s)| format!("{u},{s}s")).collect::<Vec<_>>().join(";")
    }

    /// Open-model segments: (seconds, requests/s, concurrency cap) per stage, scaled. `rate`
    /// replaces every stage's rate. Rates scale with users (a `--split` share takes its part).
    pub fn open_segments(&self, scaling: Scaling, rate: Option<f64>) -> Vec<Segment> {
        self.stages
            .iter()
            .map(|s| Segment {
                seconds: s.duration_seconds * scaling.time,
                rate: rate.unwrap_or_else(|| s.rate.map_or(0.0, |r| r * scaling.users)),
                cap: scaling.users(s.users).max(1),
            })
            .collect()
    }
}

/// One stage of the open model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub seconds: f64,
    /// Requests per second to start, whatever the responses do.
    pub rate: f64,
    /// Most requests in flight (the stage's users); arrivals beyond it wait, counted as late.
    pub cap: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Scaling = Scaling { users: 1.0, time: 1.0 };

    fn shipped(name: &str) -> Profile {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_DIR);
        load(&dir, name).unwrap().1
    }

    #[test]
    fn shipped_profiles_give_the_spec_stages_as_goose_plans() {
        // SPEC 4: staged (120,100,10) → (180,500,50) → (300,1000,100)
        assert_eq!(shipped("staged").goose_plan(ONE), "100,10s;100,110s;500,8s;500,172s;1000,5s;1000,295s;0,0s");
        // spike (10,5000,500) → (60,5000,hold) → (10,0,500)
        assert_eq!(shipped("spike").goose_plan(ONE), "5000,10s;5000,60s;0,10s");
        // sustained (30,500,50) → (600,500,hold)
        assert_eq!(shipped("sustained").goose_plan(ONE), "500,10s;500,20s;500,600s;0,0s");
        assert_eq!(shipped("spike").wait_seconds, [0.1, 0.5]);
        assert_eq!(shipped("staged").wait_seconds, [1.0, 3.0]);
    }

    #[test]
    fn scaling_keeps_the_total_length_and_at_least_one_user() {
        // No zero-length step that keeps the users: goose never leaves one.
        let short = shipped("sustained").goose_plan(Scaling { users: 0.02, time: 0.005 });
        assert_eq!(short, "10,0s;10,3s;0,0s");
        let s = Scaling { users: 0.01, time: 0.01 };
        let plan = shipped("staged").test_plan(s);
        assert_eq!(plan.iter().map(|p| p.1).sum::<u64>(), 6);
        assert_eq!(plan.iter().map(|p| p.0).max(), Some(10));
        assert_eq!(Scaling { users: 0.0001, time: 1.0 }.users(100), 1);
        assert_eq!(Scaling { users: 0.5, time: 1.0 }.users(0), 0);
    }

    #[test]
    fn bad_profiles_say_what_is_wrong() {
        let err = parse("description = \"x\"\nwait_seconds = [1, 2]\n[[stages]]\nduration_seconds = 10\nusers = 5\n")
            .unwrap_err();
        assert!(err.contains("stage 1") && err.contains("spawn_rate"), "{err}");
        let err = parse(
            "description = \"x\"\nwait_seconds = [3, 1]\n[[stages]]\nduration_seconds = 1\nusers = 1\nspawn_rate = 1\n",
        )
        .unwrap_err();
        assert!(err.contains("wait_seconds"), "{err}");
        let err = parse("description = \"x\"\nwait_seconds = [1, 2]\nstagez = 1\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("stagez"), "{err}");
        let err = load(Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_DIR).as_path(), "nope").unwrap_err();
        assert!(err.contains("available profiles") && err.contains("staged"), "{err}");
    }

    #[test]
    fn open_segments_follow_stage_rates_or_the_override() {
        let p = parse(
            "description = \"r\"\nwait_seconds = [0, 0]\n[[stages]]\nduration_seconds = 10\nusers = 20\nspawn_rate = 5\nrate = 100\n",
        )
        .unwrap();
        assert!(p.has_rates());
        let half = Scaling { users: 0.5, time: 2.0 };
        assert_eq!(p.open_segments(half, None), vec![Segment { seconds: 20.0, rate: 50.0, cap: 10 }]);
        assert_eq!(p.open_segments(half, Some(7.0))[0].rate, 7.0);
    }
}
