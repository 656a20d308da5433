//! [`BlockCache`] on foyer's hybrid cache: a memory tier, and optionally a disk tier in a local
//! directory.
//!
//! - Memory tier: LRU by weight ([`BlockValue::weight`] plus the key). Values inserted with
//!   [`Priority::Low`] go to LRU's low-priority pool and are evicted before normal ones, so a
//!   scan of old data cannot push out the blocks tail readers use.
//! - Disk tier (when configured): foyer's block engine over files in one directory, written when
//!   a value leaves the memory tier (write on eviction) and read back, into memory, on a hit.
//!   Entries larger than [`DISK_BLOCK_BYTES`] stay memory-only. Whatever was on disk at open is
//!   discarded: the directory is a cache of this process, not a store.
//! - Misses: foyer's `get_or_fetch` runs one fetch per key at a time on the runtime and hands its
//!   result to every waiter.
//!
//! Memory beyond the memory tier's capacity: the disk tier's write buffers, at most
//! [`DiskTierConfig::buffer_bytes`] (see there), and values referenced by readers after eviction.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use foyer::{
    BlockEngineConfig, Code, DeviceBuilder, Event, EventListener, FsDeviceBuilder, Hint,
    HybridCache, HybridCacheBuilder, HybridCachePolicy, HybridCacheProperties, LruConfig,
    PsyncIoEngineConfig, RecoverMode, Source,
};
use parking_lot::RwLock;

use crate::block_cache::{
    BlockCache, BlockCacheStats, BlockKey, BlockValue, BoxFuture, EvictionObserver, FetchError,
    Fetched, Priority, Tier,
};

/// The disk tier's block: the unit it writes and evicts, and the largest entry it holds.
pub const DISK_BLOCK_BYTES: usize = 8 << 20;

/// Memory-tier shards (each with its own lock). An entry must fit one shard's share of the
/// capacity, so few shards keep large blocks cacheable in a small cache.
const SHARDS: usize = 4;

/// Share of the memory tier that normal-priority blocks may fill; low-priority blocks (scans,
/// read-ahead) are evicted first and get at least the rest.
const NORMAL_SHARE: f64 = 0.5;

/// The optional disk tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskTierConfig {
    /// A directory used only by this cache (created if missing, emptied at open).
    pub dir: PathBuf,
    /// Bytes of disk to use.
    pub capacity_bytes: u64,
}

impl DiskTierConfig {
    /// Memory the disk tier uses besides the memory tier: two write buffers of
    /// [`DISK_BLOCK_BYTES`] and a submit queue of at most as much again.
    pub const fn buffer_bytes() -> u64 {
        3 * DISK_BLOCK_BYTES as u64
    }
}

/// How to build a [`FoyerBlockCache`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockCacheConfig {
    /// Capacity of the memory tier in bytes.
    pub memory_bytes: u64,
    /// The disk tier, if any.
    pub disk: Option<DiskTierConfig>,
}

/// A value as foyer stores it: a length-prefixed encoding for the disk tier.
#[derive(Clone)]
struct Stored<V>(V);

impl<V: BlockValue> Code for Stored<V> {
    fn encode(&self, w: &mut impl std::io::Write) -> foyer::Result<()> {
        let len = self.0.encoded_len() as u64;
        w.write_all(&len.to_le_bytes())
            .map_err(foyer::Error::io_error)?;
        self.0.encode(w).map_err(foyer::Error::io_error)
    }

