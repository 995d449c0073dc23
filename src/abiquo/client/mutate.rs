//! Power mutations: send once, and when the answer is lost, find out what happened (the
//! VM's tasks, then its state) before anything is sent again.

use super::transport::{AuthMode, MAX_RELOGINS, NoAnswer, Tries, is_transient, strip_query};
use super::{Client, MutationAnswer, epoch_secs, link_href, lock};
use crate::abiquo::error::ClientError;
use crate::abiquo::media;
use crate::abiquo::model::{
    AcceptedRequest, PowerRequest, Task, VirtualMachine, VirtualMachineStateBody, VmState,
};
use crate::abiquo::tasks::{find_ours, task_id_of};
use reqwest::Method;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What reconciliation of a lost answer found.
enum Reconciled {
    Found(String),
    AlreadyDone(VmState),
    NotProcessed,
}

impl Client {
    /// Sends `request` through the VM's `state` or `reset` link.
    pub async fn power(
        &self,
        vm: &VirtualMachine,
        request: PowerRequest,
    ) -> Result<MutationAnswer, ClientError> {
        let rel = match request {
            PowerRequest::State { .. } => "state",
            PowerRequest::Reset => "reset",
        };
        let href = link_href(vm.link(rel), rel, || format!("VM {}", vm.name))?;
        match request {
            PowerRequest::State { target, graceful } => {
                let body = VirtualMachineStateBody {
                    state: target.state(),
                    graceful_shutdown: graceful.then_some(true),
                    links: Vec::new(),
                };
                let bytes = serde_json::to_vec(&body).map_err(|e| ClientError::Decode {
                    context: "encoding the state body".into(),
                    detail: e.to_string(),
                })?;
                let ct = self.media(media::VIRTUAL_MACHINE_STATE);
                self.mutate(vm, Method::PUT, &href, Some((ct, bytes)), request)
                    .await
            }
            // Never resent blindly: a lost answer is reconciled first.
            PowerRequest::Reset => self.mutate(vm, Method::POST, &href, None, request).await,
        }
    }

    /// Acknowledges a failed task (`acknowledge` link). powerbook does not do this by
    /// default: the failed job must stay visible to operators.
    pub async fn ack(&self, task: &Task) -> Result<(), ClientError> {
        let href = link_href(task.link("acknowledge"), "acknowledge", || {
            format!("task {}", task.task_id)
        })?;
        // Acknowledging twice is harmless, so transient failures are retried like a GET.
        let mut tries = Tries::new();
        let request = format!("POST {}", strip_query(&href));
        loop {
            let (after, reason, error) = match self
                .attempt(
                    Method::POST,
                    &href,
                    "text/json,application/json",
                    None,
                    AuthMode::Session,
                    &tries,
                )
                .await
            {
                Ok(a) if (200..300).contains(&a.status) => return Ok(()),
                Ok(a) if is_transient(a.status) => (
                    a.retry_after(),
                    format!("HTTP {}", a.status),
                    ClientError::from_answer(a.status, &a.body),
                ),
                Ok(a) => return Err(ClientError::from_answer(a.status, &a.body)),
                Err(e) if e.retryable() => (None, e.reason(), e.into_error()),
                Err(e) => return Err(e.into_error()),
            };
            if !self
                .retry_after_failure(&mut tries, after, &request, &reason)
                .await
            {
                return Err(self.gave_up(&tries, error));
            }
        }
    }

