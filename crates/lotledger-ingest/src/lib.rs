//! The ingest path shared by `lotledger ingest` and `lotledger bench`: Aleph messages from JSON
//! lines, applied in batches (group commit), each message still once and atomically, and the
//! store chosen at run time from a database URL ([`AnyStore`]).
//!
//! [`ingest_lines`] is the whole path from a line to the store (UTF-8, JSON, envelope, signature
//! unless trusted, [`BatchItem`], [`Store::apply_batch`]); the bench feeds it generated lines, so
//! what the bench measures is what ingest does. [`FileLines`] reads files for it, resuming after
//! what an earlier run committed.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use lotledger_core::envelope::Envelope;
use lotledger_core::{Rules, Timestamp};
use lotledger_store::{BatchItem, BatchJob, IngestProgress, Outcome, Store, StoreError};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod store;
pub use store::{AnyStore, redact};

pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// Why an ingest stopped. A refused line or a rejected message is not an error: it is counted
/// in the [`Summary`].
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// An input file could not be opened or read.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The store failed; `what` names the batch (its files and lines).
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },
    /// The store answered a batch with the wrong number of outcomes.
    #[error("the store returned {got} outcomes for {sent} messages ({what})")]
    OutcomeCount {
        got: usize,
        sent: usize,
        what: String,
    },
    /// The wall clock cannot be read as a ledger instant.
    #[error("the system clock cannot be read: {0}")]
    Clock(String),
    /// A parsing thread failed (a panic: a bug, not bad input).
    #[error("parsing messages: {0}")]
    Parsing(String),
}

impl IngestError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> IngestError {
        let what = what.into();
        move |source| IngestError::Io { what, source }
    }
}

/// The wall clock, read here and only here: the core never reads it.
pub fn clock_now() -> Result<Timestamp> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| IngestError::Clock("it is before 1970".into()))?;
    let micros = i64::try_from(since.as_micros())
        .map_err(|_| IngestError::Clock("it is out of range".into()))?;
    Timestamp::from_micros(micros).map_err(|e| IngestError::Clock(e.to_string()))
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} {what} [{{elapsed_precise}}] [{{wide_bar}}] {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"
    )) {
        bar.set_style(style);
    }
    bar
}

/// A `progress(done, total)` callback (as `repair`, `verify` and the integrity checks take)
/// that moves `bar`.
pub fn moves(bar: &indicatif::ProgressBar) -> impl FnMut(usize, usize) + '_ {
    |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
}

/// Errors listed in full in the JSON summary (the counts are always complete).
const MAX_LISTED_ERRORS: usize = 1000;
/// Longest accepted line (one message).
const MAX_LINE_BYTES: u64 = 16 * 1024 * 1024;
/// Default messages per transaction.
pub const DEFAULT_BATCH: u64 = 5000;
/// Largest accepted `--batch`.
pub const MAX_BATCH: u64 = 1_000_000;
/// Largest accepted `--jobs`.
pub const MAX_JOBS: u64 = 256;

/// The machine's cores (the default of `--jobs`).
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// How [`ingest_lines`] applies messages.
#[derive(Debug, Clone)]
pub struct Options {
    /// Skip item-hash and signature verification.
    pub trusted: bool,
    /// The processing instant of every batch; `None`: the clock, read once per batch.
    pub now: Option<Timestamp>,
    /// Messages (and refused lines) per [`Store::apply_batch`] call, at least 1.
    pub batch: usize,
    /// Threads parsing and verifying the next lines while a batch is applied, at least 1.
    pub jobs: usize,
    /// Files whose progress is recorded (display name → canonical path): each batch then stays
    /// within one file and commits the file's read prefix with it.
    pub progress_keys: HashMap<Arc<str>, String>,
}