    fn decode(r: &mut impl std::io::Read) -> foyer::Result<Self> {
        let mut len = [0u8; 8];
        r.read_exact(&mut len).map_err(foyer::Error::io_error)?;
        let len = u64::from_le_bytes(len);
        if len > DISK_BLOCK_BYTES as u64 {
            return Err(foyer::Error::new(
                foyer::ErrorKind::Parse,
                format!("a cached value claims {len} bytes, more than a disk block"),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        r.read_exact(&mut buf).map_err(foyer::Error::io_error)?;
        V::decode(Bytes::from(buf))
            .map(Stored)
            .map_err(|e| foyer::Error::new(foyer::ErrorKind::Parse, e))
    }

    fn estimated_size(&self) -> usize {
        8 + self.0.encoded_len()
    }
}

/// A key as foyer stores it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Key(BlockKey);

impl Code for Key {
    fn encode(&self, w: &mut impl std::io::Write) -> foyer::Result<()> {
        w.write_all(&self.0.to_bytes())
            .map_err(foyer::Error::io_error)
    }

    fn decode(r: &mut impl std::io::Read) -> foyer::Result<Self> {
        let mut b = [0u8; BlockKey::ENCODED_LEN];
        r.read_exact(&mut b).map_err(foyer::Error::io_error)?;
        Ok(Key(BlockKey::from_bytes(b)))
    }

    fn estimated_size(&self) -> usize {
        BlockKey::ENCODED_LEN
    }
}

/// The observers told of values that leave the memory tier to make room.
type Observers = Arc<RwLock<Vec<EvictionObserver>>>;

/// Tells the observers about values that leave the memory tier to make room.
struct Listener<V> {
    observers: Observers,
    _value: std::marker::PhantomData<fn() -> V>,
}

impl<V: BlockValue> EventListener for Listener<V> {
    type Key = Key;
    type Value = Stored<V>;

    fn on_leave(&self, reason: Event, key: &Key, _value: &Stored<V>) {
        if reason == Event::Evict {
            for observer in self.observers.read().iter() {
                observer(&key.0);
            }
        }
    }
}

#[derive(Default)]
struct Counters {
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

/// The block cache on foyer's hybrid cache. Cheap to share behind an `Arc`.
pub struct FoyerBlockCache<V: BlockValue> {
    cache: HybridCache<Key, Stored<V>>,
    disk_capacity: u64,
    counters: Counters,
    observers: Observers,
}

impl<V: BlockValue> std::fmt::Debug for FoyerBlockCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoyerBlockCache")
            .field("stats", &self.snapshot())
            .finish()
    }
}

impl<V: BlockValue> FoyerBlockCache<V> {
    /// Builds the cache. Must run inside a tokio runtime (the disk tier starts its writers on
    /// it). `observer`, if given, hears of every value evicted from the memory tier (more can be
    /// added with [`BlockCache::observe_evictions`]).
    pub async fn open(
        config: &BlockCacheConfig,
        observer: Option<EvictionObserver>,
    ) -> Result<Self, String> {
        let mut builder = HybridCacheBuilder::<Key, Stored<V>>::new()
            .with_name("objstream-blocks")
            .with_policy(HybridCachePolicy::WriteOnEviction)
            .with_flush_on_close(false);
        let observers: Observers = Arc::new(RwLock::new(observer.into_iter().collect()));
        builder = builder.with_event_listener(Arc::new(Listener::<V> {
            observers: observers.clone(),
            _value: std::marker::PhantomData,
        }));
        let memory_bytes = usize::try_from(config.memory_bytes).unwrap_or(usize::MAX);
        let memory = builder
            .memory(memory_bytes)
            .with_shards(SHARDS)
            .with_eviction_config(LruConfig {
                high_priority_pool_ratio: NORMAL_SHARE,
            })
            .with_weighter(|_key: &Key, value: &Stored<V>| {
                value.0.weight() + BlockKey::ENCODED_LEN
            });
        let mut storage = memory.storage();
        let mut disk_capacity = 0;
        if let Some(disk) = &config.disk {
            // Start empty: entries of an earlier run may name objects since deleted.
            match std::fs::remove_dir_all(&disk.dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("emptying {}: {e}", disk.dir.display())),
            }
            std::fs::create_dir_all(&disk.dir)
                .map_err(|e| format!("creating {}: {e}", disk.dir.display()))?;
            let capacity = usize::try_from(disk.capacity_bytes).unwrap_or(usize::MAX);
            let device = FsDeviceBuilder::new(&disk.dir)
                .with_capacity(capacity)
                .build()
                .map_err(|e| format!("opening the disk tier in {}: {e}", disk.dir.display()))?;
            storage = storage
                .with_io_engine_config(PsyncIoEngineConfig::new())
                .with_engine_config(
                    BlockEngineConfig::new(device)
                        .with_block_size(DISK_BLOCK_BYTES)
                        .with_buffer_pool_size(DISK_BLOCK_BYTES)
                        .with_submit_queue_size_threshold(DISK_BLOCK_BYTES),
                )
                .with_recover_mode(RecoverMode::None);
            disk_capacity = disk.capacity_bytes;
        }
        let cache = storage
            .build()
            .await
            .map_err(|e| format!("building the block cache: {e}"))?;
        Ok(FoyerBlockCache {
            cache,
            disk_capacity,
            counters: Counters::default(),
            observers,
        })
    }
}

impl<V, E> BlockCache<V, E> for FoyerBlockCache<V>
where
    V: BlockValue,
    E: std::error::Error + Clone + Send + Sync + 'static,
{
    fn get_or_fetch(
        &self,
        key: BlockKey,
        priority: Priority,
        fetch: BoxFuture<'static, Result<V, E>>,
    ) -> BoxFuture<'_, Result<Fetched<V>, FetchError<E>>> {
        let hint = match priority {
            Priority::Normal => Hint::Normal,
            Priority::Low => Hint::Low,
        };
        let lookup = self.cache.get_or_fetch(&Key(key), move || async move {
            fetch.await.map(|value| foyer_memory::FetchTarget::Entry {
                value: Stored(value),
                properties: HybridCacheProperties::default().with_hint(hint),
            })
        });
        Box::pin(async move {
            let counters = &self.counters;
            match lookup.await {
                Ok(entry) => {
                    let tier = match entry.source() {
                        Source::Memory => {
                            counters.memory_hits.fetch_add(1, Ordering::Relaxed);
                            Tier::Memory
                        }
                        Source::Disk => {
                            counters.disk_hits.fetch_add(1, Ordering::Relaxed);
                            Tier::Disk
                        }
                        Source::Outer => {
                            counters.misses.fetch_add(1, Ordering::Relaxed);
                            Tier::Fetched
                        }
                    };
                    Ok(Fetched {
                        value: entry.value().0.clone(),
                        tier,
                    })
                }
                Err(e) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    match e.downcast_ref::<E>() {
                        Some(fetch_error) => Err(FetchError::Fetch(fetch_error.clone())),
                        None => Err(FetchError::Cache(e.to_string())),
                    }
                }
            }
        })
    }

    fn contains(&self, key: &BlockKey) -> bool {
        self.cache.contains(&Key(*key))
    }

    fn remove(&self, key: &BlockKey) {
        self.cache.remove(&Key(*key));
    }

    fn stats(&self) -> BlockCacheStats {
        self.snapshot()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.cache.close().await.map_err(|e| e.to_string()) })
    }

    fn observe_evictions(&self, observer: EvictionObserver) {
        self.observers.write().push(observer);
    }
}

