//! The JSON audit writer: a buffer per thread, one writer thread, no line lost.
//!
//! - **Hot path.** A worker renders the line into its own buffer ([`Slot`]), behind a mutex only the
//!   writer thread and the drain ever touch: uncontended, one atomic operation to lock and one to
//!   unlock. Nothing else is
//!   shared per line.
//! - **Size.** When a buffer holds [`BUFFER_BYTES`] (64 KiB, about 150 lines) it is swapped for a
//!   recycled empty one and queued to the writer thread, which does every `write(2)`.
//! - **Time and idle.** Every [`FLUSH_INTERVAL`] the writer thread takes what every buffer holds, so a
//!   line waits at most about a second, busy or idle. It takes a buffer only if it can lock it at once
//!   (`try_lock`): a worker holding its own buffer is never waited for. An idle worker needs to do
//!   nothing for its last lines to go out. (Not on every park of the worker's event loop: a busy
//!   worker parks thousands of times a second, which would turn blocks back into single lines.)
//! - **Slow destination.** The queue is bounded ([`QUEUE_BUFFERS`] blocks); a worker whose block does
//!   not fit waits until the writer thread has written one (counted in
//!   `scopegate_audit_writer_waits_total`). Memory is bounded by (threads + queue + 4 spares) × 64 KiB,
//!   and nothing is dropped. Only a destination that fails (`EPIPE`, `EBADF`) or, at exit, does not take
//!   the lines within [`DRAIN_WAIT`] loses them: counted in `scopegate_audit_lines_lost_total` and
//!   logged.
//! - **Order.** A thread's blocks are queued under its own buffer's lock, and the periodic sweep writes
//!   what is already queued before what it took, so one thread's lines reach the destination in the
//!   order they were recorded.
//! - **Drain.** [`Writer::flush`] takes every registered buffer (other threads' too), queues them and waits for the writer thread to have written everything
//!   queued before it. The server calls it once its workers have stopped, and [`AuditGuard`]'s drop calls
//!   it again at exit. A thread that exits hands its buffer over on the way out.
//! - **One destination.** The writer thread writes each block with a single `write_all` on stderr,
//!   which holds std's stderr lock for the whole block, as the tracing appender does for each of its
//!   lines, so audit blocks and other log lines never interleave mid-line.

use std::cell::OnceCell;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::{AuditRecord, FlushReport};
use crate::metrics::AuditMetrics;

/// A buffer is queued for writing once it holds this much.
pub(crate) const BUFFER_BYTES: usize = 64 * 1024;
/// The longest a recorded line waits in a buffer.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Full blocks queued to the writer thread before a worker waits.
pub(crate) const QUEUE_BUFFERS: usize = 16;
/// Emptied blocks kept for reuse.
const SPARE_BUFFERS: usize = 4;
/// How long the drain waits for the destination to take the last lines.
pub(crate) const DRAIN_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub buffer_bytes: usize,
    pub interval: Duration,
    pub queue: usize,
    /// How long the drain waits for the destination.
    pub drain_wait: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            buffer_bytes: BUFFER_BYTES,
            interval: FLUSH_INTERVAL,
            queue: QUEUE_BUFFERS,
            drain_wait: DRAIN_WAIT,
        }
    }
}

/// Why a block was written (the `reason` label of `scopegate_audit_flushes_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Size,
    Time,
    Drain,
    ThreadExit,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Size => "size",
            Reason::Time => "time",
            Reason::Drain => "drain",
            Reason::ThreadExit => "thread_exit",
        }
    }
}

/// Lines rendered and not yet handed to the writer thread.
struct Pending {
    buf: Vec<u8>,
    /// Lines in `buf`.
    lines: u64,
    /// Lines this thread has recorded, ever.
    recorded: u64,
}

/// One thread's buffer.
pub(crate) struct Slot {
    pending: Mutex<Pending>,
}

/// A block of whole lines on its way to the destination.
struct Block {
    buf: Vec<u8>,
    lines: u64,
    reason: Reason,
}

enum Msg {
    Block(Block),
    /// Answered once every message queued before it has been handled.
    Barrier(SyncSender<()>),
    Stop,
}

