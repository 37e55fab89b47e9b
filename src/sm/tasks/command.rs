//! The task command: what a task operation carries in the log.

use serde::{Deserialize, Serialize};

use super::TaskState;

use super::{NewTask, TaskId};
use crate::sm::sessions::SessionId;

/// A state-changing task operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskCommand {
    Submit(NewTask),
    Claim {
        session_id: SessionId,
    },
    Heartbeat {
        task_id: TaskId,
        fencing_token: u64,
        progress_json: Option<String>,
    },
    Complete {
        task_id: TaskId,
        fencing_token: u64,
        result_json: String,
    },
    Fail {
        task_id: TaskId,
        fencing_token: u64,
        error: String,
        retryable: bool,
    },
    Cancel {
        task_id: TaskId,
    },
    Retry {
        task_id: TaskId,
    },
    /// A `Complete` or `Fail` (`finish`) that, once applied, claims the next task
    /// assigned to the session that held it — after the assignment the freed
    /// capacity allows, in the same step (`complete` with `claim_next`). Refused
    /// whole, claiming nothing, when `finish` is. Proposed only once the cluster's
    /// active format is 8 (a format-7 node cannot decode it).
    FinishAndClaim {
        finish: Box<TaskCommand>,
    },
}

impl TaskCommand {
    /// A cheap estimate of the variable part of its encoded size, in bytes.
    pub fn size_hint(&self) -> usize {
        match self {
            Self::Submit(new) => {
                new.kind.len()
                    + new.payload_json.len()
                    + new
                        .required_capabilities
                        .iter()
                        .map(String::len)
                        .sum::<usize>()
                    + new.depends_on.len() * 8
            }
            Self::Heartbeat { progress_json, .. } => progress_json.as_ref().map_or(0, String::len),
            Self::Complete { result_json, .. } => result_json.len(),
            Self::Fail { error, .. } => error.len(),
            Self::Claim { .. } | Self::Cancel { .. } | Self::Retry { .. } => 0,
            Self::FinishAndClaim { finish } => finish.size_hint(),
        }
    }

    /// Whether applying it can free capacity or ready work (then queued tasks are
    /// assigned in the same step).
    pub fn may_free_capacity_or_ready_work(&self) -> bool {
        !matches!(self, Self::Claim { .. } | Self::Heartbeat { .. })
    }
}

/// What applying a task command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// `existing`: an earlier submit with the same idempotency key.
    Submitted {
        task_id: TaskId,
        state: TaskState,
        existing: bool,
    },
    Claimed {
        task_id: TaskId,
        fencing_token: u64,
        lease_expires_at_ms: u64,
    },
    /// The session has no unclaimed task assigned.
    NoneAssigned,
    LeaseExtended {
        lease_expires_at_ms: u64,
        cancel_requested: bool,
    },
    Updated {
        task_id: TaskId,
        state: TaskState,
    },
    NotFound {
        task_id: TaskId,
    },
    /// A `FinishAndClaim`: the finish's outcome (`Updated`) and the claim's
    /// (`Claimed` or `NoneAssigned`).
    Finished {
        finished: Box<TaskOutcome>,
        next: Box<TaskOutcome>,
    },
}