/// What an ingest did. Counts are complete; `errors` keeps the first [`MAX_LISTED_ERRORS`].
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub processed: u64,
    pub rejected: u64,
    pub already_applied: u64,
    pub ignored: u64,
    /// `(item_hash, error)`; no hash for a line that is not a message.
    pub errors: Vec<(Option<String>, String)>,
    pub error_count: u64,
    /// Calls to [`Store::apply_batch`].
    pub batches: u64,
    /// Lines not read again because an earlier run committed them (summed over the files).
    pub resumed_after_lines: u64,
}

impl Summary {
    fn error(&mut self, item_hash: Option<String>, error: String) {
        self.error_count += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push((item_hash, error));
        }
    }

    /// Messages and refused lines seen.
    pub fn total(&self) -> u64 {
        self.processed + self.rejected + self.already_applied + self.ignored
    }
}

/// Where a line came from: `file:line`, formatted only when an error names it.
#[derive(Debug, Clone)]
pub struct LineSource {
    pub file: Arc<str>,
    pub line_no: u64,
    /// The file's bytes up to the end of this line, for a file whose progress is recorded.
    pub prefix: Option<Prefix>,
}

/// The first bytes of a file: their count and their running SHA-256, finished only for the
/// line that ends a batch (the one whose progress is committed).
#[derive(Debug, Clone)]
pub struct Prefix {
    pub bytes: u64,
    hasher: Sha256,
}

impl Prefix {
    /// The SHA-256 of the prefix, in lower-case hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

impl fmt::Display for LineSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line_no)
    }
}

/// One input line.
#[derive(Debug, Clone)]
pub enum Line {
    /// The bytes of a line (surrounding whitespace is ignored; an empty line is skipped).
    Text { source: LineSource, bytes: Vec<u8> },
    /// A line refused before parsing (too long): counted as rejected with this error.
    Refused { source: LineSource, error: String },
}

/// One message or refused line waiting for its batch, in input order.
enum Entry {
    /// The next item of the batch; its hash names a rejection.
    Item { item_hash: String },
    /// Already decided: rejected with no item hash.
    Refused(String),
}

/// Messages waiting to be applied together.
struct Pending {
    items: Vec<BatchItem>,
    entries: Vec<Entry>,
    first: Option<LineSource>,
    last: Option<LineSource>,
}

impl Pending {
    fn new(capacity: usize) -> Pending {
        Pending {
            items: Vec::with_capacity(capacity),
            entries: Vec::with_capacity(capacity),
            first: None,
            last: None,
        }
    }

    fn seen(&mut self, source: &LineSource) {
        if self.first.is_none() {
            self.first = Some(source.clone());
        }
        self.last = Some(source.clone());
    }

    fn refuse(&mut self, source: &LineSource, error: String) {
        self.seen(source);
        self.entries.push(Entry::Refused(error));
    }

    fn item(&mut self, source: &LineSource, item_hash: String, item: BatchItem) {
        self.seen(source);
        self.entries.push(Entry::Item { item_hash });
        self.items.push(item);
    }

    fn push(&mut self, source: &LineSource, parsed: Parsed) {
        match parsed {
            Parsed::Refused(error) => self.refuse(source, error),
            Parsed::Item { item_hash, item } => self.item(source, item_hash, item),
        }
    }

    /// Sends the pending items to the store as one batch (with the progress of the file they
    /// end in), or only their refused lines if there is nothing to apply; outcomes are
    /// recorded once the batch is committed ([`Applying`]).
    async fn submit(&mut self, applying: &mut Applying, opts: &Options) -> Result<()> {
        let progress = self.last.as_ref().and_then(|last| {
            let source = opts.progress_keys.get(&last.file)?;
            let prefix = last.prefix.as_ref()?;
            Some(IngestProgress {
                source: source.clone(),
                lines: last.line_no,
                bytes: prefix.bytes,
                prefix_sha256: prefix.sha256_hex(),
                resume_at: None,
            })
        });
        let what = self.describe();
        let job = if !self.items.is_empty() || progress.is_some() {
            let now = match opts.now {
                Some(t) => t,
                None => clock_now()?,
            };
            let items = std::mem::take(&mut self.items);
            Some(BatchJob {
                items,
                now,
                progress,
            })
        } else {
            None
        };
        let sent = Sent {
            entries: std::mem::take(&mut self.entries),
            what,
            items: job.as_ref().map(|job| job.items.len()),
        };
        self.first = None;
        self.last = None;
        applying.send(sent, job).await
    }

