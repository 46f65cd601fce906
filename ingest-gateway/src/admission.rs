//! What one gateway takes on at once, so no mix of clients can exhaust its
//! memory: at most `POWEHI_MAX_CONCURRENT_REQUESTS` ingest requests in
//! progress, holding at most `POWEHI_MAX_INFLIGHT_BYTES` of request bodies
//! between them. A request over either is answered `503 overloaded` with
//! Retry-After at once, never queued; a body is counted as its bytes arrive
//! (a declared Content-Length reserves nothing), and released with the request
//! whatever its outcome.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::errors::ApiError;

#[derive(Debug)]
pub struct Admission {
    requests: AtomicUsize,
    bytes: AtomicUsize,
    max_requests: usize,
    max_bytes: usize,
}

/// One admitted request; gives its place and bytes back when dropped.
#[derive(Debug)]
pub struct Ticket<'a> {
    admission: &'a Admission,
    bytes: usize,
}

impl Admission {
    pub fn new(max_requests: usize, max_bytes: usize) -> Self {
        Self {
            requests: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_requests,
            max_bytes,
        }
    }

    /// A place for one more request, if there is one.
    pub fn enter(&self) -> Result<Ticket<'_>, ApiError> {
        let before = self.requests.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_requests {
            self.requests.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::Overloaded("too many requests in progress"));
        }
        Ok(Ticket {
            admission: self,
            bytes: 0,
        })
    }

    /// Requests in progress and body bytes they hold (for metrics).
    pub fn load(&self) -> (usize, usize) {
        (
            self.requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

impl Ticket<'_> {
    /// Counts `n` more body bytes of this request.
    pub fn hold(&mut self, n: usize) -> Result<(), ApiError> {
        let admission = self.admission;
        let before = admission.bytes.fetch_add(n, Ordering::AcqRel);
        if before + n > admission.max_bytes {
            admission.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(ApiError::Overloaded("too many request bytes in progress"));
        }
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.admission.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.admission.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_bytes_are_capped_and_given_back() {
        let admission = Admission::new(2, 100);
        let mut first = admission.enter().expect("room");
        let second = admission.enter().expect("room");
        assert!(matches!(admission.enter(), Err(ApiError::Overloaded(_))));
        first.hold(60).expect("room");
        assert!(first.hold(41).is_err(), "over the byte cap");
        first.hold(40).expect("exactly the cap");
        drop(second);
        let mut third = admission.enter().expect("a place was given back");
        assert!(third.hold(1).is_err());
        drop(first);
        third.hold(100).expect("its bytes were given back");
        drop(third);
        assert_eq!(admission.load(), (0, 0));
    }
}