pub(crate) struct Writer {
    /// Every live thread's buffer (the drain and the sweep reach other threads' buffers through it).
    slots: Mutex<Vec<Arc<Slot>>>,
    queue: SyncSender<Msg>,
    /// The receiving end until the writer thread takes it.
    receiver: Mutex<Option<Receiver<Msg>>>,
    /// Emptied blocks, reused so that a full buffer is swapped without allocating.
    spare: Mutex<Vec<Vec<u8>>>,
    out: Mutex<Box<dyn Write + Send>>,
    options: Options,
    /// Lines recorded by threads that have exited.
    retired: Mutex<u64>,
    metrics: AuditMetrics,
    last_warning: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

static GLOBAL: OnceLock<Arc<Writer>> = OnceLock::new();

/// The process's writer, once [`install`] has run.
pub(crate) fn global() -> Option<&'static Arc<Writer>> {
    GLOBAL.get()
}

/// Installs the process's writer and starts its thread; `None` if one is already installed.
pub(crate) fn install(out: Box<dyn Write + Send>) -> Option<AuditGuard> {
    let writer = Writer::new(out, Options::default(), crate::metrics::get().audit.clone());
    GLOBAL.set(writer.clone()).ok()?;
    let thread = writer.spawn().ok();
    Some(AuditGuard { writer, thread })
}

/// Flushes every buffer and stops the writer thread when dropped; later lines are written
/// synchronously by the thread that records them.
pub struct AuditGuard {
    writer: Arc<Writer>,
    thread: Option<(JoinHandle<()>, Receiver<()>)>,
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        let _ = self.writer.flush();
        if let Some((thread, ended)) = self.thread.take() {
            // Bounded: a destination that blocks for good must not keep the process from exiting.
            let deadline = Instant::now() + self.writer.options.drain_wait;
            if self.writer.try_send_until(Msg::Stop, deadline).is_ok() {
                let left = deadline.saturating_duration_since(Instant::now());
                if !matches!(ended.recv_timeout(left), Err(RecvTimeoutError::Timeout)) {
                    let _ = thread.join();
                }
            }
        }
    }
}

thread_local! {
    static LOCAL: OnceCell<Local> = const { OnceCell::new() };
}

/// This thread's registration; handing the buffer over when the thread exits.
struct Local {
    writer: Arc<Writer>,
    slot: Arc<Slot>,
}

impl Drop for Local {
    fn drop(&mut self) {
        self.writer.retire(&self.slot);
    }
}

impl Writer {
    pub(crate) fn new(
        out: Box<dyn Write + Send>,
        options: Options,
        metrics: AuditMetrics,
    ) -> Arc<Writer> {
        let (queue, receiver) = mpsc::sync_channel(options.queue.max(1));
        Arc::new(Writer {
            slots: Mutex::new(Vec::new()),
            queue,
            receiver: Mutex::new(Some(receiver)),
            spare: Mutex::new(Vec::new()),
            out: Mutex::new(out),
            options,
            retired: Mutex::new(0),
            metrics,
            last_warning: Mutex::new(None),
        })
    }

