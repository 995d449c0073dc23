//! `powerbook sim`: serve the simulator until Ctrl-C (or SIGTERM).

use crate::cli::SimArgs;
use crate::exit::Outcome;
use crate::sim::{DEFAULT_PASSWORD, DEFAULT_USER, SimConfig, SimHandle};
use std::io::Write;

/// Turns the command line into a simulator configuration.
pub fn config_from_args(args: &SimArgs) -> Result<SimConfig, String> {
    let mut config = match (&args.inventory, args.generate) {
        (Some(path), _) => SimConfig::from_inventory_file(path).map_err(|e| e.to_string())?,
        (None, Some(n)) => SimConfig::generated(n),
        (None, None) => SimConfig::lab(),
    };
    config.seed = args.seed;
    config.speed = args.speed;
    if let Some(d) = args.task_duration {
        config.task_duration = d;
    }
    if let Some(j) = args.task_jitter {
        config.task_jitter = j;
    }
    if let Some(code) = args.locked_code {
        config.locked_code = code;
    }
    config.token_ttl = args.token_ttl;
    config.public_url.clone_from(&args.public_url);
    if let Some(d) = args.latency {
        config.latency = d;
    }
    if let Some(j) = args.latency_jitter {
        config.latency_jitter = j;
    }
    let f = &args.faults;
    let faults = &mut config.faults;
    faults.http_503 = f.http_503;
    faults.http_429 = f.http_429;
    faults.drop_connection = f.drop_connection;
    faults.lose_answer = f.lose_answer;
    faults.slow = f.slow;
    faults.job_failure = f.job_failure;
    faults.stuck_task = f.stuck_task;
    faults.malformed_json = f.malformed_json;
    faults.no_status_link = f.no_status_link;
    if let Some(d) = f.retry_after {
        faults.retry_after = d;
    }
    if let Some(d) = f.slow_delay {
        faults.slow_delay = d;
    }
    config.validate()?;
    Ok(config)
}

pub async fn serve(args: SimArgs) -> Outcome {
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        eprintln!(
            "error: refusing to listen on {} (not a loopback address); pass --allow-remote to expose the simulator",
            args.listen
        );
        return Outcome::Usage;
    }
    let config = match config_from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::Usage;
        }
    };
    let mut summary = format!(
        "{} VMs in {} VDCs from {}, seed {}, speed {}",
        config.vms().count(),
        config.vdcs.len(),
        config.name,
        config.seed,
        config.speed
    );
    if !config.latency.is_zero() {
        summary.push_str(&format!(
            ", latency {} ± {} per answer",
            humantime::format_duration(config.latency),
            humantime::format_duration(config.latency_jitter)
        ));
    }
    let sim = match SimHandle::start_on(config, args.listen).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return Outcome::Aborted;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", sim.base_url());
        let _ = out.flush();
    }
    eprintln!("simulator: {summary}");
    eprintln!(
        "simulator: log in as user {DEFAULT_USER}, password {DEFAULT_PASSWORD} (the simulator's own account); \
         stats at {}/_sim/stats; Ctrl-C stops",
        sim.base_url().trim_end_matches("/api")
    );
    wait_for_stop().await;
    eprintln!("simulator: stopping");
    sim.shutdown().await;
    Outcome::Success
}

/// Ctrl-C, or SIGTERM on Unix.
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("error: cannot wait for Ctrl-C ({e}); stopping");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use std::time::Duration;

    fn sim_args(args: &[&str]) -> SimArgs {
        let mut all = vec!["powerbook", "sim"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Sim(a) => a,
            other => panic!("not sim: {other:?}"),
        }
    }

    #[test]
    fn flags_reach_the_config() {
        let args = sim_args(&[
            "--generate",
            "50",
            "--seed",
            "9",
            "--speed",
            "4",
            "--task-duration",
            "2s",
            "--task-jitter",
            "0s",
            "--locked-code",
            "async-task-2",
            "--fault-503",
            "0.1",
            "--fault-429",
            "0.2",
            "--retry-after",
            "3s",
            "--fault-drop",
            "0.3",
            "--fault-lose-answer",
            "0.4",
            "--fault-slow",
            "0.5",
            "--slow-delay",
            "1s",
            "--fault-job-fail",
            "0.6",
            "--fault-stuck",
            "0.7",
            "--fault-malformed",
            "0.8",
            "--fault-no-status-link",
            "0.9",
            "--token-ttl",
            "3s",
            "--public-url",
            "https://cloud.example.com/api",
            "--latency",
            "80ms",
            "--latency-jitter",
            "20ms",
        ]);
        let c = config_from_args(&args).unwrap();
        assert_eq!(c.vms().count(), 50);
        assert_eq!((c.seed, c.speed), (9, 4.0));
        assert_eq!(
            (c.task_duration, c.task_jitter),
            (Duration::from_secs(2), Duration::ZERO)
        );
        assert_eq!(c.locked_code, crate::sim::LockedCode::AsyncTask2);
        let f = &c.faults;
        assert_eq!(
            [
                f.http_503,
                f.http_429,
                f.drop_connection,
                f.lose_answer,
                f.slow,
                f.job_failure,
                f.stuck_task,
                f.malformed_json,
                f.no_status_link
            ],
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
        );
        assert_eq!(c.token_ttl, Some(Duration::from_secs(3)));
        assert_eq!(
            (c.latency, c.latency_jitter),
            (Duration::from_millis(80), Duration::from_millis(20))
        );
        assert_eq!(
            c.public_url.as_deref(),
            Some("https://cloud.example.com/api")
        );
        assert_eq!(
            (f.retry_after, f.slow_delay),
            (Duration::from_secs(3), Duration::from_secs(1))
        );
    }

    #[test]
    fn defaults_are_the_lab_with_faults_off() {
        let c = config_from_args(&sim_args(&[])).unwrap();
        assert_eq!(c.name, "lab.toml");
        assert_eq!(c.faults, crate::sim::Faults::default());
        assert!(Cli::try_parse_from(["powerbook", "sim", "--speed", "0"]).is_err());
        assert!(Cli::try_parse_from(["powerbook", "sim", "--fault-stuck", "-0.1"]).is_err());
        assert_eq!((c.token_ttl, c.public_url), (None, None));
        assert_eq!(
            (c.latency, c.latency_jitter),
            (Duration::ZERO, Duration::ZERO)
        );
        let jitter_over_latency = sim_args(&["--latency", "10ms", "--latency-jitter", "20ms"]);
        assert!(
            config_from_args(&jitter_over_latency)
                .unwrap_err()
                .contains("latency_jitter")
        );
        assert!(Cli::try_parse_from(["powerbook", "sim", "--token-ttl", "0s"]).is_err());
        let bad_url = sim_args(&["--public-url", "ftp://h/api"]);
        assert!(
            config_from_args(&bad_url)
                .unwrap_err()
                .contains("public_url")
        );
    }
}
