//! Async operations (registry pulls, conda solves) run from the synchronous builder.

use crate::error::{BuildError, IoContext, Result};

/// Run one async operation (registry pull, conda solve) from the synchronous builder. Called
/// from inside an async runtime (the CLI runs in one), a runtime may not be started on that
/// thread, so it runs on a thread of its own then.
pub fn block_on<M, F>(make: M) -> Result<F::Output>
where
    M: FnOnce() -> F + Send,
    F: std::future::Future,
    F::Output: Send,
{
    let run = move || -> Result<F::Output> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .io_context(|| "starting an async runtime")?;
        Ok(runtime.block_on(make()))
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|s| s.spawn(run).join())
        .unwrap_or_else(|_| Err(BuildError::step("async", "the async operation panicked")))
}
