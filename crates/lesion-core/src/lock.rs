//! The lock of a run folder: one writer per folder. [`RunLock::acquire`] takes an exclusive
//! `flock` on `<folder>/.lock` (and records the holder's pid in it) for the life of the run;
//! a second `lesion` starting or resuming a run in the same folder is refused with the
//! holder's pid. The kernel releases a `flock` when its holder dies (even on kill -9), so a
//! lock left by a dead process is simply taken over: there is no stale state to recognise.
//!
//! A `flock` belongs to the open file, which a child process shares from `fork` until its
//! `exec` closes it (`O_CLOEXEC`): while another thread of this process spawns a program
//! (`git`, a cell), a lock this process has just released can still look held by "this
//! process". [`RunLock`] therefore records the folders it holds in this process ([`HELD`]): a
//! folder held here is refused at once, one that only looks held by this process's own pid is
//! retried for [`FORK_WINDOW_GRACE`] (the spawn closes its copy within milliseconds).
//!
//! Invariant: the lock file is never deleted while a run may use it (deleting it would let a
//! second process lock a fresh file while the first still holds the old one), except by
//! [`RunLock`]'s own clean-up of a failed start in a folder it created.
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::checkpoint::CheckpointPaths;
use crate::error::{Result, TrainError};

/// The lock file inside a run folder (hidden: it is not an output).
pub const LOCK_FILE: &str = ".lock";

/// How long a lock that looks held by this very process, but is not held by any [`RunLock`]
/// of it, is retried: the time a spawned child may keep the lock file open between its `fork`
/// and its `exec` (milliseconds; generous for a loaded machine).
const FORK_WINDOW_GRACE: Duration = Duration::from_secs(5);
/// The pause between two tries within [`FORK_WINDOW_GRACE`] or [`TRANSIENT_HOLDER_GRACE`].
const FORK_WINDOW_POLL: Duration = Duration::from_millis(5);
/// How long a lock found taken while the pid it records is not a live process is retried. Such
/// a holder is transient: a [`holder`] probe's shared lock (held for microseconds), or a run
/// between its `flock` and writing its pid (a run that holds the lock has written its pid).
/// Refusing at once would turn another process's status probe into a failed start.
const TRANSIENT_HOLDER_GRACE: Duration = Duration::from_secs(2);

/// The folders (canonical paths) whose lock a live [`RunLock`] of this process holds.
static HELD: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// The set of [`HELD`] folders; a poisoned mutex still holds a valid set (inserts and removes
/// cannot be left half-done), so it is used as is.
fn held() -> MutexGuard<'static, BTreeSet<PathBuf>> {
    HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The key of `dir` in [`HELD`]: its canonical path (two spellings of one folder are one).
