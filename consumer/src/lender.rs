//! A fixed set of reusable things (ONNX sessions) lent one at a time to blocking jobs. A loan
//! is given back when it is dropped, so a job that panics while holding one gives it back too:
//! otherwise each panic would lose a session for good, and once all were lost every later job
//! would wait forever.

use std::sync::{Condvar, Mutex};

#[derive(Debug)]
pub struct Lender<T> {
    free: Mutex<Vec<T>>,
    returned: Condvar,
}

impl<T> Lender<T> {
    pub fn new(items: Vec<T>) -> Self {
        Self { free: Mutex::new(items), returned: Condvar::new() }
    }

    /// Waits (blocking the thread) for a free item and runs `f` with it.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut loan = Loan { lender: self, item: Some(self.take()) };
        // The item is Some until the loan is dropped.
        #[allow(clippy::unwrap_used)]
        f(loan.item.as_mut().unwrap())
    }

    fn take(&self) -> T {
        // A poisoned lock only means another job panicked while holding it; the Vec is intact.
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(item) = free.pop() {
                return item;
            }
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Items not lent out right now.
    pub fn available(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

struct Loan<'a, T> {
    lender: &'a Lender<T>,
    item: Option<T>,
}

impl<T> Drop for Loan<'_, T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.lender.free.lock().unwrap_or_else(|p| p.into_inner()).push(item);
            self.lender.returned.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_holding_an_item_gives_it_back() {
        let lender = Lender::new(vec![1u32]);
        for _ in 0..3 {
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                lender.with(|_| panic!("inference blew up"));
            }));
            assert!(panicked.is_err());
            assert_eq!(lender.available(), 1, "the session is back after the panic");
        }
        assert_eq!(lender.with(|n| *n + 1), 2, "and lent again without waiting forever");
    }
}
