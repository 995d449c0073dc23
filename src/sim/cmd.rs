//! `powerbook sim`: serve the simulator until Ctrl-C.

use super::{DEFAULT_PASSWORD, DEFAULT_USER, SimConfig, SimHandle};
use crate::cli::SimArgs;
use crate::exit::Outcome;
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
    let summary = format!(
        "{} VMs in {} VDCs from {}, seed {}, speed {}",
        config.vms().count(),
        config.vdcs.len(),
        config.name,
        config.seed,
        config.speed
    );
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