fn held_key(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

/// Whether a lock found taken, recording pid `recorded`, is only a spawned child's copy of a
/// lock this process released: our pid, but no [`RunLock`] of ours holds folder `key`.
fn only_a_fork_copy(recorded: Option<u32>, key: &Path) -> bool {
    recorded == Some(std::process::id()) && !held().contains(key)
}

/// Whether `recorded` names a live process (`kill(pid, 0)`: it exists, even if not ours).
#[cfg(unix)]
fn alive(recorded: Option<u32>) -> bool {
    let Some(pid) = recorded.and_then(|p| libc::pid_t::try_from(p).ok()).filter(|p| *p > 0) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let signalled = unsafe { libc::kill(pid, 0) } == 0;
    signalled || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// How [`RunLock`] treats the folder when it is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnRelease {
    /// Leave everything (a resumed run, a started run, or files that are not ours).
    Keep,
    /// A new run: if it ends with neither a checkpoint nor `COMPLETE.json` (its start failed,
    /// e.g. a config value only the model builder rejects), remove what it wrote so that no
    /// half-made folder looks like a run. `created`: this run made the folder (removed whole);
    /// otherwise the folder was empty before and is emptied again (its lock file kept).
    RemoveFailedStart { created: bool },
}

/// An exclusive lock on a run folder, held until dropped (or the process ends).
#[derive(Debug)]
pub struct RunLock {
    dir: PathBuf,
    /// The open lock file: closing it releases the `flock`.
    _file: File,
    on_release: OnRelease,
}

fn lock_error(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::file(path, format!("cannot lock the run folder: {e}"))
}

/// `flock(fd, op)`, retried when interrupted by a signal. `Ok(false)`: held by another.
#[cfg(unix)]
fn flock(file: &File, op: libc::c_int) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: flock takes a file descriptor that `file` keeps open for the call's duration.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// The pid recorded in a lock file (None when it is empty or unreadable).
fn recorded_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl RunLock {
    /// Takes the exclusive lock of the existing folder `dir`, or refuses naming the folder and
    /// the pid of the process that holds it. A lock whose holder died is taken over.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| lock_error(&path, e))?;
        let key = held_key(dir);
        #[cfg(unix)]
        if !Self::flock_or_wait_out_a_spawn(&mut file, &path, &key)? {
            let holder = recorded_pid(&mut file)
                .map(|p| format!("process {p}"))
                .unwrap_or_else(|| "another process".into());
            return Err(TrainError::file(
                dir,
                format!(
                    "run folder is in use by {holder} (a training still running in it); a folder is never written by two runs at once: wait for it to finish or stop it, or pick another --out"
                ),
            ));
        }
        if let Some(old) = recorded_pid(&mut file).filter(|p| *p != std::process::id()) {
            info!("taking over the lock of {} from process {old}, which has ended", dir.display());
        }
        let record = (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())
        })();
        record.map_err(|e| lock_error(&path, e))?;
        held().insert(key);
        Ok(RunLock { dir: dir.to_path_buf(), _file: file, on_release: OnRelease::Keep })
    }

    /// Takes the exclusive `flock`; `Ok(false)` when another holds it. A lock that only looks
    /// held by this process (its pid recorded, no [`RunLock`] of it holding `key`) is a
    /// spawned child's copy of a released lock and is retried for [`FORK_WINDOW_GRACE`]; one
    /// whose recorded pid is no live process is a transient holder, retried for
    /// [`TRANSIENT_HOLDER_GRACE`]. A live run recording its own pid is refused at once.
    #[cfg(unix)]
    fn flock_or_wait_out_a_spawn(file: &mut File, path: &Path, key: &Path) -> Result<bool> {
        let start = Instant::now();
        loop {
            if flock(file, libc::LOCK_EX | libc::LOCK_NB).map_err(|e| lock_error(path, e))? {
                return Ok(true);
            }
            let recorded = recorded_pid(file);
            let grace = if only_a_fork_copy(recorded, key) {
                FORK_WINDOW_GRACE
            } else if !alive(recorded) {
                TRANSIENT_HOLDER_GRACE
            } else {
                return Ok(false);
            };
            if start.elapsed() >= grace {
                return Ok(false);
            }
            std::thread::sleep(FORK_WINDOW_POLL);
        }
    }

    /// Arms the clean-up of a failed start (see [`OnRelease::RemoveFailedStart`]). Call only
    /// once the folder is known to hold nothing but what this run writes.
    pub fn remove_if_start_fails(&mut self, created: bool) {
        self.on_release = OnRelease::RemoveFailedStart { created };
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Before the file closes (fields drop after this body): a thread of this process that
        // finds the lock still taken waits for the close instead of refusing.
        held().remove(&held_key(&self.dir));
        let OnRelease::RemoveFailedStart { created } = self.on_release else { return };
        let started =
            CheckpointPaths::new(&self.dir).last.exists() || crate::run::is_complete(&self.dir);
        if started {
            return;
        }
        warn!("the run did not start; removing what it wrote in {}", self.dir.display());
        // Everything but the lock first; then, for a folder this run created, the lock file and
        // the folder itself with the non-recursive `remove_dir`: should another run have taken
        // the folder meanwhile, its files make that fail instead of being deleted.
        let removed = std::fs::read_dir(&self.dir).and_then(|entries| {
            for entry in entries {
                let entry = entry?;
                if entry.file_name() == LOCK_FILE {
                    continue;
                }
                if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(entry.path())?;
                } else {
                    std::fs::remove_file(entry.path())?;
                }
            }
            if created {
                std::fs::remove_file(self.dir.join(LOCK_FILE))?;
                std::fs::remove_dir(&self.dir)?;
            }
            Ok(())
        });
        if let Err(e) = removed {
            warn!("{}: could not remove the failed start's files: {e}", self.dir.display());
        }
    }
}