    fn describe(&self) -> String {
        let n = self.items.len();
        match (&self.first, &self.last) {
            (Some(a), Some(b)) if a.file == b.file && a.line_no == b.line_no => {
                format!("applying {n} message(s) of {a}")
            }
            (Some(a), Some(b)) => format!("applying {n} message(s) of {a} to {b}"),
            _ => format!("applying {n} message(s)"),
        }
    }
}

/// A batch sent to the store (or only refused lines), waiting for its outcomes.
struct Sent {
    entries: Vec<Entry>,
    what: String,
    /// Items sent to the store (`None`: nothing was sent, only refused lines to record).
    items: Option<usize>,
}

/// Batches sent to [`Store::apply_batches`] and not yet committed, in input order, and the
/// summary of those that were.
struct Applying {
    /// Where batches go (`None` once the input has ended).
    jobs: Option<tokio::sync::mpsc::Sender<BatchJob>>,
    done: tokio::sync::mpsc::Receiver<std::result::Result<Vec<Outcome>, StoreError>>,
    sent: VecDeque<Sent>,
    summary: Summary,
}

impl Applying {
    /// Sends a batch (`None`: nothing to apply) and records what the store committed since.
    async fn send(&mut self, sent: Sent, job: Option<BatchJob>) -> Result<()> {
        let stopped = match job {
            Some(job) => match &self.jobs {
                Some(jobs) => jobs.send(job).await.is_err(),
                None => true,
            },
            None => false,
        };
        self.sent.push_back(sent);
        // A store that stopped taking batches sent the error that stopped it.
        self.settle(stopped).await
    }

    /// Records the batches at the front of the queue whose outcomes have come; `wait`: every
    /// batch sent, waiting for their commits.
    async fn settle(&mut self, wait: bool) -> Result<()> {
        use tokio::sync::mpsc::error::TryRecvError;
        while let Some(front) = self.sent.front() {
            let outcomes = match front.items {
                None => None,
                Some(_) => {
                    let received = if wait {
                        self.done.recv().await
                    } else {
                        match self.done.try_recv() {
                            Ok(received) => Some(received),
                            Err(TryRecvError::Empty) => return Ok(()),
                            Err(TryRecvError::Disconnected) => None,
                        }
                    };
                    let applied = received.unwrap_or_else(|| {
                        Err(StoreError::Unavailable(
                            "the store stopped applying batches".into(),
                        ))
                    });
                    match applied {
                        Ok(outcomes) => Some(outcomes),
                        Err(source) => {
                            return Err(IngestError::Store {
                                what: front.what.clone(),
                                source,
                            });
                        }
                    }
                }
            };
            if let Some(front) = self.sent.pop_front() {
                self.summary.record(front, outcomes)?;
            }
        }
        Ok(())
    }

    /// Waits for every batch sent, and gives the summary.
    async fn finish(mut self) -> Result<Summary> {
        // The store's side ends once it has applied every batch sent.
        self.jobs = None;
        self.settle(true).await?;
        Ok(self.summary)
    }
}

