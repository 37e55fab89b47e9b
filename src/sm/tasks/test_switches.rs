//! Test-only switches of the tasks room, per test thread: replicated task limits
//! overridden, the full-scan reference assignment, and a count of assignment steps.

/// Runs `f` with the thread-local `key` set to `value`, then restores it: the one
/// mechanism behind the test-only switches below.
#[cfg(test)]
fn with_thread_local<T: Copy + 'static, R>(
    key: &'static std::thread::LocalKey<std::cell::Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    let before = key.with(|current| current.replace(value));
    let result = f();
    key.with(|current| current.set(before));
    result
}

/// Test-only override of the replicated task limits, per test thread.
#[cfg(test)]
pub(in crate::sm) mod task_limits {
    use std::cell::Cell;

    use crate::sm::tasks::TaskLimits;

    thread_local! {
        static OVERRIDE: Cell<Option<TaskLimits>> = const { Cell::new(None) };
    }

    pub fn get() -> Option<TaskLimits> {
        OVERRIDE.with(Cell::get)
    }

    /// Runs `f` with `limits` in place of [`TaskLimits::REPLICATED`].
    pub fn with<R>(limits: TaskLimits, f: impl FnOnce() -> R) -> R {
        super::with_thread_local(&OVERRIDE, Some(limits), f)
    }
}

/// Test-only switch to the full-scan reference assignment, per test thread.
#[cfg(test)]
pub(in crate::sm) mod reference {
    use std::cell::Cell;

    thread_local! {
        static ENABLED: Cell<bool> = const { Cell::new(false) };
    }

    pub fn enabled() -> bool {
        ENABLED.with(Cell::get)
    }

    /// Runs `f` with `assign_ready` replaced by the full-scan reference.
    pub fn with<R>(f: impl FnOnce() -> R) -> R {
        super::with_thread_local(&ENABLED, true, f)
    }
}

/// Test-only count of the steps one `assign_ready` call takes (queue heads visited
/// plus capability profiles examined), per test thread.
#[cfg(test)]
pub(in crate::sm) mod work {
    use std::cell::Cell;

    thread_local! {
        static CURRENT: Cell<usize> = const { Cell::new(0) };
        static MAX: Cell<usize> = const { Cell::new(0) };
        static CALLS: Cell<usize> = const { Cell::new(0) };
    }

    /// Counts one call from its start to its drop.
    pub struct Call;

    impl Call {
        pub fn start() -> Self {
            CURRENT.with(|current| current.set(0));
            Call
        }
    }

    impl Drop for Call {
        fn drop(&mut self) {
            let steps = CURRENT.with(Cell::get);
            MAX.with(|max| max.set(max.get().max(steps)));
            CALLS.with(|calls| calls.set(calls.get() + 1));
        }
    }

    pub fn add(steps: usize) {
        CURRENT.with(|current| current.set(current.get() + steps));
    }

    /// (calls, most steps in one call) since the last take; resets both.
    pub fn take() -> (usize, usize) {
        (CALLS.with(|c| c.replace(0)), MAX.with(|m| m.replace(0)))
    }
}

#[cfg(test)]
pub(in crate::sm) fn count_assignment_work(steps: usize) {
    work::add(steps);
}
