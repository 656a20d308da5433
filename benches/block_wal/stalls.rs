//! Telling the device's stalls from the WAL's: a probe thread reads one 4 KiB block of the
//! file with `O_DIRECT` every millisecond while a paced run goes on, and records the reads
//! that took over [`STALL`]. A shared or virtual disk pauses now and then (on some machines
//! every few seconds, for 5 to 70 ms, reads and writes alike); every append due in such a
//! pause waits for it whatever the WAL does, and acknowledgements are in order, so the
//! appends behind it wait too. The paced runs print their p99 over every append and, beside
//! it, how many of the late appends waited through a pause the probe saw, and the p99 of the
//! appends whose wait met none: the WAL's own tail.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use objstream_wal::block::AlignedBuf;

/// A probe read slower than this is a device stall.
pub const STALL: Duration = Duration::from_millis(2);

/// An append slower than this is late (the paced target).
pub const LATE: Duration = Duration::from_millis(1);

/// A probe read that took over [`STALL`]: the device served nothing from `at` for `took`.
#[derive(Clone, Copy, Debug)]
pub struct Stall {
    pub at: Instant,
    pub took: Duration,
}

/// The probe thread; [`StallProbe::finish`] stops it and returns the stalls it saw.
pub struct StallProbe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Stall>>,
}

impl StallProbe {
    /// Starts reading the first 4 KiB of `path` (the header area of a ring) every
    /// millisecond.
    pub fn start(path: &Path) -> StallProbe {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = AlignedBuf::new(4096);
            let mut stalls = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                let at = Instant::now();
                file.read_exact_at(&mut buf, 0).unwrap();
                let took = at.elapsed();
                if took > STALL {
                    stalls.push(Stall { at, took });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            stalls
        });
        StallProbe { stop, thread }
    }

    pub fn finish(self) -> Vec<Stall> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// One append's (or raw write's) due time and latency from it.
pub type Sample = (Instant, Duration);

/// Latencies split by whether their wait met a device stall.
pub struct Attribution {
    pub stalls: usize,
    pub stalled: Duration,
    pub longest: Duration,
    /// Samples over [`LATE`].
    pub late: usize,
    /// Of those, the ones whose wait overlapped a stall.
    pub late_in_stall: usize,
    /// p99 of the samples whose wait overlapped no stall, and how many those are.
    pub clear_p99: Duration,
    pub clear: usize,
}

impl Attribution {
    /// Splits `samples` by `stalls`.
    pub fn of(samples: &[Sample], stalls: &[Stall]) -> Attribution {
        let met_stall = |&(due, lat): &Sample| {
            let end = due + lat;
            stalls.iter().any(|s| s.at < end && due < s.at + s.took)
        };
        let mut clear = Vec::new();
        let (mut late, mut late_in_stall) = (0, 0);
        for sample in samples {
            let stalled = met_stall(sample);
            if sample.1 > LATE {
                late += 1;
                late_in_stall += usize::from(stalled);
            }
            if !stalled {
                clear.push(sample.1);
            }
        }
        clear.sort();
        Attribution {
            stalls: stalls.len(),
            stalled: stalls.iter().map(|s| s.took).sum(),
            longest: stalls.iter().map(|s| s.took).max().unwrap_or_default(),
            late,
            late_in_stall,
            clear_p99: super::percentile(&clear, 0.99),
            clear: clear.len(),
        }
    }
}

impl std::fmt::Display for Attribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "device stalls seen by a 4 KiB read probe: {} ({:?} in all, longest {:?}); over \
             {:?}: {} ({} waited through a stall); p99 of the {} whose wait met no stall: {:?}",
            self.stalls,
            self.stalled,
            self.longest,
            LATE,
            self.late,
            self.late_in_stall,
            self.clear,
            self.clear_p99
        )
    }
}

/// The counters `/proc/diskstats` keeps for the disk holding a file: what the device itself
/// served during a run, whatever layers sit between it and the WAL.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskStats {
    reads: u64,
    writes: u64,
    write_sectors: u64,
    discards: u64,
    flushes: u64,
}

impl DiskStats {
    /// The counters now for the device that holds `path` (`None` when `/proc` has no
    /// line for it, e.g. off Linux or on a device-mapper stack it cannot name).
    pub fn of(path: &Path) -> Option<DiskStats> {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(path).ok()?;
        let dev = if dev.file_type().is_file() {
            dev.dev()
        } else {
            use std::os::unix::fs::FileTypeExt;
            if !dev.file_type().is_block_device() {
                return None;
            }
            dev.rdev()
        };
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let text = std::fs::read_to_string("/proc/diskstats").ok()?;
        text.lines().find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            (f.len() >= 14 && num(0) == u64::from(major) && num(1) == u64::from(minor)).then(|| {
                DiskStats {
                    reads: num(3),
                    writes: num(7),
                    write_sectors: num(9),
                    discards: num(14),
                    flushes: num(18),
                }
            })
        })
    }

    /// What was served between `before` and `self`, per append of `appends`.
    pub fn since(&self, before: &DiskStats, appends: usize) -> String {
        let n = appends.max(1) as f64;
        let writes = self.writes - before.writes;
        format!(
            "device served per append: {:.3} writes (avg {:.1} KiB), {:.3} reads, {:.3} \
             flushes, {:.3} discards",
            writes as f64 / n,
            (self.write_sectors - before.write_sectors) as f64 * 512.0
                / writes.max(1) as f64
                / 1024.0,
            (self.reads - before.reads) as f64 / n,
            (self.flushes - before.flushes) as f64 / n,
            (self.discards - before.discards) as f64 / n,
        )
    }
}

/// The stall probe and the device's counters over one run on `path`.
pub struct DeviceWatch {
    path: PathBuf,
    probe: StallProbe,
    disk: Option<DiskStats>,
}

impl DeviceWatch {
    pub fn start(path: &Path) -> DeviceWatch {
        let disk = DiskStats::of(path);
        DeviceWatch {
            path: path.to_path_buf(),
            probe: StallProbe::start(path),
            disk,
        }
    }

    /// Stops the probe: `samples` split by the stalls it saw, and what the device served per
    /// sample (when `/proc` tells).
    pub fn finish(self, samples: &[Sample]) -> (Attribution, Option<String>) {
        let attribution = Attribution::of(samples, &self.probe.finish());
        let disk = self
            .disk
            .zip(DiskStats::of(&self.path))
            .map(|(before, after)| after.since(&before, samples.len()));
        (attribution, disk)
    }
}
