//! The tasks room: task records and their indexes (`records`), the task command
//! (`TaskCommand`), the rules that move tasks between states (`rules`), assignment
//! by capability and load (`scheduler`), and the session-end hook (a lost lease).
//!
//! Like all of `sm`, it must not depend on storage, Raft, the clock or the HTTP
//! layer; of the other rooms it reads `sessions` (capabilities, load, capacity).

mod command;
mod records;
mod rules;
mod scheduler;
mod submit;
#[cfg(test)]
mod test_switches;

pub use command::{TaskCommand, TaskOutcome};
pub use records::*;
pub use rules::retry_backoff_ms;
pub(in crate::sm) use rules::TaskLimits;
#[cfg(test)]
pub(in crate::sm) use test_switches::{count_assignment_work, reference, task_limits, work};
