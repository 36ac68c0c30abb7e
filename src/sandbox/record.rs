//! The request log: an in-memory ring plus an optional NDJSON file written off the hot path.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Records kept in memory; older ones are dropped so a long benchmark cannot exhaust memory
/// (the `--record` file keeps everything).
pub const MAX_IN_MEMORY: usize = 100_000;

/// One request the sandbox received, as kept in memory, served by `GET /_sandbox/requests`
/// and written as one NDJSON line by `--record`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Reception time, RFC 3339 in UTC with milliseconds.
    pub at: String,
    /// HTTP method.
    pub method: String,
    /// Request path (without the query string).
    pub path: String,
    /// The `{phone_number_id}` path segment, for Graph routes.
    pub phone_number_id: Option<String>,
    /// The message's `to`, when the body has one.
    pub to: Option<String>,
    /// The message's flow_token (interactive or template), when the body has one.
    pub flow_token: Option<String>,
    /// HTTP status answered; `null` for a `hang` or `reset` fault (nothing was answered).
    pub status: Option<u16>,
    /// The wamid of an accepted message.
    pub wamid: Option<String>,
    /// The Graph error code answered, if any.
    pub error_code: Option<u32>,
    /// The JSON body, or the raw body as a string when it is not JSON; `null` when empty.
    pub body: Value,
    /// What the probe returned for this request, if a probe is installed.
    pub probe: Option<Value>,
    /// `"http503"`, `"hang"` or `"reset"` when a failure rule replaced the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

enum WriterMsg {
    Record(Box<RecordedRequest>),
    Close,
}

/// Shared log: short mutex-protected push for memory, channel send for the file.
pub(crate) struct Recorder {
    memory: Mutex<VecDeque<RecordedRequest>>,
    file: Option<mpsc::UnboundedSender<WriterMsg>>,
}

/// The dedicated writer; join it after [`Recorder::close`] to get the file flushed.
pub(crate) type WriterTask = JoinHandle<std::io::Result<()>>;

impl Recorder {
    /// A recorder; with `path`, appends NDJSON to it from a dedicated blocking task.
    pub(crate) fn new(path: Option<&Path>) -> anyhow::Result<(Self, Option<WriterTask>)> {
        let Some(path) = path else {
            return Ok((Self::in_memory(), None));
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open record file {}", path.display()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::task::spawn_blocking(move || write_loop(rx, BufWriter::new(file)));
        Ok((
            Self {
                memory: Mutex::new(VecDeque::new()),
                file: Some(tx),
            },
            Some(task),
        ))
    }

    fn in_memory() -> Self {
        Self {
            memory: Mutex::new(VecDeque::new()),
            file: None,
        }
    }

    /// Appends a record to memory and, if recording to a file, queues it for the writer.
    pub(crate) fn push(&self, rec: RecordedRequest) {
        if let Some(tx) = &self.file {
            // A closed channel means the writer already stopped (shutdown); nothing to do.
            let _ = tx.send(WriterMsg::Record(Box::new(rec.clone())));
        }
        let mut mem = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        if mem.len() == MAX_IN_MEMORY {
            mem.pop_front();
        }
        mem.push_back(rec);
    }

    /// A copy of the in-memory log, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<RecordedRequest> {
        let mem = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        mem.iter().cloned().collect()
    }

    /// Tells the writer to flush and stop once the records queued so far are written.
    pub(crate) fn close(&self) {
        if let Some(tx) = &self.file {
            let _ = tx.send(WriterMsg::Close);
        }
    }
}

fn write_loop(
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    mut out: BufWriter<File>,
) -> std::io::Result<()> {
    let mut first_error: Option<std::io::Error> = None;
    let mut write = |out: &mut BufWriter<File>, rec: &RecordedRequest| {
        let res = serde_json::to_writer(&mut *out, rec)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        if let Err(e) = res {
            if first_error.is_none() {
                tracing::warn!(error = %e, "sandbox: cannot write the record file");
                first_error = Some(e);
            }
        }
    };
    'outer: while let Some(msg) = rx.blocking_recv() {
        let mut next = Some(msg);
        // Drain whatever is queued, then flush while the channel is momentarily empty, so the
        // file is current within milliseconds without a syscall per record under load.
        while let Some(msg) = next {
            match msg {
                WriterMsg::Record(rec) => write(&mut out, &rec),
                WriterMsg::Close => break 'outer,
            }
            next = rx.try_recv().ok();
        }
        out.flush()?;
    }
    out.flush()?;
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
