//! The thread pool a layer's passes run in, and the policy of how many threads a pass uses.

use crate::error::{Error, Result};

/// Most threads a layer or stream may be given. A pool is sized before any work, so a request
/// past this is refused instead of sizing buffers for it (a vector of `1 << 40` thread
/// handles aborts the process); no machine this crate targets has more hardware threads.
pub const MAX_THREADS: usize = 1024;

/// Checks a requested thread count: at least 1 and at most [`MAX_THREADS`].
pub(crate) fn check_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::InvalidArgument {
            what: "threads",
            why: "must be at least 1".into(),
        });
    }
    if n > MAX_THREADS {
        return Err(Error::InvalidArgument {
            what: "threads",
            why: format!("{n} is more than the {MAX_THREADS} a pool may have"),
        });
    }
    Ok(())
}

/// A rayon pool whose threads are joined when the last layer sharing it is dropped.
///
/// Dropping a `rayon::ThreadPool` only tells its threads to exit; they finish later, on their
/// own (rayon-rs/rayon#903). A program that made and dropped layers with threads then briefly
/// had more threads than it asked for, and LeakSanitizer, run while the process goes on (as
/// libFuzzer does), could catch a thread mid-exit and report its deque as leaked. Here the
/// pool's threads are spawned by this struct (rayon's `spawn_handler`), which keeps their
/// handles and joins them after dropping the pool.
#[derive(Debug)]
pub(crate) struct JoinedPool {
    /// `Some` until dropped.
    pool: Option<rayon::ThreadPool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl JoinedPool {
    /// A pool of `n` threads named `fused-rnn-{index}`.
    pub(crate) fn new(n: usize) -> core::result::Result<Self, rayon::ThreadPoolBuildError> {
        let mut threads = Vec::with_capacity(n);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .spawn_handler(|thread| {
                let handle = std::thread::Builder::new()
                    .name(format!("fused-rnn-{}", thread.index()))
                    .spawn(move || thread.run())?;
                threads.push(handle);
                Ok(())
            })
            .build()?;
        Ok(JoinedPool {
            pool: Some(pool),
            threads,
        })
    }
}

impl core::ops::Deref for JoinedPool {
    type Target = rayon::ThreadPool;

    fn deref(&self) -> &rayon::ThreadPool {
        // Taken only in `drop`.
        self.pool.as_ref().expect("pool present until drop")
    }
}

impl Drop for JoinedPool {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        // A pool thread cannot join itself (a layer dropped inside a job of its own pool):
        // then the threads exit on their own, as a plain rayon pool's do.
        let inside = pool.current_thread_index().is_some();
        drop(pool);
        if !inside {
            for t in self.threads.drain(..) {
                // A pool thread that panicked has already reported it; nothing to add.
                let _ = t.join();
            }
        }
    }
}
