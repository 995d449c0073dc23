//! The Abiquo error codes powerbook names (planner refusals, simulator answers), each with
//! the message the API gives for it (§5 of the reference). One place, so the planner and the
//! simulator cannot drift apart on a code or its wording.

use std::fmt;

/// An Abiquo error code. [`Code::code`] is the `code` of an errors body, [`Code::message`]
/// its message when the answer adds no detail of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// `VM-1`: no such VM.
    Vm1,
    /// `VM-2`: the VM is locked by another operation.
    Vm2,
    /// `VM-4`: invalid power transition.
    Vm4,
    /// `VM-6`: the hypervisor cannot pause (XEN).
    Vm6,
    /// `VM-10`: the requested state is not ON, OFF or PAUSED.
    Vm10,
    /// `VM-11`: the VM is not in a hypervisor (not deployed, LOCKED in 2.0, UNKNOWN).
    Vm11,
    /// `VM-26`: reset needs an ON VM.
    Vm26,
    /// `VM-120`: the VM is protected.
    Vm120,
    /// `VDC-0`: no such virtual datacenter.
    Vdc0,
    /// `VAPP-0`: no such virtual appliance.
    Vapp0,
    /// `TASK-1`: no such task.
    Task1,
    /// `TASK-2`: the task is not in a state that allows the request (ack).
    Task2,
    /// `ASYNC-TASK-2`: a task is in progress on the entity.
    AsyncTask2,
    /// `GEN-4`: not enough permissions.
    Gen4,
    /// `GEN-5`: invalid credentials.
    Gen5,
    /// `400-BAD-REQUEST`: malformed request (answers carry the detail).
    BadRequest,
    /// `401-UNAUTHORIZED`: no credentials.
    Unauthorized,
    /// `404-NOT-FOUND`: no such resource.
    NotFound,
    /// `406-NOT-ACCEPTABLE`: the `Accept` header names nothing the resource produces.
    NotAcceptable,
    /// `415-UNSUPPORTED-MEDIA-TYPE`: wrong body type (answers carry the detail).
    UnsupportedMediaType,
    /// `415-UNSUPPORTED-MEDIA-TYPE-VERSION`: unknown version on `Content-Type`.
    UnsupportedMediaTypeVersion,
    /// `429-TOO-MANY-REQUESTS`: rate limited.
    TooManyRequests,
    /// `503-SERVICE-UNAVAILABLE`: try again later.
    ServiceUnavailable,
}

impl Code {
    pub const ALL: [Code; 23] = [
        Code::Vm1,
        Code::Vm2,
        Code::Vm4,
        Code::Vm6,
        Code::Vm10,
        Code::Vm11,
        Code::Vm26,
        Code::Vm120,
        Code::Vdc0,
        Code::Vapp0,
        Code::Task1,
        Code::Task2,
        Code::AsyncTask2,
        Code::Gen4,
        Code::Gen5,
        Code::BadRequest,
        Code::Unauthorized,
        Code::NotFound,
        Code::NotAcceptable,
        Code::UnsupportedMediaType,
        Code::UnsupportedMediaTypeVersion,
        Code::TooManyRequests,
        Code::ServiceUnavailable,
    ];

    /// The code as the API spells it in an errors body.
    pub fn code(self) -> &'static str {
        match self {
            Code::Vm1 => "VM-1",
            Code::Vm2 => "VM-2",
            Code::Vm4 => "VM-4",
            Code::Vm6 => "VM-6",
            Code::Vm10 => "VM-10",
            Code::Vm11 => "VM-11",
            Code::Vm26 => "VM-26",
            Code::Vm120 => "VM-120",
            Code::Vdc0 => "VDC-0",
            Code::Vapp0 => "VAPP-0",
            Code::Task1 => "TASK-1",
            Code::Task2 => "TASK-2",
            Code::AsyncTask2 => "ASYNC-TASK-2",
            Code::Gen4 => "GEN-4",
            Code::Gen5 => "GEN-5",
            Code::BadRequest => "400-BAD-REQUEST",
            Code::Unauthorized => "401-UNAUTHORIZED",
            Code::NotFound => "404-NOT-FOUND",
            Code::NotAcceptable => "406-NOT-ACCEPTABLE",
            Code::UnsupportedMediaType => "415-UNSUPPORTED-MEDIA-TYPE",
            Code::UnsupportedMediaTypeVersion => "415-UNSUPPORTED-MEDIA-TYPE-VERSION",
            Code::TooManyRequests => "429-TOO-MANY-REQUESTS",
            Code::ServiceUnavailable => "503-SERVICE-UNAVAILABLE",
        }
    }

    /// The code's message when nothing more specific is said.
    pub fn message(self) -> &'static str {
        match self {
            Code::Vm1 => "The requested virtual machine does not exist",
            Code::Vm2 => "The virtual machine is already locked by another operation",
            Code::Vm4 => "The virtual machine cannot change to the required state",
            Code::Vm6 => "The virtual machine does not support the action PAUSE",
            Code::Vm10 => {
                "The virtual machine is in a state that does not allow the request; the requested state must be ON, OFF or PAUSED"
            }
            Code::Vm11 => {
                "The virtual machine is not in any hypervisor. Therefore the change of state cannot be applied"
            }
            Code::Vm26 => "The allowed power state for resetting a virtual machine is ON",
            Code::Vm120 => "The virtual machine is protected and cannot be used",
            Code::Vdc0 => "The requested virtual datacenter does not exist",
            Code::Vapp0 => "The requested virtual appliance does not exist",
            Code::Task1 => "The requested task does not exist",
            Code::Task2 => "The task is not in the appropriate state",
            Code::AsyncTask2 => "Unable to operate with a Taskable related to a task in progress",
            Code::Gen4 => "Not enough permissions to perform this action",
            Code::Gen5 => "Invalid credentials",
            Code::BadRequest => "The request is malformed",
            Code::Unauthorized => "This request requires authentication",
            Code::NotFound => "The requested resource does not exist",
            Code::NotAcceptable => "Invalid version parameter for 'Accept' header",
            Code::UnsupportedMediaType => "Unsupported 'Content-type'",
            Code::UnsupportedMediaTypeVersion => "Invalid 'Content-type' version",
            Code::TooManyRequests => "Too many requests, slow down",
            Code::ServiceUnavailable => {
                "The service is not available right now, try again in a few moments"
            }
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn codes_are_distinct_and_every_one_has_a_message() {
        let codes: BTreeSet<&str> = Code::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(codes.len(), Code::ALL.len());
        assert!(Code::ALL.iter().all(|c| !c.message().is_empty()));
        assert_eq!(Code::Vm4.to_string(), "VM-4");
    }
}