    /// Starts the writer thread (once); the receiver is told (disconnected) when it has ended.
    pub(crate) fn spawn(self: &Arc<Writer>) -> std::io::Result<(JoinHandle<()>, Receiver<()>)> {
        let rx = lock(&self.receiver).take().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "writer thread started")
        })?;
        let (ended_tx, ended) = mpsc::channel::<()>();
        let me = self.clone();
        let thread = std::thread::Builder::new()
            .name("scopegate-audit".into())
            .spawn(move || {
                let _ended = ended_tx;
                me.run(rx)
            })?;
        Ok((thread, ended))
    }

    /// Records one line from the calling thread, into its own buffer.
    pub(crate) fn record(self: &Arc<Writer>, r: &AuditRecord<'_>) {
        let at = SystemTime::now();
        let done = LOCAL.try_with(|local| {
            let local = local.get_or_init(|| Local {
                writer: self.clone(),
                slot: self.register(),
            });
            // The thread's buffer belongs to the process's writer; any other writes its lines alone.
            if Arc::ptr_eq(&local.writer, self) {
                self.push(&local.slot, r, at);
                true
            } else {
                false
            }
        });
        if !matches!(done, Ok(true)) {
            // The thread is exiting (its buffer is gone), or this is not the process's writer: the line
            // goes out on its own.
            let mut buf = Vec::new();
            super::render_json(&mut buf, r, at);
            *lock(&self.retired) += 1;
            self.send(Block {
                buf,
                lines: 1,
                reason: Reason::ThreadExit,
            });
        }
    }

    /// A new buffer, reachable by the sweep and the drain.
    pub(crate) fn register(&self) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            pending: Mutex::new(Pending {
                buf: self.fresh_buffer(),
                lines: 0,
                recorded: 0,
            }),
        });
        lock(&self.slots).push(slot.clone());
        slot
    }

    /// Hands a buffer over for good (its thread is exiting).
    pub(crate) fn retire(&self, slot: &Arc<Slot>) {
        {
            let mut p = lock(&slot.pending);
            if p.lines > 0 {
                let block = self.take(&mut p, Reason::ThreadExit);
                self.send(block);
            }
            *lock(&self.retired) += p.recorded;
            p.recorded = 0;
        }
        lock(&self.slots).retain(|s| !Arc::ptr_eq(s, slot));
    }

    /// Renders the line into `slot`; a full buffer is queued (under the slot's lock, which keeps this
    /// thread's blocks in order).
    pub(crate) fn push(&self, slot: &Slot, r: &AuditRecord<'_>, at: SystemTime) {
        let mut p = lock(&slot.pending);
        super::render_json(&mut p.buf, r, at);
        p.lines += 1;
        p.recorded += 1;
        if p.buf.len() >= self.options.buffer_bytes {
            let block = self.take(&mut p, Reason::Size);
            self.send(block);
        }
    }

    fn take(&self, p: &mut Pending, reason: Reason) -> Block {
        let buf = std::mem::replace(&mut p.buf, self.fresh_buffer());
        Block {
            buf,
            lines: std::mem::take(&mut p.lines),
            reason,
        }
    }

    fn fresh_buffer(&self) -> Vec<u8> {
        lock(&self.spare)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.options.buffer_bytes + 4096))
    }

    /// Queues a block; waits while the queue is full (slow destination). Without a writer thread (not
    /// started, or stopped at exit) the block is written here.
    fn send(&self, block: Block) {
        match self.queue.try_send(Msg::Block(block)) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => {
                self.metrics.writer_waits.inc();
                if let Err(mpsc::SendError(Msg::Block(b))) = self.queue.send(msg) {
                    self.write(b);
                }
            }
            Err(TrySendError::Disconnected(Msg::Block(b))) => self.write(b),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Like [`send`](Self::send), giving up at `deadline` (the drain must end); the block comes back
    /// if it could not be queued in time.
    fn send_until(&self, block: Block, deadline: Instant) -> Result<(), Block> {
        match self.try_send_until(Msg::Block(block), deadline) {
            Ok(()) => Ok(()),
            Err(Some(Msg::Block(b))) => Err(b),
            Err(_) => Ok(()),
        }
    }

    /// Queues `msg`, retrying until `deadline` while the queue is full. Without a writer thread a block
    /// is written here; `Err(None)` means there is no writer thread to answer a barrier.
    fn try_send_until(&self, msg: Msg, deadline: Instant) -> Result<(), Option<Msg>> {
        let mut msg = msg;
        let mut pause = Duration::from_micros(100);
        loop {
            match self.queue.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(Msg::Block(b))) => {
                    self.write(b);
                    return Ok(());
                }
                Err(TrySendError::Disconnected(_)) => return Err(None),
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return Err(Some(m));
                    }
                    msg = m;
                    // Only while the destination is not keeping up at exit: back off, bounded.
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
            }
        }
    }

    /// The drain: every buffer's lines are written (or counted lost) when this returns.
    pub(crate) fn flush(&self) -> FlushReport {
        let deadline = Instant::now() + self.options.drain_wait;
        let slots: Vec<Arc<Slot>> = lock(&self.slots).clone();
        let mut lost = 0;
        for slot in slots {
            let mut p = lock(&slot.pending);
            if p.lines > 0 {
                let block = self.take(&mut p, Reason::Drain);
                if let Err(b) = self.send_until(block, deadline) {
                    lost += b.lines;
                }
            }
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let in_time = match self.try_send_until(Msg::Barrier(tx), deadline) {
            Ok(()) => {
                let left = deadline.saturating_duration_since(Instant::now());
                rx.recv_timeout(left).is_ok()
            }
            // No writer thread: every block was written by `send_until` itself.
            Err(None) => true,
            Err(Some(_)) => false,
        };
        if !in_time {
            lost += self.queued_lines_estimate();
        }
        if lost > 0 {
            self.metrics.lines_lost.inc_by(lost);
            tracing::error!(
                lines = lost,
                "audit lines not written: the log destination did not take them in time"
            );
        }
        FlushReport {
            recorded: self.recorded(),
            written: self.metrics.lines.get(),
            lost: self.metrics.lines_lost.get(),
        }
    }

    /// Lines still buffered or queued when the drain gave up (everything recorded and not written).
    fn queued_lines_estimate(&self) -> u64 {
        self.recorded()
            .saturating_sub(self.metrics.lines.get() + self.metrics.lines_lost.get())
    }

    /// Lines recorded since start, by every thread.
    pub(crate) fn recorded(&self) -> u64 {
        // The registry's lock is not held while a buffer's is awaited (the writer thread's sweep takes
        // the registry's, and a worker may hold its buffer's while it waits for the writer thread).
        let slots: Vec<Arc<Slot>> = lock(&self.slots).clone();
        let live: u64 = slots.iter().map(|s| lock(&s.pending).recorded).sum();
        live + *lock(&self.retired)
    }

    /// The writer thread: writes queued blocks, and every interval what every buffer holds.
    fn run(&self, rx: Receiver<Msg>) {
        let mut next = Instant::now() + self.options.interval;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            let msg = if wait.is_zero() {
                Err(RecvTimeoutError::Timeout)
            } else {
                rx.recv_timeout(wait)
            };
            match msg {
                Ok(Msg::Block(b)) => self.write(b),
                Ok(Msg::Barrier(ack)) => {
                    let _ = ack.try_send(());
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    if self.sweep(&rx) {
                        break;
                    }
                    next = Instant::now() + self.options.interval;
                }
            }
        }
        // Anything queued behind the stop (a thread that exited late) is still written.
        while let Ok(m) = rx.try_recv() {
            if let Msg::Block(b) = m {
                self.write(b);
            }
        }
    }

    /// The time flush. Returns true if a stop request was found in the queue.
    fn sweep(&self, rx: &Receiver<Msg>) -> bool {
        let mut taken = Vec::new();
        for slot in lock(&self.slots).iter() {
            let mut p = match slot.pending.try_lock() {
                Ok(p) => p,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                // Its thread is recording or queueing a block: it will be swept next time.
                Err(TryLockError::WouldBlock) => continue,
            };
            if p.lines > 0 {
                taken.push(self.take(&mut p, Reason::Time));
            }
        }
        // Blocks queued before these were taken hold older lines of the same threads: first.
        let mut barriers = Vec::new();
        let mut stop = false;
        loop {
            match rx.try_recv() {
                Ok(Msg::Block(b)) => self.write(b),
                Ok(Msg::Barrier(ack)) => barriers.push(ack),
                Ok(Msg::Stop) => {
                    stop = true;
                    break;
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
        for b in taken {
            self.write(b);
        }
        for ack in barriers {
            let _ = ack.try_send(());
        }
        stop
    }

    /// One block to the destination, in one `write_all`.
    fn write(&self, mut block: Block) {
        let result = {
            let mut out = lock(&self.out);
            out.write_all(&block.buf).and_then(|()| out.flush())
        };
        match result {
            Ok(()) => {
                self.metrics.lines.inc_by(block.lines);
                self.metrics.bytes.inc_by(block.buf.len() as u64);
                self.metrics.flush(block.reason.label());
            }
            Err(e) => {
                self.metrics.lines_lost.inc_by(block.lines);
                let mut last = lock(&self.last_warning);
                if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    *last = Some(Instant::now());
                    tracing::error!(
                        error = %e,
                        lines = block.lines,
                        "cannot write audit lines to the log destination"
                    );
                }
            }
        }
        if block.buf.capacity() <= 2 * self.options.buffer_bytes + 4096 {
            block.buf.clear();
            let mut spare = lock(&self.spare);
            // Enough for the workers' swaps in steady state; more would only hold memory after a burst.
            if spare.len() < SPARE_BUFFERS {
                spare.push(block.buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A destination that keeps what it is given, optionally slowly, optionally failing.
    #[derive(Clone, Default)]
    struct Dest {
        data: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
        delay: Option<Duration>,
        fail: Arc<AtomicBool>,
    }

    impl Write for Dest {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
            }
            if let Some(d) = self.delay {
                std::thread::sleep(d);
            }
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.data.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Dest {
        fn lines(&self) -> Vec<serde_json::Value> {
            let data = self.data.lock().unwrap().clone();
            String::from_utf8(data)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    fn rec(id: &str) -> AuditRecord<'_> {
        AuditRecord {
            request_id: id,
            subject: Some("reader"),
            source: Some("api_token"),
            client_ip: Some(IpAddr::from([127, 0, 0, 1])),
            method: "GET",
            path: "/v1/models",
            route: "GET,HEAD /v1/models",
            required: "operator.read".into(),
            effective: "operator.read".into(),
            decision: "allow",
            reasons: "allowed".into(),
            status: 200,
            duration: Duration::from_micros(250),
            upstream: None,
            websocket: false,
        }
    }

    fn options(buffer_bytes: usize, interval: Duration, queue: usize) -> Options {
        Options {
            buffer_bytes,
            interval,
            queue,
            drain_wait: Duration::from_secs(30),
        }
    }

    /// A destination that takes nothing until the test lets it go (then fails).
    struct Stuck(Mutex<Receiver<()>>);

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            let _ = lock(&self.0).recv();
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A destination that blocks for good: the drain gives up at its deadline and counts what it
    /// could not write, instead of keeping the process from exiting.
    #[test]
    fn the_drain_is_bounded_when_the_destination_blocks() {
        let (release, stuck) = mpsc::channel::<()>();
        let metrics = AuditMetrics::default();
        let w = Writer::new(
            Box::new(Stuck(Mutex::new(stuck))),
            Options {
                drain_wait: Duration::from_millis(200),
                ..options(1024, Duration::from_secs(3600), 1)
            },
            metrics.clone(),
        );
        let (thread, _ended) = w.spawn().unwrap();
        let slot = w.register();
        // One block in the writer's hands (stuck), one queued, the rest buffered.
        for i in 0..5 {
            w.push(&slot, &rec(&format!("stuck-{i}")), SystemTime::now());
        }
        let start = Instant::now();
        let report = w.flush();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the drain must end"
        );
        assert_eq!(report.written, 0);
        assert!(report.lost > 0, "{report:?}");
        drop(release);
        let _ = w.queue.send(Msg::Stop);
        thread.join().unwrap();
    }

    /// Lines from several threads, through size flushes and the drain: every one, each thread's in
    /// order, counted in the metrics.
    #[test]
    fn many_threads_lose_nothing_and_keep_their_order() {
        let dest = Dest::default();
        let metrics = AuditMetrics::default();
        let w = Writer::new(
            Box::new(dest.clone()),
            options(4096, Duration::from_secs(3600), 2),
            metrics.clone(),
        );
        let (thread, _ended) = w.spawn().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    let slot = w.register();
                    for i in 0..2_000 {
                        w.push(&slot, &rec(&format!("{t}-{i}")), SystemTime::now());
                    }
                    slot
                })
            })
            .collect();
        let slots: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let report = w.flush();
        assert_eq!(report.recorded, 8_000);
        assert_eq!(report.written, 8_000);
        assert_eq!(report.lost, 0);
        let lines = dest.lines();
        assert_eq!(lines.len(), 8_000);
        let mut next = [0u32; 4];
        for l in &lines {
            let id = l["request_id"].as_str().unwrap();
            let (t, i) = id.split_once('-').unwrap();
            let t: usize = t.parse().unwrap();
            assert_eq!(
                i.parse::<u32>().unwrap(),
                next[t],
                "thread {t} out of order"
            );
            next[t] += 1;
        }
        assert_eq!(metrics.lines.get(), 8_000);
        let bytes = dest.data.lock().unwrap().len() as u64;
        assert_eq!(metrics.bytes.get(), bytes);
        assert!(
            dest.writes.load(Ordering::SeqCst) > 8,
            "written in blocks by size"
        );
        drop(slots);
        let _ = w.queue.send(Msg::Stop);
        thread.join().unwrap();
    }

    /// Lines written by the time flush alone, with nobody recording (an idle worker).
    #[test]
    fn an_idle_buffer_is_written_by_the_time_flush() {
        let dest = Dest::default();
        let w = Writer::new(
            Box::new(dest.clone()),
            options(1 << 20, Duration::from_millis(20), 4),
            AuditMetrics::default(),
        );
        let (thread, _ended) = w.spawn().unwrap();
        let slot = w.register();
        w.push(&slot, &rec("idle-1"), SystemTime::now());
        let start = Instant::now();
        while dest.lines().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10), "never flushed");
            std::thread::yield_now();
        }
        assert_eq!(dest.lines()[0]["request_id"], "idle-1");
        let _ = w.queue.send(Msg::Stop);
        thread.join().unwrap();
    }

    /// A destination slower than the traffic: workers wait (bounded queue) and nothing is dropped.
    #[test]
    fn a_slow_destination_makes_workers_wait_and_drops_nothing() {
        let dest = Dest {
            delay: Some(Duration::from_millis(5)),
            ..Dest::default()
        };
        let metrics = AuditMetrics::default();
        let w = Writer::new(
            Box::new(dest.clone()),
            options(1024, Duration::from_secs(3600), 1),
            metrics.clone(),
        );
        let (thread, _ended) = w.spawn().unwrap();
        let slot = w.register();
        for i in 0..400 {
            w.push(&slot, &rec(&format!("slow-{i}")), SystemTime::now());
            // Bounded memory: this thread's buffer never holds much more than one block.
            assert!(lock(&slot.pending).buf.len() < 1024 + 1024);
        }
        let report = w.flush();
        assert_eq!((report.written, report.lost), (400, 0));
        assert_eq!(dest.lines().len(), 400);
        assert!(metrics.writer_waits.get() > 0, "the worker had to wait");
        assert!(
            lock(&w.spare).len() <= SPARE_BUFFERS,
            "spare blocks are bounded"
        );
        let _ = w.queue.send(Msg::Stop);
        thread.join().unwrap();
    }

    /// A destination that fails: the lines are counted lost, never silently.
    #[test]
    fn a_failing_destination_counts_lost_lines() {
        let dest = Dest::default();
        dest.fail.store(true, Ordering::SeqCst);
        let metrics = AuditMetrics::default();
        let w = Writer::new(
            Box::new(dest.clone()),
            options(1 << 20, Duration::from_secs(3600), 4),
            metrics.clone(),
        );
        let (thread, _ended) = w.spawn().unwrap();
        let slot = w.register();
        for i in 0..10 {
            w.push(&slot, &rec(&format!("x-{i}")), SystemTime::now());
        }
        let report = w.flush();
        assert_eq!((report.recorded, report.written, report.lost), (10, 0, 10));
        let _ = w.queue.send(Msg::Stop);
        thread.join().unwrap();
    }

    /// A thread that exits hands its buffer over; after the writer thread stops, lines are written
    /// synchronously.
    #[test]
    fn exiting_threads_and_a_stopped_writer_lose_nothing() {
        let dest = Dest::default();
        let w = Writer::new(
            Box::new(dest.clone()),
            options(1 << 20, Duration::from_secs(3600), 4),
            AuditMetrics::default(),
        );
        let (thread, _ended) = w.spawn().unwrap();
        let w2 = w.clone();
        std::thread::spawn(move || {
            let slot = w2.register();
            w2.push(&slot, &rec("exit-1"), SystemTime::now());
            w2.retire(&slot);
        })
        .join()
        .unwrap();
        assert!(lock(&w.slots).is_empty());
        let _ = w.flush();
        let _ = w.queue.send(Msg::Stop);
        thread.join().unwrap();
        let slot = w.register();
        w.push(&slot, &rec("late-1"), SystemTime::now());
        let report = w.flush();
        assert_eq!((report.recorded, report.written), (2, 2));
        let ids: Vec<_> = dest
            .lines()
            .iter()
            .map(|l| l["request_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["exit-1", "late-1"]);
    }
}
