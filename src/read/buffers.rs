//! Receive buffers for GET bodies, recycled so that their pages stay faulted in.
//!
//! ```text
//! GET body chunks ─► BufferPool::receive ─► one buffer (a recycled one when it fits) ─► Bytes
//!                                                  ▲                                     │
//!                                                  └──── the last slice of it dropped ◄──┘
//! ```
//!
//! A GET body arrives as chunks and is gathered into one buffer, which its blocks then slice
//! (no copy per block). A large buffer from the allocator is a fresh mapping whose every page
//! the kernel faults in and zeroes on first write, and which goes back to the kernel when
//! freed: on a cold scan that costs about as much CPU as the rest of the read path. So the pool
//! keeps the buffers whose `Bytes` are all dropped (their blocks used and gone) and gathers the
//! next bodies into them: a scan that holds little runs on the same few faulted-in pages.
//!
//! Bounds: the pool keeps at most `max_bytes` of idle buffers (capacity), dropping what does
//! not fit; buffers in use are not the pool's (their blocks' owners hold them, and the block
//! cache weighs them). A buffer is reused for a body of half to all of its capacity, so a small
//! read never pins a large buffer; failing that, the largest idle buffer of at least half the
//! body grows to fit it (GETs of whole objects vary in size by a few percent). A new buffer
//! gets an eighth more capacity than its body, so that the next, slightly larger, body fits;
//! capacity never written is address space, not memory. Idle buffers are freed after
//! [`IDLE_FOR`] without use, so a store that stopped scanning holds none. A body that arrives as one chunk (an in-memory store, or a
//! small response) is returned as that chunk: nothing to gather, nothing to copy.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::time::Instant;

/// How long a buffer stays idle before it is freed (see [`BufferPool::expire_idle`]).
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(1);

/// The most a body's announced length reserves up front; a larger body grows its buffer as it
/// arrives (the length comes from the response, which must not size an allocation unchecked).
const MAX_RESERVE: usize = 256 << 20;

/// Idle buffers kept for reuse. Cheap to clone: clones share the buffers.
#[derive(Clone)]
pub(crate) struct BufferPool {
    shared: Arc<Mutex<Idle>>,
}

struct Idle {
    buffers: Vec<IdleBuffer>,
    /// Capacity of the idle buffers, summed.
    bytes: usize,
    max_bytes: usize,
}

struct IdleBuffer {
    buffer: Vec<u8>,
    since: Instant,
}

/// A buffer lent out as the owner of a `Bytes`; back to its pool when the last slice drops.
struct Lent {
    buffer: Vec<u8>,
    pool: Weak<Mutex<Idle>>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.lock().give_back(std::mem::take(&mut self.buffer));
        }
    }
}

impl Idle {
    fn give_back(&mut self, mut buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if capacity == 0 || capacity > self.max_bytes {
            return;
        }
        // Room is made by dropping the smallest idle buffers: large ones save the most faults.
        while self.bytes + capacity > self.max_bytes {
            let Some(smallest) =
                (0..self.buffers.len()).min_by_key(|&i| self.buffers[i].buffer.capacity())
            else {
                break;
            };
            if self.buffers[smallest].buffer.capacity() >= capacity {
                return;
            }
            self.bytes -= self.buffers.swap_remove(smallest).buffer.capacity();
        }
        buffer.clear();
        self.bytes += capacity;
        self.buffers.push(IdleBuffer {
            buffer,
            since: Instant::now(),
        });
    }

    /// Drops the buffers idle since before `before`.
    fn expire(&mut self, before: Instant) {
        let mut freed = 0;
        self.buffers.retain(|b| {
            let keep = b.since >= before;
            if !keep {
                freed += b.buffer.capacity();
            }
            keep
        });
        self.bytes -= freed;
    }

    /// The idle buffer that best fits `len` bytes: the smallest of capacity `len..=2 * len`,
    /// else the largest of at least `len / 2` (which the caller grows).
    fn take(&mut self, len: usize) -> Option<Vec<u8>> {
        let capacity = |i: usize| self.buffers[i].buffer.capacity();
        let fits = (0..self.buffers.len())
            .filter(|&i| capacity(i) >= len && capacity(i) / 2 <= len)
            .min_by_key(|&i| capacity(i));
        let grows = || {
            (0..self.buffers.len())
                .filter(|&i| capacity(i) < len && capacity(i) >= len / 2)
                .max_by_key(|&i| capacity(i))
        };
        let best = fits.or_else(grows)?;
        let buffer = self.buffers.swap_remove(best).buffer;
        self.bytes -= buffer.capacity();
        Some(buffer)
    }
}

impl BufferPool {
    /// A pool that keeps up to `max_bytes` of idle buffers.
    pub(crate) fn new(max_bytes: u64) -> Self {
        BufferPool {
            shared: Arc::new(Mutex::new(Idle {
                buffers: Vec::new(),
                bytes: 0,
                max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            })),
        }
    }