/// The pid of the process holding the lock of run folder `dir` now, if any (`Some(None)`:
/// held, pid unknown). Probes with a shared, non-blocking lock released at once; a run
/// starting in that instant could be refused once, so this is only for messages.
/// A lock that only looks held by this process (its pid recorded, no [`RunLock`] of it holding
/// the folder) is a spawning thread's fork copy of a released lock: not held.
pub fn holder(dir: &Path) -> Option<Option<u32>> {
    let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
    #[cfg(unix)]
    if let Ok(false) = flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
        let pid = recorded_pid(&mut file);
        return (!only_a_fork_copy(pid, &held_key(dir))).then_some(pid);
    }
    None
}

/// Removes temporary files (names with [`lesion_data::io::TMP_MARKER`], e.g. the
/// `.last.safetensors.tmp-<pid>` of a killed checkpoint write) from run folder `dir` and its
/// `checkpoints/`. Call only while holding the folder's [`RunLock`]: otherwise the temp file
/// of a live writer could go. Returns how many were removed.
pub fn clean_temp_files(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let checkpoints = CheckpointPaths::new(dir).last;
    let folders = [Some(dir), checkpoints.parent()];
    for folder in folders.into_iter().flatten() {
        let Ok(entries) = std::fs::read_dir(folder) else { continue };
        for entry in entries {
            let entry = entry.map_err(|e| TrainError::file(folder, e))?;
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if is_file && entry.file_name().to_string_lossy().contains(lesion_data::io::TMP_MARKER)
            {
                std::fs::remove_file(entry.path())
                    .map_err(|e| TrainError::file(entry.path(), e))?;
                removed += 1;
            }
        }
    }
    if removed > 0 {
        info!(removed, "removed temporary files left in {}", dir.display());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_pid_then_taken_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let e = RunLock::acquire(dir.path()).unwrap_err().to_string();
        let pid = std::process::id().to_string();
        assert!(e.contains(&dir.path().display().to_string()) && e.contains(&pid), "{e}");
        assert_eq!(holder(dir.path()), Some(Some(std::process::id())));
        drop(first);
        assert_eq!(holder(dir.path()), None);
        let _again = RunLock::acquire(dir.path()).unwrap();
        assert!(dir.path().join(LOCK_FILE).exists());
    }

    /// A status probe ([`holder`]'s shared lock) or a starter that has not yet written its pid
    /// holds the lock for an instant with no live pid recorded: a run starting then waits it
    /// out instead of being refused. Here the "probe" holds on for 200 ms, first over an empty
    /// lock file, then over one recording a pid that is no live process.
    #[test]
    fn a_transient_holder_is_waited_out_not_refused() {
        // Above any pid the kernel hands out (pid_max is at most 2^22).
        const DEAD_PID: &str = "4194305";
        for recorded in ["", DEAD_PID] {
            // A folder per round: a released lock of an earlier round could still be held by a
            // program another test is spawning (until its exec), and the probe below must
            // get its lock at once.
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(LOCK_FILE), recorded).unwrap();
            let probe = File::open(dir.path().join(LOCK_FILE)).unwrap();
            assert!(flock(&probe, libc::LOCK_SH | libc::LOCK_NB).unwrap());
            let release = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                drop(probe);
            });
            let lock = RunLock::acquire(dir.path());
            release.join().unwrap();
            assert!(lock.is_ok(), "{recorded:?}: {:?}", lock.err());
        }
    }

    /// The CI failure of stop 18: a lock released and taken again by the same process while
    /// another thread spawns programs (whose fork briefly shares the lock file) must be taken,
    /// never refused as "in use by" this very process.
    #[test]
    fn a_released_lock_is_taken_again_while_other_threads_spawn_programs() {
        let dir = tempfile::tempdir().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spawners: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut spawned = 0usize;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::process::Command::new("true").status().unwrap();
                        spawned += 1;
                    }
                    spawned
                })
            })
            .collect();
        for _ in 0..300 {
            let lock = RunLock::acquire(dir.path()).unwrap();
            assert!(RunLock::acquire(dir.path()).is_err(), "held here: refused at once");
            drop(lock);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let spawned: usize = spawners.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(spawned > 0, "the spawning threads ran");
    }

    #[test]
    fn failed_start_is_removed_but_a_started_one_kept() {
        let root = tempfile::tempdir().unwrap();
        let made = root.path().join("made");
        std::fs::create_dir(&made).unwrap();
        let mut lock = RunLock::acquire(&made).unwrap();
        lock.remove_if_start_fails(true);
        std::fs::write(made.join("config.toml"), "x").unwrap();
        drop(lock);
        assert!(!made.exists(), "a failed start in a folder it made leaves no folder");

        let given = root.path().join("given");
        std::fs::create_dir(&given).unwrap();
        let mut lock = RunLock::acquire(&given).unwrap();
        lock.remove_if_start_fails(false);
        std::fs::write(given.join("split.json"), "x").unwrap();
        drop(lock);
        let left: Vec<_> =
            std::fs::read_dir(&given).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(LOCK_FILE)]);

        let started = root.path().join("started");
        std::fs::create_dir(&started).unwrap();
        let mut lock = RunLock::acquire(&started).unwrap();
        lock.remove_if_start_fails(true);
        let last = CheckpointPaths::new(&started).last;
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _ = vs.root().var("w", &[2], tch::nn::Init::Const(1.0));
        let adam = crate::optim::Adam::new(crate::optim::AdamConfig::default());
        let state = crate::TrainState { epoch: 1, ..crate::TrainState::fresh(0.003) };
        crate::checkpoint::save_training(&last, &vs, &adam, &state).unwrap();
        crate::metrics_log::write(&started, &[(1usize, 0.5f64)]).unwrap();
        drop(lock);
        assert!(last.exists(), "a run with a checkpoint is resumable and kept");
    }

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Cfg {
        seed: u64,
    }
    impl crate::run::RunConfig for Cfg {
        fn validate(&self) -> Result<()> {
            Ok(())
        }
        fn seed(&self) -> u64 {
            self.seed
        }
        fn set_seed(&mut self, seed: u64) {
            self.seed = seed;
        }
    }

    fn split() -> Result<crate::run::Split> {
        Ok(crate::run::Split { train: vec!["a".into()], val: vec![] })
    }

    /// `run::open`: a second start or a resume while the run is open is refused with the
    /// holder's pid; once released, the resume works; a start that fails after `open` wrote
    /// its files leaves no folder.
    #[test]
    fn run_open_holds_the_folder_for_the_life_of_the_run() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        let opts = crate::RunOptions::new(&dir, tch::Device::Cpu, root.path().join("w"));
        let resume = crate::RunOptions { resume: true, ..opts.clone() };
        let (_, _, lock) = crate::run::open(&opts, &Cfg { seed: 1 }, |_| split()).unwrap();
        let pid = std::process::id().to_string();
        for again in [&opts, &resume] {
            let e = crate::run::open(again, &Cfg { seed: 1 }, |_| split()).unwrap_err().to_string();
            assert!(e.contains("in use") && e.contains(&pid), "{e}");
        }
        assert!(dir.join(crate::run::CONFIG_FILE).exists(), "the refused start removed nothing");
        // The run trains: a checkpoint makes it a resumable run, kept when the lock goes.
        let last = CheckpointPaths::new(&dir).last;
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _ = vs.root().var("w", &[2], tch::nn::Init::Const(1.0));
        let adam = crate::optim::Adam::new(crate::optim::AdamConfig::default());
        let state = crate::TrainState { epoch: 1, ..crate::TrainState::fresh(0.003) };
        crate::checkpoint::save_training(&last, &vs, &adam, &state).unwrap();
        crate::metrics_log::write(&dir, &[(1usize, 0.5f64)]).unwrap();
        drop(lock);
        let (_, _, lock) = crate::run::open(&resume, &Cfg { seed: 1 }, |_| split()).unwrap();
        drop(lock);

        let failed = root.path().join("failed");
        let opts = crate::RunOptions::new(&failed, tch::Device::Cpu, root.path().join("w"));
        let e = crate::run::open(&opts, &Cfg { seed: 1 }, |_| {
            Ok(crate::run::Split { train: vec![], val: vec!["a".into()] })
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("training split is empty"), "{e}");
        assert!(!failed.exists(), "a failed start leaves no half-made run folder");
    }

    #[test]
    fn temp_files_are_cleaned_from_the_run_and_its_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let ck = CheckpointPaths::new(dir.path()).last;
        std::fs::create_dir_all(ck.parent().unwrap()).unwrap();
        std::fs::write(ck.parent().unwrap().join(".last.safetensors.tmp-99"), "x").unwrap();
        std::fs::write(dir.path().join(".run.json.tmp-99-0"), "x").unwrap();
        std::fs::write(&ck, "keep").unwrap();
        assert_eq!(clean_temp_files(dir.path()).unwrap(), 2);
        assert!(ck.exists());
        assert_eq!(clean_temp_files(dir.path()).unwrap(), 0);
    }
}
