//! The API-key change stamp of a SQLite database: a file beside it, `<database>.keys-changed`,
//! to which every process appends one byte after it commits a change to API keys (a new key,
//! a revocation; not a use). Its size only grows, so `stat` tells a reader, in about a
//! microsecond and without a query, whether any process (the CLI included) changed keys since it
//! last looked. The authenticator caches keys only while the stamp is unchanged (see
//! `wagate_auth`), which is how a key revoked from the CLI is refused by the very next request.
//!
//! A process killed between its commit and its append leaves a change unstamped; the
//! authenticator's cache entries also expire after a few seconds, which bounds that case.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::ApiKeysVersion;

#[derive(Debug)]
pub(crate) struct KeyStamp {
    path: PathBuf,
    /// The stamp, open for appending: `fstat` on it is cheaper than a `stat` of its path.
    /// (Deleting the file while a gateway runs hides later changes from that gateway until its
    /// cache entries expire; nothing deletes it.)
    file: Option<File>,
}

impl KeyStamp {
    /// The stamp of the database file `db` (created if missing); `None` for an in-memory
    /// database.
    pub(crate) fn beside(db: &Path) -> Option<Self> {
        let name = db.file_name()?.to_str()?;
        if name.is_empty() || name.starts_with(':') {
            return None;
        }
        let path = db.with_file_name(format!("{name}.keys-changed"));
        let file = OpenOptions::new().create(true).append(true).open(&path);
        if let Err(e) = &file {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the API key change stamp; keys are looked up on every request");
        }
        Some(Self { path, file: file.ok() })
    }

    /// What the stamp looks like now; `None` when it cannot be read (then nothing is cached).
    pub(crate) fn version(&self) -> Option<ApiKeysVersion> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = self.file.as_ref()?.metadata().ok()?;
        Some(ApiKeysVersion::new(meta.ino(), meta.len()))
    }

    /// Records that keys changed (after the change committed). A failure is logged: readers
    /// then notice the change only when their cache entries expire.
    pub(crate) fn bump(&self) {
        let appended = match &self.file {
            Some(file) => (&*file).write_all(b"."),
            None => OpenOptions::new().create(true).append(true).open(&self.path).and_then(|mut f| f.write_all(b".")),
        };
        if let Err(e) = appended {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot stamp an API key change; running gateways see it within seconds");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bump_changes_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let stamp = KeyStamp::beside(&dir.path().join("wagate.db")).unwrap();
        assert!(stamp.path.ends_with("wagate.db.keys-changed"));
        let other = KeyStamp::beside(&dir.path().join("wagate.db")).unwrap();
        let mut seen = vec![stamp.version().unwrap()];
        for i in 0..6 {
            // Either process's change shows in both.
            if i % 2 == 0 { stamp.bump() } else { other.bump() }
            let now = stamp.version().unwrap();
            assert_eq!(other.version().unwrap(), now);
            assert!(!seen.contains(&now), "{now:?} seen before");
            seen.push(now);
        }
    }

    #[test]
    fn in_memory_databases_have_no_stamp() {
        assert!(KeyStamp::beside(Path::new(":memory:")).is_none());
        assert!(KeyStamp::beside(Path::new("")).is_none());
    }
}