impl Summary {
    /// Counts a committed batch's outcomes (and refused lines) in input order.
    fn record(&mut self, sent: Sent, outcomes: Option<Vec<Outcome>>) -> Result<()> {
        let mut outcomes = match (outcomes, sent.items) {
            (Some(applied), Some(items)) => {
                if applied.len() != items {
                    return Err(IngestError::OutcomeCount {
                        got: applied.len(),
                        sent: items,
                        what: sent.what,
                    });
                }
                self.batches += 1;
                applied.into_iter()
            }
            _ => Vec::new().into_iter(),
        };
        for entry in sent.entries {
            match entry {
                Entry::Refused(error) => {
                    self.rejected += 1;
                    self.error(None, error);
                }
                Entry::Item { item_hash } => match outcomes.next() {
                    Some(Outcome::Processed) => self.processed += 1,
                    Some(Outcome::Ignored(_)) => self.ignored += 1,
                    Some(Outcome::AlreadyApplied) => self.already_applied += 1,
                    Some(Outcome::Rejected(error)) => {
                        self.rejected += 1;
                        self.error(Some(item_hash), error);
                    }
                    None => {
                        return Err(IngestError::OutcomeCount {
                            got: 0,
                            sent: 1,
                            what: "an outcome missing".into(),
                        });
                    }
                },
            }
        }
        Ok(())
    }
}

/// A line parsed (and verified unless trusted): its messages and refusals in order, or the
/// input error that ends the input.
enum Step {
    Line {
        source: LineSource,
        parsed: Vec<Parsed>,
    },
    Failed(IngestError),
}

/// One message of a line, ready for its batch, or the reason the line (or message) is refused.
enum Parsed {
    Item { item_hash: String, item: BatchItem },
    Refused(String),
}

/// Reads the next `n` lines (fewer at the end of the input or after an input error, which ends
/// the chunk) and parses them on a blocking thread, spread over `jobs` threads: the returned
/// task runs while the caller applies the previous chunk. `None` at the end of the input.
fn parse_ahead(
    lines: &mut impl Iterator<Item = Result<Line>>,
    n: usize,
    jobs: usize,
    trusted: bool,
) -> Option<tokio::task::JoinHandle<Vec<Step>>> {
    let mut chunk = Vec::with_capacity(n.min(65_536));
    for line in lines.by_ref() {
        let failed = line.is_err();
        chunk.push(line);
        if failed || chunk.len() >= n {
            break;
        }
    }
    if chunk.is_empty() {
        return None;
    }
    Some(tokio::task::spawn_blocking(move || {
        parse_chunk(chunk, jobs, trusted)
    }))
}

/// Parses lines in input order, on up to `jobs` threads (contiguous shares).
fn parse_chunk(chunk: Vec<Result<Line>>, jobs: usize, trusted: bool) -> Vec<Step> {
    let step = |line: Result<Line>| match line {
        Ok(Line::Refused { source, error }) => {
            let error = format!("{source}: {error}");
            Step::Line {
                source,
                parsed: vec![Parsed::Refused(error)],
            }
        }
        Ok(Line::Text { source, bytes }) => {
            let parsed = parse_line(&source, &bytes, trusted);
            Step::Line { source, parsed }
        }
        Err(e) => Step::Failed(e),
    };
    map_on_threads(chunk, jobs, step, || {
        Step::Failed(IngestError::Parsing("a parsing thread panicked".into()))
    })
}

/// `f` over `items` on up to `jobs` threads, each a contiguous share, the results in input
/// order; a share whose thread panicked gives one `panicked()` in its place.
pub fn map_on_threads<T: Send, U: Send>(
    items: Vec<T>,
    jobs: usize,
    f: impl Fn(T) -> U + Sync,
    panicked: impl Fn() -> U,
) -> Vec<U> {
    let share = items.len().div_ceil(jobs.max(1)).max(1);
    if jobs <= 1 || items.len() <= share {
        return items.into_iter().map(f).collect();
    }
    let mut shares: Vec<Vec<T>> = Vec::new();
    let mut rest = items.into_iter();
    loop {
        let part: Vec<T> = rest.by_ref().take(share).collect();
        if part.is_empty() {
            break;
        }
        shares.push(part);
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| vec![panicked()]))
            .collect()
    })
}

