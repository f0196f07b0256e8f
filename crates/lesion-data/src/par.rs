//! Parallel work whose errors are reported as a sequential loop would report them.
//!
//! rayon's `collect::<Result<_, _>>()` returns whichever error a worker thread reached first,
//! so with two bad files the one named in the error changed from run to run (a flaky test in CI
//! and an error message that could not be reproduced). [`collect_in_order`] runs every item,
//! keeps the input order, and returns the first error in that order: the same file a
//! sequential loop would have named, on every run and every thread count.

use rayon::prelude::*;

/// Collects `items` in their input order; on failure returns the error of the earliest failing
/// item (in input order), after every item has run.
pub fn collect_in_order<T, E, I>(items: I) -> Result<Vec<T>, E>
where
    I: ParallelIterator<Item = Result<T, E>>,
    T: Send,
    E: Send,
{
    // rayon's collect into a Vec keeps the input order, for indexed and filtered iterators
    // alike; the sequential collect then stops at the earliest error.
    let all: Vec<Result<T, E>> = items.collect();
    all.into_iter().collect()
}

/// [`collect_in_order`] as a method, so a parallel chain ends in `.collect_in_order()` where
/// it would have ended in `.collect::<Result<_, _>>()`.
pub trait CollectInOrder<T: Send, E: Send>: ParallelIterator<Item = Result<T, E>> + Sized {
    /// See [`collect_in_order`].
    fn collect_in_order(self) -> Result<Vec<T>, E> {
        collect_in_order(self)
    }
}

impl<T: Send, E: Send, I: ParallelIterator<Item = Result<T, E>>> CollectInOrder<T, E> for I {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_error_in_input_order_on_every_run() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        for _ in 0..50 {
            // Items 3 and 70 fail; the later one is cheap and would often be reached first.
            let r: Result<Vec<u32>, String> = pool.install(|| {
                collect_in_order((0..100u32).into_par_iter().map(|i| {
                    if i == 3 {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        Err(format!("item {i}"))
                    } else if i == 70 {
                        Err(format!("item {i}"))
                    } else {
                        Ok(i)
                    }
                }))
            });
            assert_eq!(r.unwrap_err(), "item 3");
        }
        let ok: Vec<u32> =
            collect_in_order((0..100u32).into_par_iter().filter(|i| i % 2 == 0).map(Ok::<_, ()>))
                .unwrap();
        assert_eq!(ok, (0..100).filter(|i| i % 2 == 0).collect::<Vec<_>>());
    }
}
