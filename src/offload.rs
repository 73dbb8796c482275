//! Where CPU-heavy work runs, so that it never freezes the runtime.
//!
//! The tokio workers (as many as cores) also run the registry watcher, the
//! reconciler, the sink and the HTTP server: a worker held for seconds
//! delays all of them. Three kinds of work can take that long:
//!
//! * a burst of a topic with a transform (up to 4 096 records, each up to
//!   its 50 ms deadline): run with [`off_worker`] while holding one of the
//!   [`transform_slot`]s, and time-sliced by the partition task;
//! * gzip of a large request body: on the blocking pool, above
//!   [`crate::sink::service::GZIP_OFF_WORKER`];
//! * compiling the VRL programs of a registry change: [`off_worker`].
//!
//! [`off_worker`] is `tokio::task::block_in_place`: the worker hands its
//! queue of tasks to another thread before running the closure, so the
//! runtime keeps all its workers, and the closure may borrow the task's
//! state (a partition task's messages borrow its queue, which `spawn_blocking`
//! could not take).

use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long a partition task shapes records before it lets the runtime run
/// something else (and looks at its answers and cancellation again). A
/// single record may overrun it by its transform's deadline.
pub const SLICE: Duration = Duration::from_millis(5);

/// Runs `f` where it cannot starve the runtime's other tasks: through
/// `block_in_place` on a multi-threaded runtime; inline on a current-thread
/// runtime (tests, one-shot commands), where no other worker exists to
/// hand the queue to.
pub fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// How many transform bursts may run at once: one less than the cores (at
/// least one), so that slow programs leave a core's worth of CPU to the
/// workers, and cannot take every thread of the blocking pool.
pub fn transform_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

/// Waits for one of the process's [`transform_slots`]; held for one burst
/// (one [`SLICE`]). The semaphore is fair (first come, first served), so a
/// slow topic cannot keep the others' bursts out. `None` only if the
/// semaphore were closed, which nothing does.
pub async fn transform_slot() -> Option<SemaphorePermit<'static>> {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    let slots = SLOTS.get_or_init(|| Semaphore::new(transform_slots()));
    slots.acquire().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_worker_runs_inline_without_a_runtime() {
        assert_eq!(off_worker(|| 7), 7);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn off_worker_runs_inline_on_a_current_thread_runtime() {
        assert_eq!(off_worker(|| 7), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn off_worker_leaves_the_worker_free() {
        // With the only worker inside `off_worker`, a task spawned before
        // still runs: its queue was handed to another thread.
        let (tx, rx) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            let _ = tx.send(());
        });
        let ran = off_worker(|| rx.recv_timeout(Duration::from_secs(10)).is_ok());
        assert!(
            ran,
            "the spawned task did not run while the worker was lent"
        );
    }

    #[test]
    fn at_least_one_slot() {
        assert!(transform_slots() >= 1);
    }
}
