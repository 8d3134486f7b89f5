//! Work spread over threads: jobs taken from one shared queue, so a few big jobs and many
//! small ones keep every thread busy to the end.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// Run `work` on every job of `jobs` on `threads` threads (at least one), the jobs taken in
/// the order given. Once a job has failed no new one starts. The results come in the order
/// of `jobs`; on failure, the error is that of the failed job that comes first in `jobs`
/// (`on_panic` makes the error of a job whose work panicked).
pub fn run_queue<J, T, E>(
    jobs: Vec<J>,
    threads: usize,
    work: impl Fn(J) -> Result<T, E> + Sync,
    on_panic: impl Fn() -> E + Sync,
) -> Result<Vec<T>, E>
where
    J: Send,
    T: Send,
    E: Send,
{
    let count = jobs.len();
    let queue: Mutex<VecDeque<(usize, J)>> = Mutex::new(jobs.into_iter().enumerate().collect());
    let done: Mutex<Vec<(usize, Result<T, E>)>> = Mutex::new(Vec::with_capacity(count));
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, count.max(1)) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some((i, job)) = next else {
                    return;
                };
                let outcome = catch_unwind(AssertUnwindSafe(|| work(job)))
                    .unwrap_or_else(|_| Err(on_panic()));
                if outcome.is_err() {
                    // The other threads stop after the job they are on.
                    queue.lock().unwrap_or_else(|p| p.into_inner()).clear();
                }
                done.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((i, outcome));
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, outcome)| outcome).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_job_order_and_the_first_failed_job_names_the_error() {
        let squares = run_queue(
            (0..50u64).collect(),
            3,
            |n| Ok::<_, String>(n * n),
            || "panicked".to_string(),
        )
        .unwrap();
        assert_eq!(squares, (0..50u64).map(|n| n * n).collect::<Vec<_>>());

        // One thread: jobs run in order, so job 2 fails first and job 4 never starts.
        let started = Mutex::new(Vec::new());
        let err = run_queue(
            (0..6).collect(),
            1,
            |n: i32| {
                started.lock().unwrap().push(n);
                if n == 2 || n == 4 {
                    Err(format!("job {n}"))
                } else {
                    Ok(n)
                }
            },
            || "panicked".to_string(),
        )
        .unwrap_err();
        assert_eq!(err, "job 2");
        assert_eq!(*started.lock().unwrap(), [0, 1, 2]);

        let err = run_queue(
            vec![1, 2],
            2,
            |n: i32| if n == 2 { panic!("boom") } else { Ok(n) },
            || "panicked".to_string(),
        )
        .unwrap_err();
        assert_eq!(err, "panicked");
        assert!(run_queue(Vec::<u8>::new(), 4, Ok::<_, ()>, || ())
            .unwrap()
            .is_empty());
    }
}