/// Applies the messages of `lines` in batches of `opts.batch` (the whole ingest path: UTF-8,
/// JSON, envelope, item hash and signature unless trusted, then [`Store::apply_batch`]).
/// Lines are parsed and verified on `opts.jobs` threads a chunk ahead, while the store applies
/// the batch before; batches, outcomes and their order are those of a sequential run.
/// Outcomes are counted in input order. On an input error (`Err` from `lines`) the messages
/// read before it are applied, then the error is returned.
pub async fn ingest_lines<S: Store>(
    store: &S,
    rules: &Rules,
    lines: impl Iterator<Item = Result<Line>>,
    opts: &Options,
) -> Result<Summary> {
    let (jobs, queued) = tokio::sync::mpsc::channel(1);
    let (committed, done) = tokio::sync::mpsc::channel(4);
    let applying = Applying {
        jobs: Some(jobs),
        done,
        sent: VecDeque::new(),
        summary: Summary::default(),
    };
    let (_, summary) = tokio::join!(
        store.apply_batches(rules, queued, committed),
        feed(applying, lines, opts)
    );
    summary
}

/// [`ingest_lines`]' input side: lines parsed a chunk ahead, sent to the store in batches.
async fn feed(
    mut applying: Applying,
    mut lines: impl Iterator<Item = Result<Line>>,
    opts: &Options,
) -> Result<Summary> {
    let batch = opts.batch.max(1);
    let jobs = opts.jobs.max(1);
    let mut pending = Pending::new(batch.min(10_000));
    let mut next = parse_ahead(&mut lines, batch, jobs, opts.trusted);
    while let Some(task) = next.take() {
        let steps = task
            .await
            .map_err(|e| IngestError::Parsing(e.to_string()))?;
        let failed = matches!(steps.last(), Some(Step::Failed(_)));
        if !failed {
            next = parse_ahead(&mut lines, batch, jobs, opts.trusted);
        }
        for step in steps {
            let (source, parsed) = match step {
                Step::Line { source, parsed } => (source, parsed),
                Step::Failed(e) => {
                    pending.submit(&mut applying, opts).await?;
                    applying.finish().await?;
                    return Err(e);
                }
            };
            // A batch stays within one file, so that it can commit that file's progress.
            if pending.last.as_ref().is_some_and(|last| {
                last.file != source.file && opts.progress_keys.contains_key(&last.file)
            }) {
                pending.submit(&mut applying, opts).await?;
            }
            for p in parsed {
                pending.push(&source, p);
            }
            if pending.entries.len() >= batch {
                pending.submit(&mut applying, opts).await?;
            }
        }
    }
    pending.submit(&mut applying, opts).await?;
    applying.finish().await
}

/// One line's messages (a node's `messages.json` page holds several), each parsed and, unless
/// trusted, verified; refusals name `source`.
fn parse_line(source: &LineSource, bytes: &[u8], trusted: bool) -> Vec<Parsed> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.trim(),
        Err(_) => return vec![Parsed::Refused(format!("{source}: not valid UTF-8"))],
    };
    if text.is_empty() {
        return Vec::new();
    }
    // Most lines are one message: its fields read directly, without the whole document.
    if let Some(envelope) = Envelope::from_message_text(text) {
        return vec![message_item(envelope, trusted)];
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return vec![Parsed::Refused(format!("{source}: not valid JSON: {e}"))],
    };
    match value {
        Value::Object(mut page)
            if page.get("item_hash").is_none()
                && matches!(page.get("messages"), Some(Value::Array(_))) =>
        {
            match page.remove("messages") {
                Some(Value::Array(list)) => list
                    .iter()
                    .map(|message| parse_message(source, message, trusted))
                    .collect(),
                _ => Vec::new(),
            }
        }
        message => vec![parse_message(source, &message, trusted)],
    }
}

fn parse_message(source: &LineSource, message: &Value, trusted: bool) -> Parsed {
    match Envelope::from_json(message) {
        Ok(envelope) => message_item(envelope, trusted),
        Err(e) => Parsed::Refused(format!("{source}: {e}")),
    }
}

