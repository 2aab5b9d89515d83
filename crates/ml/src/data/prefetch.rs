//! Prefetching: an iterator's next items are produced on a thread of their own while the caller
//! works on the current one, so that a training step (above all on a GPU) never waits for shard
//! reads and image decoding. The items and their order are exactly the wrapped iterator's.

use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

pub struct Prefetch<T> {
    /// `None` only while dropping.
    items: Option<Receiver<T>>,
    producer: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Prefetch<T> {
    /// Runs `iter` on a new thread, at most `depth` items ahead of the caller.
    pub fn new(
        iter: impl Iterator<Item = T> + Send + 'static,
        depth: usize,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(depth.max(1));
        let producer = std::thread::Builder::new()
            .name("vlmflow-prefetch".into())
            .spawn(move || {
                for item in iter {
                    // The caller hung up: stop producing.
                    if tx.send(item).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            items: Some(rx),
            producer: Some(producer),
        })
    }
}

impl<T> Iterator for Prefetch<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let item = self.items.as_ref()?.recv().ok();
        if item.is_none() {
            // The producer is done: a panic there is re-raised here rather than read as the
            // end of the data.
            if let Some(Err(panic)) = self.producer.take().map(JoinHandle::join) {
                std::panic::resume_unwind(panic);
            }
        }
        item
    }
}

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        // Hang up first, so that a producer blocked on a full channel stops, then wait for it.
        drop(self.items.take());
        if let Some(producer) = self.producer.take() {
            let _ = producer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::Prefetch;

    #[test]
    fn yields_the_items_in_order_and_stays_at_most_depth_ahead() {
        let produced = Arc::new(AtomicUsize::new(0));
        let counter = produced.clone();
        let source = (0..100).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let mut p = Prefetch::new(source, 2).unwrap();
        assert_eq!(p.next(), Some(0));
        std::thread::sleep(std::time::Duration::from_millis(50));
        // One taken, two waiting in the channel, one more made and blocked on sending it.
        assert!(produced.load(Ordering::SeqCst) <= 4, "{produced:?}");
        let rest: Vec<i32> = p.by_ref().collect();
        assert_eq!(rest, (1..100).collect::<Vec<_>>());
        assert_eq!(p.next(), None);
    }

    #[test]
    fn dropping_it_early_stops_the_producer() {
        let p = Prefetch::new(0.., 1).unwrap();
        drop(p); // would hang if the producer kept waiting to send
    }

    #[test]
    #[should_panic(expected = "shard reader broke")]
    fn a_panic_while_producing_reaches_the_caller() {
        let source = (0..3).map(|i| {
            if i == 2 {
                panic!("shard reader broke")
            } else {
                i
            }
        });
        let p = Prefetch::new(source, 1).unwrap();
        let _: Vec<_> = p.collect();
    }
}
