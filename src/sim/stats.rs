//! What the simulator saw, for tests and load measurements (`GET /_sim/stats`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counters since the simulator started.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SimStats {
    /// Requests by method and route template, e.g.
    /// `"PUT /api/cloud/virtualdatacenters/{vdc}/virtualappliances/{vapp}/virtualmachines/{vm}/state"`.
    pub requests: BTreeMap<String, u64>,
    /// Accepted (202) mutations per VM name, in order.
    pub mutations: BTreeMap<String, Vec<MutationRecord>>,
    /// `GET` of each task, by task id.
    pub task_gets: BTreeMap<String, u64>,
    /// Tasks accepted and not yet terminal (stuck tasks stay here).
    pub tasks_in_flight: u64,
    /// The highest `tasks_in_flight` ever reached.
    pub max_tasks_in_flight: u64,
    /// Refused requests by status and code: `"409 VM-4"`, `"401 GEN-5"`, `"503 injected"`.
    pub rejected: BTreeMap<String, u64>,
    /// Every request under `/api`.
    pub total_requests: u64,
    /// Injected faults by kind: `503`, `429`, `drop`, `lose_answer`, `slow`, `malformed`,
    /// `job_failure`, `stuck`, `no_status_link`; and `token_expired`: requests refused
    /// (401 `GEN-5`) because their token outlived `SimConfig::token_ttl`.
    #[serde(default)]
    pub faults_injected: BTreeMap<String, u64>,
    /// Wall-clock time (ms since the Unix epoch) of the simulator's start: `*_ms` fields
    /// count from it, so other processes can line their own times up with the tasks'.
    #[serde(default)]
    pub started_epoch_ms: u64,
    /// TCP connections accepted since the start.
    #[serde(default)]
    pub connections: u64,
}

impl SimStats {
    /// Accepted mutations over all VMs.
    pub fn mutation_count(&self) -> usize {
        self.mutations.values().map(Vec::len).sum()
    }

    /// Requests counted under a route key (0 if none).
    pub fn requests_to(&self, key: &str) -> u64 {
        self.requests.get(key).copied().unwrap_or(0)
    }
}

/// One accepted mutation and what became of its task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutationRecord {
    pub vm_id: u64,
    /// `"ON"`, `"OFF"`, `"OFF graceful"`, `"PAUSED"` or `"reset"`.
    pub action: String,
    pub task_id: String,
    /// POWER_ON, POWER_OFF, SHUTDOWN, PAUSE, RESUME, RESET.
    pub task_type: String,
    /// Milliseconds since simulator start when the 202 was produced.
    pub accepted_ms: u64,
    /// When the task became STARTED (once it has).
    pub started_ms: Option<u64>,
    /// When the task reached a terminal state (once it has).
    pub finished_ms: Option<u64>,
    /// Terminal task state.
    pub outcome: Option<String>,
}

/// Request and rejection counters (mutation records live with the tasks).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: BTreeMap<String, u64>,
    pub task_gets: BTreeMap<String, u64>,
    pub rejected: BTreeMap<String, u64>,
    pub faults: BTreeMap<String, u64>,
    pub total: u64,
}

impl Counters {
    pub fn request(&mut self, key: &str) {
        self.total += 1;
        bump(&mut self.requests, key);
    }

    pub fn rejected(&mut self, key: &str) {
        bump(&mut self.rejected, key);
    }

    pub fn fault(&mut self, kind: &str) {
        bump(&mut self.faults, kind);
    }

    pub fn task_get(&mut self, task_id: &str) {
        bump(&mut self.task_gets, task_id);
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}
