//! Work over many items on a few threads, each thread taking the next item as it finishes one:
//! image files differ in size, so a fixed split would leave threads idle.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `f` over every item on up to `threads` threads (the caller's included); results in item order.
pub fn map_each<I: Send, O: Send>(items: Vec<I>, threads: usize, f: impl Fn(I) -> O + Sync) -> Vec<O> {
    let inputs: Vec<Mutex<Option<I>>> = items.into_iter().map(|i| Mutex::new(Some(i))).collect();
    let outputs: Vec<Mutex<Option<O>>> = inputs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(input) = inputs.get(i) else { break };
            let item = input.lock().unwrap().take().expect("each item is taken once");
            *outputs[i].lock().unwrap() = Some(f(item));
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads.min(inputs.len()) {
            s.spawn(work);
        }
        work();
    });
    outputs.into_iter().map(|o| o.into_inner().unwrap().expect("every item is done")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_back_in_item_order_from_any_number_of_threads() {
        for threads in [1, 3, 16] {
            let out = super::map_each((0..50u64).collect(), threads, |i| {
                std::thread::sleep(std::time::Duration::from_micros(50 - i));
                i * i
            });
            assert_eq!(out, (0..50u64).map(|i| i * i).collect::<Vec<_>>());
        }
        assert!(super::map_each(Vec::<u8>::new(), 4, |i| i).is_empty());
    }
}
