//! A minimal futex mutex without guards-by-type, for the tracer's shared state.
//!
//! Why not `std::sync::Mutex`: around `fork()` the state lock must be taken in
//! the atfork *prepare* handler and released in the *parent*/*child* handlers,
//! i.e. across three separate C callbacks, which a scoped guard cannot express.
//! In the child the lock is simply reset (only one thread exists there).
//! Uncontended lock/unlock are one CAS / one swap; waiters sleep on a futex.

use std::sync::atomic::{AtomicU32, Ordering};

/// 0 = unlocked, 1 = locked, 2 = locked with (possible) waiters.
pub struct RawLock {
    state: AtomicU32,
}

impl Default for RawLock {
    fn default() -> Self {
        Self::new()
    }
}

impl RawLock {
    /// An unlocked lock (usable in statics).
    pub const fn new() -> Self {
        RawLock {
            state: AtomicU32::new(0),
        }
    }

    /// Acquire the lock, sleeping if it is held.
    #[inline]
    pub fn lock(&self) {
        if self
            .state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    #[cold]
    fn lock_contended(&self) {
        // Critical sections are short (hash lookup + memcpy), so spin briefly
        // before paying for a futex sleep.
        for _ in 0..100 {
            if self.state.load(Ordering::Relaxed) == 0
                && self
                    .state
                    .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
        while self.state.swap(2, Ordering::Acquire) != 0 {
            // SAFETY: futex on an aligned u32 we own; spurious wakeups and
            // EAGAIN are handled by re-checking the state in the loop.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.state.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    2u32,
                    std::ptr::null::<libc::timespec>(),
                );
            }
        }
    }

    /// Release the lock (must be held by the caller).
    #[inline]
    pub fn unlock(&self) {
        if self.state.swap(0, Ordering::Release) == 2 {
            // SAFETY: wake one waiter on our own futex word.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.state.as_ptr(),
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    1u32,
                );
            }
        }
    }

    /// Forcefully mark unlocked: only for the single-threaded child after
    /// fork, where the lock was held by the (now absent) forking context.
    pub fn reset(&self) {
        self.state.store(0, Ordering::Relaxed);
    }
}
