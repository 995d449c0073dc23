//! Load figure for the simulator: N concurrent clients against `powerbook sim --generate M`
//! running as its own process, so its CPU time can be read apart from the clients'.
//!
//! `cargo bench --bench sim_load` (env: SIM_LOAD_CLIENTS=500, SIM_LOAD_VMS=10000,
//! SIM_LOAD_SECS=10). Each client owns VMS/CLIENTS VMs and loops: list a page of VMs,
//! GET one of its VMs, power it off or on, poll the task until it ends (50 ms apart).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of a process, in seconds (Linux /proc).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    errors: AtomicU64,
    mutations: AtomicU64,
    latency_us: std::sync::Mutex<Vec<u64>>,
}

async fn timed(
    counts: &Counts,
    req: reqwest::RequestBuilder,
) -> Option<(reqwest::StatusCode, serde_json::Value)> {
    let t = Instant::now();
    let r = req.basic_auth("admin", Some("xabiquo")).send().await;
    let result = match r {
        Ok(r) => {
            let status = r.status();
            let body = r.json().await.unwrap_or(serde_json::Value::Null);
            Some((status, body))
        }
        Err(_) => None,
    };
    counts.requests.fetch_add(1, Ordering::Relaxed);
    if result.as_ref().is_none_or(|(s, _)| s.is_server_error()) {
        counts.errors.fetch_add(1, Ordering::Relaxed);
    }
    if let Ok(mut l) = counts.latency_us.lock() {
        l.push(t.elapsed().as_micros() as u64);
    }
    result
}

async fn client_loop(
    http: reqwest::Client,
    base: String,
    vms: Vec<String>,
    total_vms: u64,
    deadline: Instant,
    counts: Arc<Counts>,
    seed: u64,
) {
    let mut i = seed;
    while Instant::now() < deadline {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let start = (i >> 33) % total_vms.saturating_sub(25).max(1);
        timed(
            &counts,
            http.get(format!(
                "{base}/cloud/virtualmachines?startwith={start}&limit=25"
            ))
            .header(
                "Accept",
                "application/vnd.abiquo.virtualmachines+json; version=5.0",
            ),
        )
        .await;
        let vm = &vms[(i >> 40) as usize % vms.len()];
        let Some((_, body)) = timed(
            &counts,
            http.get(vm).header(
                "Accept",
                "application/vnd.abiquo.virtualmachine+json; version=5.0",
            ),
        )
        .await
        else {
            continue;
        };
        let target = match body["state"].as_str() {
            Some("ON") => "OFF",
            Some("OFF") => "ON",
            _ => continue,
        };
        let Some((status, body)) = timed(
            &counts,
            http.put(format!("{vm}/state"))
                .header(
                    "Accept",
                    "application/vnd.abiquo.acceptedrequest+json; version=5.0",
                )
                .header(
                    "Content-Type",
                    "application/vnd.abiquo.virtualmachinestate+json; version=5.0",
                )
                .body(format!(r#"{{"state":"{target}"}}"#)),
        )
        .await
        else {
            continue;
        };
        if status != reqwest::StatusCode::ACCEPTED {
            continue;
        }
        counts.mutations.fetch_add(1, Ordering::Relaxed);
        let Some(task) = body["links"][0]["href"].as_str().map(str::to_owned) else {
            continue;
        };
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match timed(
                &counts,
                http.get(&task)
                    .header("Accept", "application/vnd.abiquo.task+json; version=5.0"),
            )
            .await
            {
                Some((_, t))
                    if t["state"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("FINISHED")) =>
                {
                    break;
                }
                _ if Instant::now() > deadline => break,
                _ => {}
            }
        }
    }
}

fn main() {
    let clients = env_or("SIM_LOAD_CLIENTS", 500);
    let vms = env_or("SIM_LOAD_VMS", 10_000);
    let secs = env_or("SIM_LOAD_SECS", 10);

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_powerbook"))
        .args(["sim", "--listen", "127.0.0.1:0", "--speed", "10"])
        .args(["--generate", &vms.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start powerbook sim");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();
    let pid = child.id();

    // A probe on its own thread and runtime: how long one request takes while the load
    // runs, without queueing behind the load generator's 500 tasks.
    let probe_url = base.clone();
    let probe = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("probe runtime");
        rt.block_on(async {
            let http = reqwest::Client::new();
            let url = format!("{probe_url}/cloud/virtualmachines?limit=25");
            let end = Instant::now() + Duration::from_secs(secs);
            let mut lat = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                let ok = http
                    .get(&url)
                    .basic_auth("admin", Some("xabiquo"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    lat.push(t.elapsed().as_micros() as u64);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            lat.sort_unstable();
            lat
        })
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let counts = Arc::new(Counts::default());
    let (wall, server_cpu, client_cpu) = rt.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients as usize)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        // Every VM's href, from the simulator's own dump.
        let dump: Vec<serde_json::Value> = http
            .get(base.replace("/api", "/_sim/vms"))
            .send()
            .await
            .expect("dump")
            .json()
            .await
            .expect("dump json");
        let hrefs: Vec<String> = dump
            .iter()
            .filter_map(|v| v["href"].as_str().map(str::to_owned))
            .collect();
        let per = (hrefs.len() / clients as usize).max(1);
        let cpu0 = cpu_seconds(pid);
        let me0 = cpu_seconds(std::process::id());
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(secs);
        let mut set = tokio::task::JoinSet::new();
        for c in 0..clients as usize {
            let own: Vec<String> = hrefs.iter().skip(c * per).take(per).cloned().collect();
            let own = if own.is_empty() {
                vec![hrefs[c % hrefs.len()].clone()]
            } else {
                own
            };
            set.spawn(client_loop(
                http.clone(),
                base.clone(),
                own,
                vms,
                deadline,
                Arc::clone(&counts),
                c as u64 + 1,
            ));
        }
        while set.join_next().await.is_some() {}
        let wall = t0.elapsed().as_secs_f64();
        let server = cpu_seconds(pid).zip(cpu0).map(|(a, b)| a - b);
        let me = cpu_seconds(std::process::id()).zip(me0).map(|(a, b)| a - b);
        let stats: serde_json::Value = http
            .get(base.replace("/api", "/_sim/stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json");
        println!(
            "simulator: max tasks in flight {}, total requests {}",
            stats["max_tasks_in_flight"], stats["total_requests"]
        );
        (wall, server, me)
    });
    let _ = child.kill();
    let _ = child.wait();
    let probe = probe.join().unwrap_or_default();

    let requests = counts.requests.load(Ordering::Relaxed);
    let mut lat = counts
        .latency_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{clients} clients, {vms} VMs, {wall:.1} s: {requests} requests ({:.0} req/s), {} mutations, {} errors",
        requests as f64 / wall,
        counts.mutations.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
    );
    println!(
        "latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        lat.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    if !probe.is_empty() {
        println!(
            "probe (own thread, 25-VM page every 100 ms): p50 {:.1} ms, max {:.1} ms over {} requests",
            probe[probe.len() / 2] as f64 / 1000.0,
            probe[probe.len() - 1] as f64 / 1000.0,
            probe.len()
        );
    }
    if let Some(cpu) = server_cpu {
        println!(
            "simulator CPU {cpu:.2} s = {:.0}% of one core ({:.0} µs per request)",
            cpu / wall * 100.0,
            cpu / requests.max(1) as f64 * 1e6
        );
    }
    if let Some(cpu) = client_cpu {
        println!(
            "load generator CPU {cpu:.2} s = {:.0}% of one core",
            cpu / wall * 100.0
        );
    }
}
