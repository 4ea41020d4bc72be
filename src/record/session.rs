//! Recording sessions: BIDS-style labels and file names, never overwriting a file.
//!
//! `sub-<subject>/ses-<session>/meg/sub-<subject>_ses-<session>_task-<task>_run-<NN>_meg.xdf`

use std::path::{Path, PathBuf};

/// What a recording is called. Labels are BIDS labels: letters and digits only.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RecordingLabels {
    pub subject: String,
    pub session: String,
    pub task: String,
    /// None = the next free run number.
    pub run: Option<u32>,
}

/// The recorder's public state.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RecordingState {
    pub recording: bool,
    pub path: String,
    pub bytes_written: u64,
    /// Why the last recording stopped early (disk full...); empty if it did not.
    pub error: String,
    pub started_at: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    Labels(String),
    #[error("already recording to {0}")]
    AlreadyRecording(String),
    #[error("recording directory {dir}: {why}")]
    Dir { dir: String, why: String },
    #[error("{0}")]
    Io(String),
}

/// Start and stop recordings (implemented by the recorder; used by gRPC and the CLI).
pub trait RecorderControl: Send + Sync {
    fn start(&self, labels: RecordingLabels) -> Result<RecordingState, RecordError>;
    fn stop(&self) -> RecordingState;
    fn state(&self) -> RecordingState;
}

/// At most this many characters in a label (a long one is a mistake, and paths have limits).
const MAX_LABEL: usize = 64;

fn check_label(kind: &str, v: &str) -> Result<(), RecordError> {
    if v.chars().count() > MAX_LABEL {
        return Err(RecordError::Labels(format!(
            "{kind} label is {} characters long: at most {MAX_LABEL} letters and digits",
            v.chars().count()
        )));
    }
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(RecordError::Labels(format!(
            "{kind} label '{}' is not a BIDS label: use letters and digits only (no '-', '_', '/', '..' or spaces)",
            v.escape_default()
        )));
    }
    Ok(())
}

impl RecordingLabels {
    /// Fills defaults and validates every label.
    pub fn normalised(mut self) -> Result<Self, RecordError> {
        if self.session.is_empty() {
            self.session = "01".into();
        }
        if self.task.is_empty() {
            self.task = "decoding".into();
        }
        check_label("subject", &self.subject)?;
        check_label("session", &self.session)?;
        check_label("task", &self.task)?;
        Ok(self)
    }

    fn file(&self, dir: &Path, run: u32) -> PathBuf {
        dir.join(format!("sub-{}", self.subject))
            .join(format!("ses-{}", self.session))
            .join("meg")
            .join(format!("sub-{}_ses-{}_task-{}_run-{run:02}_meg.xdf", self.subject, self.session, self.task))
    }
}

/// Checks at start-up that recordings can be written under `dir`.
pub fn check_dir(dir: &Path) -> Result<(), RecordError> {
    let bad = |why: String| RecordError::Dir { dir: dir.display().to_string(), why };
    if !dir.is_dir() {
        return Err(bad("does not exist or is not a directory; create it or pick another with --record-dir".into()));
    }
    let probe = dir.join(format!(".meg-decoder-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| bad(format!("is not writable ({e})")))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Creates the recording's file: a new one, never an existing one.
pub fn create_file(dir: &Path, labels: &RecordingLabels) -> Result<(PathBuf, std::fs::File), RecordError> {
    let runs: Box<dyn Iterator<Item = u32>> = match labels.run {
        Some(r) => Box::new(std::iter::once(r)),
        None => Box::new(1..10_000),
    };
    for run in runs {
        let path = labels.file(dir, run);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| RecordError::Io(format!("creating {}: {e}", parent.display())))?;
        }
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if labels.run.is_some() {
                    return Err(RecordError::Labels(format!(
                        "{} already exists; recordings are never overwritten: choose another run",
                        path.display()
                    )));
                }
            }
            Err(e) => return Err(RecordError::Io(format!("creating {}: {e}", path.display()))),
        }
    }
    Err(RecordError::Io("no free run number".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_validated_and_runs_never_overwrite() {
        let long = RecordingLabels { subject: "a".repeat(10_000), ..Default::default() }.normalised();
        let e = long.unwrap_err().to_string();
        assert!(e.contains("at most 64") && e.len() < 200, "{e}");
        let bad = RecordingLabels { subject: "../x".into(), ..Default::default() }.normalised();
        assert!(bad.unwrap_err().to_string().contains("letters and digits"));
        let dir = tempfile::tempdir().unwrap();
        let l = RecordingLabels { subject: "01".into(), ..Default::default() }.normalised().unwrap();
        let (a, _) = create_file(dir.path(), &l).unwrap();
        let (b, _) = create_file(dir.path(), &l).unwrap();
        assert!(a.ends_with("sub-01/ses-01/meg/sub-01_ses-01_task-decoding_run-01_meg.xdf"), "{a:?}");
        assert!(b.to_string_lossy().ends_with("run-02_meg.xdf"));
        let fixed = RecordingLabels { run: Some(1), ..l };
        assert!(create_file(dir.path(), &fixed).unwrap_err().to_string().contains("never overwritten"));
        assert!(check_dir(&dir.path().join("missing")).is_err());
    }
}