/// Why a message read from a file is refused before the credit rules: a POST whose hash or
/// signature does not verify, unless the file is trusted.
pub fn signature_refusal(envelope: &Envelope, trusted: bool) -> Option<String> {
    if trusted || envelope.message_type != "POST" {
        None
    } else {
        lotledger_sig::verify(envelope).err().map(|e| e.to_string())
    }
}

/// A message's batch item, its signature verified unless trusted.
fn message_item(envelope: Envelope, trusted: bool) -> Parsed {
    let item = match signature_refusal(&envelope, trusted) {
        None => BatchItem::from_envelope(&envelope),
        Some(e) => BatchItem::rejected(&envelope, e),
    };
    Parsed::Item {
        item_hash: envelope.item_hash,
        item,
    }
}

/// A file being read.
struct OpenFile {
    name: Arc<str>,
    reader: BufReader<Box<dyn Read>>,
    line_no: u64,
    /// The bytes read so far; `None` for standard input.
    read: Option<Prefix>,
}

impl OpenFile {
    /// Counts `bytes` as read.
    fn consumed(&mut self, bytes: &[u8]) {
        if let Some(read) = &mut self.read {
            read.bytes += bytes.len() as u64;
            read.hasher.update(bytes);
        }
    }
}

/// The lines of files (`-` = standard input), with a byte progress bar. Lines longer than
/// [`MAX_LINE_BYTES`] are skipped and refused.
pub struct FileLines<'a> {
    files: std::slice::Iter<'a, String>,
    /// The file being read.
    current: Option<OpenFile>,
    bar: indicatif::ProgressBar,
    buf: Vec<u8>,
    /// What earlier runs committed of each file (by display name); resumed from when the file
    /// still begins with exactly those bytes.
    committed: HashMap<String, IngestProgress>,
    /// Lines skipped as already committed, over all files.
    resumed_after_lines: u64,
}