    /// Sends a mutation; on a lost answer, finds out what happened before sending again.
    async fn mutate(
        &self,
        vm: &VirtualMachine,
        method: Method,
        href: &str,
        body: Option<(String, Vec<u8>)>,
        mutation: PowerRequest,
    ) -> Result<MutationAnswer, ClientError> {
        let accept = self.media(media::ACCEPTED_REQUEST);
        let context = format!("{mutation} on {}", vm.name);
        let request = format!("{method} {}", strip_query(href));
        let mut tries = Tries::new();
        let mut relogins = 0;
        loop {
            let sent_at = epoch_secs();
            let lost = match self
                .attempt(
                    method.clone(),
                    href,
                    &accept,
                    body.clone(),
                    AuthMode::Session,
                    &tries,
                )
                .await
            {
                Ok(a) if (200..300).contains(&a.status) => {
                    match serde_json::from_slice::<AcceptedRequest>(&a.body) {
                        Ok(accepted) => match accepted.status_href() {
                            Some(task_href) => {
                                let task_href = task_href.to_owned();
                                self.remember_task(&task_href);
                                return Ok(MutationAnswer::Accepted { task_href });
                            }
                            // Accepted, but we cannot follow it: find its task instead.
                            None => ClientError::NoLink {
                                rel: "status".into(),
                                on: format!("the answer to {context}"),
                            },
                        },
                        // Processed, but the answer is unreadable: same as lost.
                        Err(e) => ClientError::Decode {
                            context: context.clone(),
                            detail: e.to_string(),
                        },
                    }
                }
                // An expired session: log in again, then find out before sending again
                // (a proxy may have answered 401 for a request that got through).
                Ok(a) if a.status == 401 && relogins < MAX_RELOGINS => {
                    if !self.refresh_session(a.token.as_deref()).await? {
                        return Err(ClientError::from_answer(a.status, &a.body));
                    }
                    relogins += 1;
                    ClientError::from_answer(a.status, &a.body)
                }
                // 429 is an explicit "not processed, come back later".
                Ok(a) if a.status == 429 => {
                    let error = ClientError::from_answer(a.status, &a.body);
                    if !self
                        .retry_after_failure(&mut tries, a.retry_after(), &request, "HTTP 429")
                        .await
                    {
                        return Err(self.gave_up(&tries, error));
                    }
                    continue;
                }
                Ok(a) if a.status >= 500 => ClientError::from_answer(a.status, &a.body),
                Ok(a) => return Err(ClientError::from_answer(a.status, &a.body)),
                Err(e @ NoAnswer::NotSent(_)) => {
                    let reason = e.reason();
                    let e = e.into_error();
                    if !self
                        .retry_after_failure(&mut tries, None, &request, &reason)
                        .await
                    {
                        return Err(self.gave_up(&tries, e));
                    }
                    continue;
                }
                Err(NoAnswer::MaybeSent(e) | NoAnswer::Oversized(e)) => e,
                Err(e) => return Err(e.into_error()),
            };
            tracing::debug!(%lost, "reconciling {context}");
            self.inner
                .counters
                .reconciliations
                .fetch_add(1, Ordering::Relaxed);
            match self.reconcile(vm, mutation, sent_at, &context).await? {
                Reconciled::Found(task_href) => {
                    self.inner.counters.adopted.fetch_add(1, Ordering::Relaxed);
                    return Ok(MutationAnswer::Adopted { task_href });
                }
                Reconciled::AlreadyDone(state) => {
                    return Ok(MutationAnswer::AlreadyDone { state });
                }
                Reconciled::NotProcessed => {
                    let reason = lost.to_string();
                    if !self
                        .retry_after_failure(&mut tries, None, &request, &reason)
                        .await
                    {
                        return Err(self.gave_up(&tries, lost));
                    }
                }
            }
        }
    }

    /// After a lost answer: did our request create a task? Looks at the VM's tasks (newest
    /// first) for one of the right type created since the request, then at the VM itself.
    async fn reconcile(
        &self,
        vm: &VirtualMachine,
        mutation: PowerRequest,
        sent_at: i64,
        context: &str,
    ) -> Result<Reconciled, ClientError> {
        let started = Instant::now();
        let mut round = 0u32;
        loop {
            let tasks = self.vm_tasks(vm).await?;
            let found = find_ours(&tasks, mutation, &vm.state, sent_at, |id| {
                lock(&self.inner.known_tasks).contains(id)
            });
            if let Some(task) = found {
                let href = link_href(task.link("self"), "self", || {
                    format!("task {}", task.task_id)
                })?;
                self.remember_task(&href);
                return Ok(Reconciled::Found(href));
            }
            let fresh = self.get_vm(vm).await?;
            match (&fresh.state, mutation) {
                (VmState::Locked, _) => {
                    // Busy: maybe with our task, not listed yet. Wait, bounded.
                    if started.elapsed() >= self.inner.reconcile_wait {
                        return Err(ClientError::AnswerLost {
                            context: format!(
                                "{context} (the VM stayed LOCKED without a task of ours)"
                            ),
                        });
                    }
                    tokio::time::sleep(self.inner.retry.delay(round.min(4), None)).await;
                    round += 1;
                }
                (state, PowerRequest::State { target, .. }) if *state == target.state() => {
                    return Ok(Reconciled::AlreadyDone(state.clone()));
                }
                _ => return Ok(Reconciled::NotProcessed),
            }
        }
    }

    fn remember_task(&self, href: &str) {
        lock(&self.inner.known_tasks).insert(task_id_of(href).to_owned());
    }
}
