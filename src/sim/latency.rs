//! Added latency: every answer under `/api` (never `/_sim/*`) takes `latency ± jitter`, as a
//! real API's 50–300 ms do.
//!
//! The delay is split in two halves around the processing: half before it (the request
//! travelling to the server) and half after it (the answer travelling back). The answer is
//! built when the request is processed, so a poll shows the task as it was half a round trip
//! before the client reads it, and a mutation is committed half a round trip after it was
//! sent. Both halves are timer sleeps on the request's own task: no lock is held and no
//! thread is taken while waiting, so thousands of requests can be in flight at once.

use super::shared::Shared;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

/// The delay of one answer: `latency` plus a uniform draw in `-jitter..=jitter`, never
/// below zero.
pub(crate) fn draw(latency: Duration, jitter: Duration, rng: &mut impl Rng) -> Duration {
    if jitter.is_zero() {
        return latency;
    }
    let base = latency.as_secs_f64();
    let j = jitter.as_secs_f64();
    Duration::try_from_secs_f64((base + rng.random_range(-j..=j)).max(0.0)).unwrap_or(latency)
}

/// Whether a path is part of the simulated API (`/api` and below).
fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// Middleware on the whole router: delays `/api` answers, half before processing and half
/// after; leaves `/_sim/*` alone.
pub(crate) async fn delay(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let cfg = &shared.cfg;
    if (cfg.latency.is_zero() && cfg.latency_jitter.is_zero()) || !is_api(req.uri().path()) {
        return next.run(req).await;
    }
    let total = draw(cfg.latency, cfg.latency_jitter, &mut *shared.latency_rng());
    let before = total / 2;
    tokio::time::sleep(before).await;
    let resp = next.run(req).await;
    tokio::time::sleep(total - before).await;
    resp
}

#[cfg(test)]
mod tests {
    use super::draw;
    use crate::sim::testing::{TASK, admin, client, fast_lab, put_off, send, start, vm_url};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use reqwest::StatusCode;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    fn epoch_ms() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            * 1000.0
    }

    #[test]
    fn jittered_delays_stay_within_latency_plus_or_minus_jitter_and_repeat_with_the_seed() {
        let (lat, jit) = (Duration::from_millis(80), Duration::from_millis(20));
        let a: Vec<Duration> = {
            let mut rng = StdRng::seed_from_u64(7);
            (0..1000).map(|_| draw(lat, jit, &mut rng)).collect()
        };
        let b: Vec<Duration> = {
            let mut rng = StdRng::seed_from_u64(7);
            (0..1000).map(|_| draw(lat, jit, &mut rng)).collect()
        };
        assert_eq!(a, b);
        assert!(
            a.iter()
                .all(|d| (Duration::from_millis(60)..=Duration::from_millis(100)).contains(d))
        );
        let below = a.iter().filter(|d| **d < lat).count();
        assert!(
            (300..=700).contains(&below),
            "{below} of 1000 below the mean"
        );
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(draw(lat, Duration::ZERO, &mut rng), lat);
        // A jitter larger than the latency never gives a negative delay.
        let wide = draw(Duration::ZERO, jit, &mut rng);
        assert!(wide <= jit);
    }

    #[tokio::test]
    async fn a_get_takes_at_least_the_latency() {
        let mut cfg = fast_lab();
        cfg.latency = Duration::from_millis(150);
        let sim = start(cfg).await;
        let c = client(Duration::from_secs(10));
        let t = Instant::now();
        let (status, _, _) = send(c.get(format!("{}/version", sim.base_url()))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn a_mutation_is_processed_half_way_through_the_delay() {
        let mut cfg = fast_lab();
        cfg.latency = Duration::from_millis(400);
        (cfg.speed, cfg.task_jitter) = (1.0, Duration::ZERO);
        cfg.task_duration = Duration::from_millis(500);
        let sim = start(cfg).await;
        let c = client(Duration::from_secs(10));
        let web = vm_url(&sim, "web-01");
        let sent = epoch_ms();
        let (status, _, accepted) = send(put_off(&c, &web)).await;
        let answered = epoch_ms();
        assert_eq!(status, StatusCode::ACCEPTED);
        let stats = sim.stats();
        let rec = &stats.mutations["web-01"][0];
        let processed = (stats.started_epoch_ms + rec.accepted_ms) as f64;
        // Both clocks count whole milliseconds: allow a few either side of each half.
        assert!(processed - sent >= 195.0, "{}", processed - sent);
        assert!(answered - processed >= 195.0, "{}", answered - processed);

        // A poll's answer is the task as it was when processed, not when it arrives: the
        // task (500 ms) ends while the poll's answer is on its way back.
        let href = accepted["links"][0]["href"].as_str().unwrap().to_owned();
        let path = href.split_once("/api").unwrap().1.to_owned();
        let poll = admin(c.get(format!("{}{path}", sim.base_url()))).header("Accept", TASK);
        let (status, _, task) = send(poll).await;
        let poll_answered = epoch_ms();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(task["state"], "STARTED");
        let stats = sim.stats();
        let rec = &stats.mutations["web-01"][0];
        let finished = (stats.started_epoch_ms + rec.finished_ms.unwrap()) as f64;
        assert!(finished < poll_answered, "{finished} vs {poll_answered}");
    }

    #[tokio::test]
    async fn sim_endpoints_answer_at_once_while_api_answers_are_delayed() {
        let mut cfg = fast_lab();
        cfg.latency = Duration::from_secs(3);
        let sim = start(cfg).await;
        let c = client(Duration::from_secs(10));
        let base = sim.base_url().to_owned();
        let slow = tokio::spawn({
            let c = c.clone();
            let url = format!("{base}/version");
            async move { c.get(url).send().await.map(|r| r.status()) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The world lock is free while the API request sleeps: `/_sim/stats` (which takes
        // it) answers before the delayed request does.
        let stats = c
            .get(base.replace("/api", "/_sim/stats"))
            .send()
            .await
            .unwrap();
        assert_eq!(stats.status(), StatusCode::OK);
        assert!(!slow.is_finished(), "the API answer came before its delay");
        assert_eq!(slow.await.unwrap().unwrap(), StatusCode::OK);
    }

    #[tokio::test]
    async fn many_concurrent_requests_wait_their_delays_side_by_side() {
        const N: usize = 400;
        let mut cfg = fast_lab();
        cfg.latency = Duration::from_millis(500);
        cfg.latency_jitter = Duration::from_millis(100);
        let sim = start(cfg).await;
        let c = client(Duration::from_secs(60));
        let url = format!("{}/version", sim.base_url());
        let t = Instant::now();
        let all = futures::future::join_all(
            (0..N).map(|_| async { c.get(&url).send().await.map(|r| r.status()) }),
        )
        .await;
        let took = t.elapsed();
        assert!(all.iter().all(|r| matches!(r, Ok(StatusCode::OK))));
        assert!(took >= Duration::from_millis(400), "{took:?}");
        // One after the other they would take N × 400 ms at least (160 s).
        assert!(took < Duration::from_secs(30), "{took:?}");
        assert_eq!(sim.stats().total_requests, N as u64);
    }
}