impl<V: BlockValue> FoyerBlockCache<V> {
    fn snapshot(&self) -> BlockCacheStats {
        let c = &self.counters;
        let disk = self.cache.statistics();
        BlockCacheStats {
            memory_hits: c.memory_hits.load(Ordering::Relaxed),
            disk_hits: c.disk_hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            memory_bytes: self.cache.memory().usage() as u64,
            memory_capacity_bytes: self.cache.memory().capacity() as u64,
            disk_capacity_bytes: self.disk_capacity,
            disk_write_bytes: disk.disk_write_bytes() as u64,
            disk_read_bytes: disk.disk_read_bytes() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Val(Bytes);

    impl BlockValue for Val {
        fn weight(&self) -> usize {
            self.0.len()
        }
        fn encoded_len(&self) -> usize {
            self.0.len()
        }
        fn encode(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
            out.write_all(&self.0)
        }
        fn decode(bytes: Bytes) -> Result<Self, String> {
            Ok(Val(bytes))
        }
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Failed(String);
    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Failed {}

    type Cache = Arc<dyn BlockCache<Val, Failed>>;

    async fn memory_only(bytes: u64) -> Cache {
        let config = BlockCacheConfig {
            memory_bytes: bytes,
            disk: None,
        };
        Arc::new(FoyerBlockCache::<Val>::open(&config, None).await.unwrap())
    }

    fn value(fill: u8, len: usize) -> Val {
        Val(Bytes::from(vec![fill; len]))
    }

    fn ready(v: Val) -> BoxFuture<'static, Result<Val, Failed>> {
        Box::pin(async move { Ok(v) })
    }

    fn never() -> BoxFuture<'static, Result<Val, Failed>> {
        Box::pin(async { Err(Failed("the cache should have answered".into())) })
    }

    #[tokio::test]
    async fn a_fetched_block_is_then_served_from_memory() {
        let cache = memory_only(1 << 20).await;
        let key = BlockKey::new(1, 0);
        let got = cache
            .get_or_fetch(key, Priority::Normal, ready(value(7, 100)))
            .await
            .unwrap();
        assert_eq!((got.tier, got.value), (Tier::Fetched, value(7, 100)));
        let got = cache
            .get_or_fetch(key, Priority::Normal, never())
            .await
            .unwrap();
        assert_eq!((got.tier, got.value), (Tier::Memory, value(7, 100)));
        let stats = cache.stats();
        assert_eq!((stats.memory_hits, stats.misses), (1, 1));
        assert_eq!(stats.memory_bytes, 100 + BlockKey::ENCODED_LEN as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_of_one_block_fetch_once() {
        let cache = memory_only(1 << 20).await;
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                let fetch = Box::pin(async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(value(3, 10))
                });
                cache
                    .get_or_fetch(BlockKey::new(9, 4096), Priority::Normal, fetch)
                    .await
                    .unwrap()
                    .value
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), value(3, 10));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_fetch_reaches_the_caller_and_caches_nothing() {
        let cache = memory_only(1 << 20).await;
        let key = BlockKey::new(2, 0);
        let failing = Box::pin(async { Err(Failed("range read failed".into())) });
        let err = cache
            .get_or_fetch(key, Priority::Normal, failing)
            .await
            .unwrap_err();
        assert_eq!(err, FetchError::Fetch(Failed("range read failed".into())));
        assert!(!cache.contains(&key));
        assert_eq!(cache.stats().errors, 1);
    }

    #[tokio::test]
    async fn evicted_blocks_are_reported_and_scans_leave_before_normal_blocks() {
        let evicted = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen = evicted.clone();
        let observer: EvictionObserver = Arc::new(move |k: &BlockKey| seen.lock().push(*k));
        let config = BlockCacheConfig {
            memory_bytes: 64 << 10,
            disk: None,
        };
        let cache: Cache = Arc::new(
            FoyerBlockCache::<Val>::open(&config, Some(observer))
                .await
                .unwrap(),
        );
        // Two normal blocks, then a scan of many low-priority ones.
        for pos in 0..2 {
            let key = BlockKey::new(1, pos);
            cache
                .get_or_fetch(key, Priority::Normal, ready(value(1, 2 << 10)))
                .await
                .unwrap();
        }
        for pos in 0..40 {
            let key = BlockKey::new(2, pos);
            cache
                .get_or_fetch(key, Priority::Low, ready(value(2, 4 << 10)))
                .await
                .unwrap();
        }
        assert!(!evicted.lock().is_empty(), "the scan overflowed the cache");
        assert!(
            evicted.lock().iter().all(|k| k.object == 2),
            "only scan blocks left: {:?}",
            evicted.lock()
        );
        for pos in 0..2 {
            assert!(cache.contains(&BlockKey::new(1, pos)));
        }
        assert!(cache.stats().memory_bytes <= 64 << 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocks_evicted_from_memory_are_served_from_the_disk_tier() {
        let dir = tempfile::tempdir().unwrap();
        let config = BlockCacheConfig {
            memory_bytes: 256 << 10,
            disk: Some(DiskTierConfig {
                dir: dir.path().join("blocks"),
                capacity_bytes: 64 << 20,
            }),
        };
        let cache: Cache = Arc::new(FoyerBlockCache::<Val>::open(&config, None).await.unwrap());
        for pos in 0..16u64 {
            let key = BlockKey::new(5, pos);
            cache
                .get_or_fetch(key, Priority::Normal, ready(value(pos as u8, 64 << 10)))
                .await
                .unwrap();
        }
        // The first blocks left memory on their way to disk; the writes finish in the background.
        let key = BlockKey::new(5, 0);
        let mut tier = Tier::Fetched;
        for _ in 0..100 {
            let got = cache
                .get_or_fetch(key, Priority::Normal, never())
                .await
                .unwrap();
            assert_eq!(got.value, value(0, 64 << 10));
            tier = got.tier;
            if tier == Tier::Disk {
                break;
            }
            cache.remove(&BlockKey::new(5, 0));
            cache
                .get_or_fetch(key, Priority::Normal, ready(value(0, 64 << 10)))
                .await
                .unwrap();
            for pos in 1..16u64 {
                let key = BlockKey::new(5, pos);
                cache
                    .get_or_fetch(key, Priority::Normal, ready(value(pos as u8, 64 << 10)))
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(tier, Tier::Disk);
        let stats = cache.stats();
        assert!(
            stats.disk_hits >= 1 && stats.disk_write_bytes > 0,
            "{stats:?}"
        );
        cache.close().await.unwrap();
    }

    #[test]
    fn a_stored_value_longer_than_a_disk_block_is_refused() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(DISK_BLOCK_BYTES as u64 + 1).to_le_bytes());
        bytes.extend_from_slice(&[0u8; 64]);
        let err = match <Stored<Val> as Code>::decode(&mut &bytes[..]) {
            Ok(_) => panic!("decoded a value longer than a disk block"),
            Err(e) => e,
        };
        assert!(err.to_string().contains("more than a disk block"), "{err}");
    }

    #[test]
    fn a_stored_value_survives_the_disk_encoding() {
        let v = Stored(value(9, 1000));
        let mut bytes = Vec::new();
        v.encode(&mut bytes).unwrap();
        assert_eq!(bytes.len(), v.estimated_size());
        let back = <Stored<Val> as Code>::decode(&mut &bytes[..]).unwrap();
        assert_eq!(back.0, v.0);
    }
}