impl<'a> FileLines<'a> {
    /// Reads `files` in order, each resumed after what `committed` (by display name) records
    /// of it when the file still begins with exactly those bytes; `bar` counts bytes read.
    pub fn new(
        files: &'a [String],
        committed: HashMap<String, IngestProgress>,
        bar: indicatif::ProgressBar,
    ) -> FileLines<'a> {
        FileLines {
            files: files.iter(),
            current: None,
            bar,
            buf: Vec::new(),
            committed,
            resumed_after_lines: 0,
        }
    }

    /// Lines skipped so far as committed by an earlier run, over all files.
    pub fn resumed_after_lines(&self) -> u64 {
        self.resumed_after_lines
    }

    fn open(&mut self, file: &str) -> Result<OpenFile> {
        let name: Arc<str> = Arc::from(file);
        if file == "-" {
            return Ok(OpenFile {
                name,
                reader: BufReader::new(Box::new(std::io::stdin())),
                line_no: 0,
                read: None,
            });
        }
        let mut f =
            std::fs::File::open(file).map_err(IngestError::io(format!("opening {file}")))?;
        let mut line_no = 0;
        let mut read = Prefix {
            bytes: 0,
            hasher: Sha256::new(),
        };
        if let Some(done) = self.committed.get(file) {
            match self.verified_prefix(file, done, &mut f)? {
                Some(hasher) => {
                    self.resumed_after_lines += done.lines;
                    self.bar.inc(done.bytes);
                    line_no = done.lines;
                    read = Prefix {
                        bytes: done.bytes,
                        hasher,
                    };
                }
                None => {
                    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))
                        .map_err(IngestError::io(format!("reading {file}")))?;
                }
            }
        }
        Ok(OpenFile {
            name,
            reader: BufReader::new(Box::new(f)),
            line_no,
            read: Some(read),
        })
    }

    /// Reads `done`'s prefix from `f`. When the file still begins with exactly those bytes and
    /// they end a line (or are the whole file), returns their hasher with `f` just after them;
    /// otherwise `None`, with a line saying why.
    fn verified_prefix(
        &self,
        file: &str,
        done: &IngestProgress,
        f: &mut std::fs::File,
    ) -> Result<Option<Sha256>> {
        let mut hasher = Sha256::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut prefix = Read::take(&mut *f, done.bytes);
        let mut last = None;
        let mut n = 0u64;
        loop {
            let k = prefix
                .read(&mut chunk)
                .map_err(IngestError::io(format!("reading {file}")))?;
            let Some(read) = chunk.get(..k).filter(|r| !r.is_empty()) else {
                break;
            };
            hasher.update(read);
            last = read.last().copied();
            n += k as u64;
        }
        let size = f
            .metadata()
            .map_err(IngestError::io(format!("reading {file}")))?
            .len();
        let why = if n < done.bytes {
            Some(format!(
                "it is shorter than the {} bytes committed",
                done.bytes
            ))
        } else if hex::encode(hasher.clone().finalize()) != done.prefix_sha256 {
            Some(format!(
                "its first {} bytes are not the ones committed",
                done.bytes
            ))
        } else if last != Some(b'\n') && size != done.bytes {
            Some("its last committed line has grown".to_string())
        } else {
            None
        };
        Ok(match why {
            Some(why) => {
                self.bar.suspend(|| {
                    eprintln!(
                        "ingest: {file}: changed since an earlier run committed {} line(s) ({why}); reading it from the start",
                        done.lines
                    );
                });
                None
            }
            None => {
                self.bar.suspend(|| {
                    eprintln!(
                        "ingest: {file}: resuming after line {} (committed by an earlier run; --from-start reads it all)",
                        done.lines
                    );
                });
                Some(hasher)
            }
        })
    }

    fn next_line(&mut self) -> Result<Option<Line>> {
        loop {
            let Some(current) = &mut self.current else {
                let Some(file) = self.files.next() else {
                    return Ok(None);
                };
                self.current = Some(self.open(file)?);
                continue;
            };
            self.buf.clear();
            let read = Read::take(&mut current.reader, MAX_LINE_BYTES + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(IngestError::io(format!("reading {}", current.name)))?;
            if read == 0 {
                self.current = None;
                continue;
            }
            current.line_no += 1;
            current.consumed(&self.buf);
            self.bar.inc(read as u64);
            let overlong = self.buf.len() as u64 > MAX_LINE_BYTES && !self.buf.ends_with(b"\n");
            if overlong {
                // Skip the rest of the overlong line.
                loop {
                    self.buf.clear();
                    let more = Read::take(&mut current.reader, MAX_LINE_BYTES)
                        .read_until(b'\n', &mut self.buf)
                        .map_err(IngestError::io(format!("reading {}", current.name)))?;
                    current.consumed(&self.buf);
                    self.bar.inc(more as u64);
                    if more == 0 || self.buf.ends_with(b"\n") {
                        break;
                    }
                }
            }
            let source = LineSource {
                file: current.name.clone(),
                line_no: current.line_no,
                prefix: current.read.clone(),
            };
            if overlong {
                return Ok(Some(Line::Refused {
                    source,
                    error: format!("line longer than {MAX_LINE_BYTES} bytes"),
                }));
            }
            return Ok(Some(Line::Text {
                source,
                bytes: std::mem::take(&mut self.buf),
            }));
        }
    }
}

impl Iterator for FileLines<'_> {
    type Item = Result<Line>;

    fn next(&mut self) -> Option<Result<Line>> {
        self.next_line().transpose()
    }
}

/// A file's progress key: its canonical path.
pub fn progress_key(file: &str) -> Result<String> {
    let path = std::fs::canonicalize(file).map_err(IngestError::io(format!("opening {file}")))?;
    Ok(path.to_string_lossy().into_owned())
}
