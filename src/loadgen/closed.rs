//! The closed model on goose: users run the lab's tasks with think time, on the profile's plan.
//!
//! goose writes no HTML report here (loadgen draws its own, see `cli.rs`); each task reports its
//! request to [`LIVE`] for the per-second series, with goose's own timing of it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use goose::config::GooseConfiguration;
use goose::metrics::GooseMetrics;
use goose::prelude::*;

use super::profile::{Profile, Scaling};
use super::report::{Endpoint, Report, ThresholdOutcome};
use super::{DEFAULT_HOST, LIVE, TASKS};

async fn health(user: &mut GooseUser) -> TransactionResult {
    let mut goose = user.get(TASKS[0].1).await?;
    // goose's time for the request (to the response headers, as in its own metrics), in µs.
    let us = goose.request.response_time_micros();
    let body = match goose.response {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    if goose.request.success && super::unhealthy(&body) {
        LIVE.record(0, false, us);
        return user.set_failure("service reports unhealthy", &mut goose.request, None, Some(&body));
    }
    LIVE.record(0, goose.request.success, us);
    Ok(())
}

async fn root(user: &mut GooseUser) -> TransactionResult {
    let goose = user.get(TASKS[1].1).await?;
    LIVE.record(1, goose.request.success, goose.request.response_time_micros());
    Ok(())
}

async fn status(user: &mut GooseUser) -> TransactionResult {
    let goose = user.get(TASKS[2].1).await?;
    LIVE.record(2, goose.request.success, goose.request.response_time_micros());
    Ok(())
}

async fn user_started(_: &mut GooseUser) -> TransactionResult {
    LIVE.users.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn user_stopped(_: &mut GooseUser) -> TransactionResult {
    LIVE.users.fetch_sub(1, Ordering::Relaxed);
    Ok(())
}

/// Whether the command line sizes the run itself (then the profile's plan is not applied).
pub fn sized_by_flags(cfg: &GooseConfiguration) -> bool {
    cfg.users.is_some() || cfg.run_time.is_some() || cfg.increase_rate.is_some() || cfg.increase_time.is_some()
}

/// Runs the profile on goose. Goose's own errors (bad options, no host) come back as `Err`; a
/// failed threshold is a report with `passed == false`.
pub async fn run(
    cfg: GooseConfiguration,
    profile: &Profile,
    scaling: Scaling,
    thresholds: &[&str],
) -> Result<(Report, GooseMetrics), GooseError> {
    let own_plan = !sized_by_flags(&cfg);
    let [min, max] = profile.wait_seconds;
    let lab = scenario!("LabUser")
        .set_wait_time(Duration::from_secs_f64(min), Duration::from_secs_f64(max))?
        .register_transaction(transaction!(user_started).set_on_start())
        .register_transaction(transaction!(health).set_name("health").set_weight(TASKS[0].2 as usize)?)
        .register_transaction(transaction!(root).set_name("root").set_weight(TASKS[1].2 as usize)?)
        .register_transaction(transaction!(status).set_name("status").set_weight(TASKS[2].2 as usize)?)
        .register_transaction(transaction!(user_stopped).set_on_stop());
    let mut attack = GooseAttack::initialize_with_config(cfg)?
        .register_scenario(lab)
        .set_default(GooseDefault::Host, DEFAULT_HOST)?
        .set_default(GooseDefault::NoTelnet, true)?
        .set_default(GooseDefault::NoPrintMetrics, true)?;
    if own_plan {
        attack = attack.set_default(GooseDefault::TestPlan, profile.goose_plan(scaling).as_str())?;
    }
    for rule in thresholds {
        attack = attack.set_default(GooseDefault::Threshold, *rule)?;
    }
    let started = std::time::Instant::now();
    let started_at = crate::timestamp();
    let (metrics, judged) = match attack.execute().await {
        Ok(m) => {
            let t = m.thresholds.clone();
            (m, t)
        }
        Err(GooseError::ThresholdsFailed { metrics, .. }) => {
            let m = *metrics.0;
            let t = m.thresholds.clone();
            (m, t)
        }
        Err(e) => return Err(e),
    };
    let mut report = Report {
        model: "closed".into(),
        started_at,
        duration_s: started.elapsed().as_secs_f64(),
        parts: 1,
        max_users: metrics.maximum_users,
        host: metrics.hosts.iter().next().cloned().unwrap_or_default(),
        ..Default::default()
    };
    for (name, r) in &metrics.requests {
        report.endpoints.push(Endpoint {
            name: name.clone(),
            figures: super::report::Figures { failures: r.fail_count as u64, ..Default::default() },
            status_codes: r.status_code_counts.iter().map(|(c, n)| (c.to_string(), *n as u64)).collect(),
            histogram: super::histogram::Histogram::from_goose(&r.raw_data),
        });
    }
    report.finish();
    report.thresholds = judged
        .iter()
        .map(|t| ThresholdOutcome { rule: t.rule.clone(), observed: t.observed.clone(), passed: t.passed })
        .collect();
    report.passed = report.thresholds.iter().all(|t| t.passed);
    Ok((report, metrics))
}
