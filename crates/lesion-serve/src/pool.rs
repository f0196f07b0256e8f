//! The inference workers. libtorch calls block for tens to hundreds of milliseconds, so they
//! never run on the async runtime: each worker is an OS thread that loads its own copy of the
//! bundle's nets (tch tensors are `Send` but not `Sync`, so nothing is shared between them) and
//! takes jobs from one bounded queue. A full queue is answered at once (429), never waited on.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;
use tch::Device;
use tokio::sync::oneshot;

use lesion_cls::tta::TtaMode;
use lesion_pipeline::bundle::Bundle;
use lesion_pipeline::engine::{AbsentClasses, Analysis, Engine, SegUse};

/// Side of the synthetic image of the warm-up pass.
const WARMUP_SIDE: u32 = 128;

/// What a job asks of the nets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// The segmentation nets only.
    Segment,
    /// Everything the bundle has (classification uses the segmentation where the bundle's
    /// classifiers were trained so).
    Analyze,
}

/// One request's image and what to do with it.
pub struct Job {
    pub work: Work,
    pub id: String,
    pub image: Arc<RgbImage>,
    /// Patient metadata for heads trained with it (`age`, `sex`).
    pub meta: Vec<(String, String)>,
    /// Replaces the bundle's TTA (a lighter one, on request).
    pub tta: Option<TtaMode>,
    /// Classes taken out of the classification (checked against the bundle).
    pub absent: AbsentClasses,
    /// Past this instant the client has been answered 503: the job is skipped.
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<Analysis, String>>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue is full.
    Busy,
    /// The workers have stopped (shutdown, or the bundle failed to load).
    Stopped,
}

/// State shared by the workers and the HTTP side.
#[derive(Default)]
pub struct PoolStatus {
    /// Workers that loaded the bundle and finished their warm-up pass.
    pub ready_workers: AtomicUsize,
    /// Jobs queued and not yet taken by a worker.
    pub queued: AtomicUsize,
    /// A worker's load or warm-up error, when one failed.
    pub failure: Mutex<Option<String>>,
    pub stopping: AtomicBool,
}

impl PoolStatus {
    pub fn is_ready(&self) -> bool {
        self.ready_workers.load(Ordering::Acquire) > 0 && !self.stopping.load(Ordering::Acquire)
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }
}

/// The workers and the sending end of their queue.
pub struct Pool {
    sender: Mutex<Option<SyncSender<Job>>>,
    pub status: Arc<PoolStatus>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// Starts `workers` threads, each loading `bundle` on `device` and running one warm-up
    /// analysis before it counts as ready. libtorch's intra-op threads are process-wide
    /// (`lesion --threads`), shared by the workers.
    pub fn start(bundle: Bundle, device: Device, workers: usize, queue: usize) -> Pool {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let status = Arc::new(PoolStatus::default());
        let handles = (0..workers)
            .map(|i| {
                let rx = Arc::clone(&rx);
                let status = Arc::clone(&status);
                let bundle = bundle.clone();
                std::thread::Builder::new()
                    .name(format!("lesion-infer-{i}"))
                    .spawn(move || worker(bundle, device, rx, status))
            })
            .filter_map(|h| match h {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::error!("cannot start an inference worker: {e}");
                    None
                }
            })
            .collect();
        Pool { sender: Mutex::new(Some(tx)), status, workers: Mutex::new(handles) }
    }

    /// Queues a job, or says at once why not.
    pub fn submit(&self, job: Job) -> Result<(), Refusal> {
        let guard = self.sender.lock().map_err(|_| Refusal::Stopped)?;
        let Some(tx) = guard.as_ref() else { return Err(Refusal::Stopped) };
        // Counted before sending: the worker decrements on receipt, which may come first.
        self.status.queued.fetch_add(1, Ordering::AcqRel);
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.status.queued.fetch_sub(1, Ordering::AcqRel);
                Err(match e {
                    TrySendError::Full(_) => Refusal::Busy,
                    TrySendError::Disconnected(_) => Refusal::Stopped,
                })
            }
        }
    }

    /// Closes the queue and waits for the workers to finish what they hold.
    pub fn stop(&self) {
        self.status.stopping.store(true, Ordering::Release);
        if let Ok(mut s) = self.sender.lock() {
            s.take();
        }
        let handles = self.workers.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default();
        for h in handles {
            let _ = h.join();
        }
    }
}

fn worker(bundle: Bundle, device: Device, rx: Arc<Mutex<Receiver<Job>>>, status: Arc<PoolStatus>) {
    let root: PathBuf = bundle.root.clone();
    let engine = match Engine::load(bundle, device).and_then(|e| {
        let warm = RgbImage::from_pixel(WARMUP_SIDE, WARMUP_SIDE, image::Rgb([128, 96, 80]));
        e.analyze("warm-up", &warm, &[], None, &AbsentClasses::none()).map(|_| e)
    }) {
        Ok(e) => e,
        Err(e) => {
            let msg = format!("{}: cannot load the bundle: {e}", root.display());
            tracing::error!("{msg}");
            if let Ok(mut f) = status.failure.lock() {
                f.get_or_insert(msg);
            }
            return;
        }
    };
    status.ready_workers.fetch_add(1, Ordering::AcqRel);
    loop {
        // The lock is held only while waiting for the next job, never while working.
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => break,
        };
        let Ok(job) = job else { break };
        status.queued.fetch_sub(1, Ordering::AcqRel);
        if Instant::now() > job.deadline || job.reply.is_closed() {
            continue; // its client was already answered (timeout) or left
        }
        let out = run(&engine, &job).map_err(|e| e.to_string());
        let _ = job.reply.send(out);
    }
    status.ready_workers.fetch_sub(1, Ordering::AcqRel);
}

fn run(engine: &Engine, job: &Job) -> lesion_core::Result<Analysis> {
    match job.work {
        Work::Segment => {
            let segmented =
                engine.segment(&job.image, std::path::Path::new(&job.id), SegUse::MaskOnly)?;
            Ok(Analysis { segmented, probabilities: None })
        }
        Work::Analyze => {
            let meta: Vec<(&str, &str)> =
                job.meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            engine.analyze(&job.id, &job.image, &meta, job.tta, &job.absent)
        }
    }
}

/// How long a client waits for its job at most.
pub fn deadline(timeout: Duration) -> Instant {
    Instant::now() + timeout
}