    /// Frees, every [`IDLE_FOR`], the buffers idle for longer than that, until the pool is
    /// dropped: once a scan ends, its buffers go back to the system within two periods.
    /// Spawns a task on the current tokio runtime.
    pub(crate) fn expire_idle(&self) {
        let pool = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE_FOR).await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                let before = Instant::now().checked_sub(IDLE_FOR);
                if let Some(before) = before {
                    pool.lock().expire(before);
                }
            }
        });
    }

    /// Gathers a body of `len` bytes from `chunks` into one `Bytes`, in a recycled buffer when
    /// one fits. Returns the first error of the stream; a body that ends early or runs past
    /// `len` is returned as it is, for the caller to judge by its length.
    pub(crate) async fn receive<S, E>(&self, len: usize, mut chunks: S) -> Result<Bytes, E>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let Some(first) = chunks.next().await.transpose()? else {
            return Ok(Bytes::new());
        };
        if first.len() >= len {
            // The whole body in one chunk (or more than asked for): nothing to gather.
            let mut rest = first;
            while let Some(more) = chunks.next().await.transpose()? {
                let mut joined = Vec::with_capacity(rest.len() + more.len());
                joined.extend_from_slice(&rest);
                joined.extend_from_slice(&more);
                rest = Bytes::from(joined);
            }
            return Ok(rest);
        }
        let reserve = len.min(MAX_RESERVE);
        let reused = self.shared.lock().take(len);
        let mut buffer = match reused {
            Some(mut buffer) => {
                // A buffer a little too small grows in place where the allocator can (a
                // large one is remapped, its pages kept): only the new tail is faulted in.
                buffer.reserve(reserve);
                buffer
            }
            None => Vec::with_capacity(reserve.saturating_add(reserve / 8)),
        };
        buffer.extend_from_slice(&first);
        while let Some(chunk) = chunks.next().await.transpose()? {
            buffer.extend_from_slice(&chunk);
        }
        Ok(Bytes::from_owner(Lent {
            buffer,
            pool: Arc::downgrade(&self.shared),
        }))
    }

    /// Bytes of idle buffers held now.
    #[cfg(test)]
    fn idle_bytes(&self) -> usize {
        self.shared.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, ()>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn a_body_in_chunks_is_gathered_in_order() {
        let pool = BufferPool::new(1 << 20);
        let body = pool.receive(10, chunks(&[b"0123", b"45", b"6789"])).await;
        assert_eq!(body.unwrap(), Bytes::from_static(b"0123456789"));
    }

    #[tokio::test]
    async fn a_buffer_returns_to_the_pool_when_its_last_slice_drops_and_is_reused() {
        let pool = BufferPool::new(1 << 20);
        let body = pool.receive(8, chunks(&[b"abcd", b"efgh"])).await.unwrap();
        let slice = body.slice(2..4);
        let address = body.as_ptr();
        drop(body);
        assert_eq!(pool.idle_bytes(), 0, "a slice still holds the buffer");
        assert_eq!(slice, Bytes::from_static(b"cd"));
        drop(slice);
        assert!(pool.idle_bytes() >= 8);
        let again = pool.receive(8, chunks(&[b"ijkl", b"mnop"])).await.unwrap();
        assert_eq!(again, Bytes::from_static(b"ijklmnop"));
        assert_eq!(again.as_ptr(), address, "the same buffer, reused");
        assert_eq!(pool.idle_bytes(), 0);
    }

    #[tokio::test]
    async fn a_small_body_does_not_take_a_large_buffer() {
        let pool = BufferPool::new(1 << 20);
        let large = vec![b"x".as_slice(); 64].concat();
        let large: &'static [u8] = Box::leak(large.into_boxed_slice());
        let body = pool
            .receive(64, chunks(&[&large[..32], &large[32..]]))
            .await;
        drop(body);
        let idle = pool.idle_bytes();
        assert!(idle >= 64);
        let small = pool.receive(4, chunks(&[b"ab", b"cd"])).await.unwrap();
        assert_eq!(small, Bytes::from_static(b"abcd"));
        assert_eq!(pool.idle_bytes(), idle, "the large buffer stayed idle");
    }

    #[tokio::test]
    async fn a_slightly_larger_body_grows_an_idle_buffer() {
        let pool = BufferPool::new(1 << 20);
        let body = pool.receive(64, chunks(&[&[1u8; 32], &[1u8; 32]])).await;
        drop(body);
        let idle = pool.idle_bytes();
        assert!((64..128).contains(&idle), "{idle}");
        let larger = pool
            .receive(100, chunks(&[&[2u8; 50], &[2u8; 50]]))
            .await
            .unwrap();
        assert_eq!(larger, Bytes::from(vec![2u8; 100]));
        assert_eq!(pool.idle_bytes(), 0, "the idle buffer was taken and grown");
    }

    #[tokio::test(start_paused = true)]
    async fn buffers_idle_for_a_while_are_freed() {
        let pool = BufferPool::new(1 << 20);
        pool.expire_idle();
        drop(pool.receive(8, chunks(&[b"abcd", b"efgh"])).await);
        assert!(pool.idle_bytes() >= 8);
        tokio::time::sleep(IDLE_FOR / 2).await;
        assert!(pool.idle_bytes() >= 8, "still fresh");
        tokio::time::sleep(IDLE_FOR * 2).await;
        assert_eq!(pool.idle_bytes(), 0);
    }

    #[tokio::test]
    async fn idle_buffers_never_exceed_the_bound() {
        let pool = BufferPool::new(100);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(
                pool.receive(40, chunks(&[&[7u8; 20], &[7u8; 20]]))
                    .await
                    .unwrap(),
            );
        }
        drop(held);
        assert!(pool.idle_bytes() <= 100, "{}", pool.idle_bytes());
        assert!(pool.idle_bytes() >= 80);
    }

    #[tokio::test]
    async fn a_body_in_one_chunk_is_that_chunk() {
        let pool = BufferPool::new(1 << 20);
        let whole = Bytes::from_static(b"0123456789");
        let got = pool
            .receive(10, futures::stream::iter(vec![Ok::<_, ()>(whole.clone())]))
            .await
            .unwrap();
        assert_eq!(got.as_ptr(), whole.as_ptr(), "not copied");
    }

    #[tokio::test]
    async fn a_stream_error_is_returned() {
        let pool = BufferPool::new(1 << 20);
        let parts = vec![Ok(Bytes::from_static(b"ab")), Err("cut")];
        let got = pool.receive(10, futures::stream::iter(parts)).await;
        assert_eq!(got, Err("cut"));
    }
}
