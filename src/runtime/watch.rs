//! Watching the pipelines directory for hot reload.
//!
//! Editors save in many ways — writing in place, writing a temporary file and renaming it
//! over the original, deleting and creating — and a `git checkout` touches many files at
//! once. Each of these must give one reload, and a save that changes nothing must give
//! none. So the watcher does not trust the events themselves: notify (through
//! notify-debouncer-full) only says *when* to look, and the watcher compares a fingerprint
//! of the files vigil reads (a SHA-256 of each) with the previous one. A batch is reported
//! only when that fingerprint changed, and it lists exactly the files whose content
//! changed, appeared or disappeared.
//!
//! The directory is watched recursively, never file by file: a save by rename replaces the
//! file, and a watch on the old one would be lost.
//!
//! The fingerprinting runs on a std thread fed by the debouncer; batches reach async code
//! through a tokio channel.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, DebouncedEvent, Debouncer, RecommendedCache};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// The file name endings vigil reads in a pipelines directory: pipelines, templates and
/// scripts.
const WATCHED_ENDINGS: [&str; 4] = [".yaml", ".yml", ".hbs", ".rhai"];

/// How deep the fingerprint follows directories (and symbolic links to directories, which
/// could form a loop).
const MAX_DEPTH: usize = 32;

/// Batches waiting for the consumer before the fingerprint thread waits too.
const BATCH_BUFFER: usize = 16;

/// The shortest debounce used: a zero one would make the debouncer's thread spin.
const MIN_DEBOUNCE: Duration = Duration::from_millis(10);

/// The shortest timeout and tick given to the debouncer.
const MIN_TICK: Duration = Duration::from_millis(5);

/// A burst that goes on without a pause is reported in parts after this many debounces, so
/// a file written continuously does not hold every other change back for ever.
const MAX_HOLD: u32 = 10;

/// Watches a pipelines directory (recursively) and reports each burst of changes to the
/// files vigil reads there — `*.yaml`/`*.yml`, templates `*.hbs`, scripts `*.rhai` — as
/// one [`ChangeBatch`].
///
/// Hidden files and directories are skipped as the loader skips them, which leaves out
/// editors' swap and lock files (`.p.yaml.swp`, `.#p.yaml`, `.~lock…`) and `.git`; backup
/// and temporary files (`p.yaml~`, `4913`, `*.tmp`) and anything else (a state directory
/// inside, say) do not have one of the four endings. A change is reported only when the
/// content of a file changed, so touching a file or saving it unchanged reports nothing.
///
/// Dropping the watcher stops watching; the receiver then ends.
pub struct PipelineWatcher {
    /// Kept alive for its watch; its drop stops the debouncer thread, which drops the
    /// channel into the fingerprint thread, which then ends and closes the receiver.
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    dir: PathBuf,
}

impl std::fmt::Debug for PipelineWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineWatcher")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// One burst of changes that altered what vigil reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeBatch {
    /// The files changed, created or removed (relative to the watched dir, sorted,
    /// deduplicated).
    pub paths: Vec<PathBuf>,
}

/// The pipelines directory cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The path does not name a directory.
    #[error("cannot watch {dir}: {why}")]
    NotADirectory {
        /// The path given.
        dir: PathBuf,
        /// Why, and what to do about it.
        why: &'static str,
    },
    /// The directory cannot be read.
    #[error("cannot watch {dir}: cannot read it ({source}); check its permissions")]
    Unreadable {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The operating system refused the watch.
    #[error("cannot watch {dir}: {}", notify_why(source))]
    Notify {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: notify::Error,
    },
    /// The thread that compares the directory's contents could not be started.
    #[error("cannot watch {dir}: cannot start a thread ({source}); the system is out of resources")]
    Thread {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Says why notify refused, with what to change when there is something to change.
fn notify_why(e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => "the system's limit on watched directories is \
            reached: raise it (`sysctl fs.inotify.max_user_watches=524288`) or watch a \
            smaller directory"
            .to_string(),
        // EMFILE
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(24) => format!(
            "{io}: too many inotify instances or open files; raise \
             `sysctl fs.inotify.max_user_instances` or `ulimit -n`"
        ),
        notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            format!("{io}; check the permissions of the directory and its subdirectories")
        }
        notify::ErrorKind::PathNotFound => {
            "the directory vanished while the watch was being set up".to_string()
        }
        _ => e.to_string(),
    }
}

impl PipelineWatcher {
    /// Starts watching `dir`; batches arrive on the returned receiver (tokio mpsc).
    /// `debounce`: how long the directory must be quiet before a batch is reported (at
    /// least 10 ms). A batch comes about 1.3 × `debounce` after the last change (events
    /// reach the watcher late); changes that go on without such a pause for ten times
    /// `debounce` are reported in parts.
    ///
    /// The first fingerprint is taken once the watch is in place, so every change made
    /// after this returns is reported: load the configuration after starting the watcher.
    pub fn start(
        dir: &Path,
        debounce: Duration,
    ) -> Result<(PipelineWatcher, mpsc::Receiver<ChangeBatch>), WatchError> {
        let root = match std::fs::canonicalize(dir) {
            Ok(root) => root,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WatchError::NotADirectory {
                    dir: dir.to_path_buf(),
                    why: "no such directory; create it or point vigil at the directory \
                          that holds the pipeline files",
                });
            }
            Err(source) => {
                return Err(WatchError::Unreadable {
                    dir: dir.to_path_buf(),
                    source,
                });
            }
        };
        if !root.is_dir() {
            return Err(WatchError::NotADirectory {
                dir: dir.to_path_buf(),
                why: "it is a file, not a directory; give the directory that holds the \
                      pipeline files",
            });
        }
        if let Err(source) = std::fs::read_dir(&root) {
            return Err(WatchError::Unreadable {
                dir: dir.to_path_buf(),
                source,
            });
        }
        let notify_err = |source| WatchError::Notify {
            dir: dir.to_path_buf(),
            source,
        };

        // The debouncer holds each path's events for its own, shorter timeout (it merges
        // them and pairs renames); the worker then waits until the whole directory has been
        // quiet for `debounce`, going by the times the events happened.
        let debounce = debounce.max(MIN_DEBOUNCE);
        let timeout = (debounce / 4).max(MIN_TICK);
        let tick = (timeout / 4).max(MIN_TICK);
        let (events_tx, events_rx) = std_mpsc::channel::<DebounceEventResult>();
        let mut debouncer = notify_debouncer_full::new_debouncer(timeout, Some(tick), events_tx)
            .map_err(notify_err)?;
        debouncer
            .watch(&root, RecursiveMode::Recursive)
            .map_err(notify_err)?;

        let initial = fingerprint(&root);
        let (batches_tx, batches_rx) = mpsc::channel(BATCH_BUFFER);
        let worker = Worker {
            root,
            debounce,
            lag: timeout + tick,
            current: initial,
            batches: batches_tx,
        };
        std::thread::Builder::new()
            .name("vigil-watch".to_string())
            .spawn(move || worker.run(events_rx))
            .map_err(|source| WatchError::Thread {
                dir: dir.to_path_buf(),
                source,
            })?;
        let watcher = PipelineWatcher {
            _debouncer: debouncer,
            dir: dir.to_path_buf(),
        };
        Ok((watcher, batches_rx))
    }
}

/// The content of every file vigil reads under the watched directory: relative path →
/// SHA-256, or `None` for a file that exists but cannot be read (so that losing or
/// regaining access counts as a change, and the reload reports the error).
type Fingerprint = BTreeMap<PathBuf, Option<[u8; 32]>>;

/// The fingerprint thread's state.
struct Worker {
    /// The watched directory, canonical (event paths start with it).
    root: PathBuf,
    /// How long the directory must be quiet.
    debounce: Duration,
    /// The longest the debouncer holds an event back: its timeout plus one tick.
    lag: Duration,
    /// The fingerprint last reported (or taken at start).
    current: Fingerprint,
    batches: mpsc::Sender<ChangeBatch>,
}

impl Worker {
    /// Runs until the debouncer stops (the watcher was dropped) or nobody listens.
    fn run(mut self, events: std_mpsc::Receiver<DebounceEventResult>) {
        while let Ok(first) = events.recv() {
            let Some(mut last) = self.latest_relevant(&first) else {
                continue;
            };
            // Wait until nothing we care about happened for `debounce`. An event reaches us
            // up to `lag` after it happened, so only then is the quiet known.
            let held_since = Instant::now();
            let hold_at_most = self.debounce * MAX_HOLD;
            loop {
                let due = (last + self.debounce + self.lag).min(held_since + hold_at_most);
                let Some(wait) = due.checked_duration_since(Instant::now()) else {
                    break;
                };
                match events.recv_timeout(wait) {
                    Ok(more) => {
                        if let Some(t) = self.latest_relevant(&more) {
                            last = last.max(t);
                        }
                    }
                    Err(std_mpsc::RecvTimeoutError::Timeout) => break,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            if self.batches.is_closed() {
                return;
            }
            let next = fingerprint(&self.root);
            let paths = changed(&self.current, &next);
            self.current = next;
            if paths.is_empty() {
                tracing::debug!(dir = %self.root.display(), "files touched, content unchanged");
                continue;
            }
            tracing::debug!(dir = %self.root.display(), files = paths.len(), "pipeline files changed");
            // A std thread, outside the runtime: blocking here is fine. While the consumer is
            // busy, events wait in the debouncer's channel and are then looked at together.
            if self.batches.blocking_send(ChangeBatch { paths }).is_err() {
                return;
            }
        }
    }

    /// When the latest event of the debouncer's report that may have changed a file we
    /// read happened; `None` if none may have.
    fn latest_relevant(&self, result: &DebounceEventResult) -> Option<Instant> {
        match result {
            Ok(events) => events
                .iter()
                .filter(|e| self.event_concerns_us(e))
                .map(|e| e.time)
                .max(),
            Err(errors) => {
                // Events may have been lost: look anyway.
                for e in errors {
                    tracing::warn!(dir = %self.root.display(), error = %e, "file watch error");
                }
                Some(Instant::now())
            }
        }
    }

    fn event_concerns_us(&self, event: &DebouncedEvent) -> bool {
        if event.need_rescan() {
            return true;
        }
        match event.kind {
            // Opening and reading change nothing, and the fingerprint itself opens every
            // file: counting those would make it look again and again.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return false,
            _ => {}
        }
        event.paths.iter().any(|p| self.path_concerns_us(p))
    }

    fn path_concerns_us(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            // Not under the directory as we named it (a link followed?): look, to be safe.
            return true;
        };
        if rel.components().any(|c| c.as_os_str() == ".git") {
            return false;
        }
        if is_read_by_vigil(rel) {
            return true;
        }
        // A directory made or moved in, or a symbolic link swapped (a Kubernetes ConfigMap
        // updates its files by swapping the hidden `..data` link).
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() || m.file_type().is_symlink()) {
            return true;
        }
        // A directory that held files we read, removed or moved away.
        self.current.keys().any(|k| k.starts_with(rel))
    }
}

/// Whether a file name is one vigil reads: one of the four endings, not hidden.
fn is_watched_name(name: &str) -> bool {
    !name.starts_with('.') && WATCHED_ENDINGS.iter().any(|end| name.ends_with(end))
}

/// Whether a path relative to the watched directory is one the loader reads: a watched
/// name with no hidden directory on the way.
fn is_read_by_vigil(rel: &Path) -> bool {
    let mut components = rel.components().peekable();
    while let Some(c) = components.next() {
        let Component::Normal(name) = c else {
            return false;
        };
        let name = name.to_string_lossy();
        if components.peek().is_none() {
            return is_watched_name(&name);
        }
        if name.starts_with('.') {
            return false;
        }
    }
    false
}

/// The paths whose entry differs between two fingerprints (sorted: both maps are).
fn changed(old: &Fingerprint, new: &Fingerprint) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = old
        .iter()
        .filter(|(path, hash)| new.get(*path) != Some(*hash))
        .map(|(path, _)| path.clone())
        .chain(new.keys().filter(|path| !old.contains_key(*path)).cloned())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Fingerprints every file vigil reads under `root`, the way the loader walks: hidden
/// entries skipped, links followed. Nothing here fails: what cannot be read is left out
/// (a file that vanished) or recorded as unreadable.
fn fingerprint(root: &Path) -> Fingerprint {
    let mut out = Fingerprint::new();
    if !root.is_dir() {
        tracing::warn!(
            dir = %root.display(),
            "the watched directory is gone; create it and restart vigil to watch it again"
        );
        return out;
    }
    walk(root, Path::new(""), 0, &mut out);
    out
}

fn walk(root: &Path, rel: &Path, depth: usize, out: &mut Fingerprint) {
    let dir = root.join(rel);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read a pipelines directory");
            }
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let rel_path = rel.join(&name);
        // `metadata` follows links, as the loader does.
        match std::fs::metadata(&path) {
            // Deeper than this is most likely a link loop.
            Ok(m) if m.is_dir() && depth < MAX_DEPTH => walk(root, &rel_path, depth + 1, out),
            Ok(m) if m.is_file() && is_watched_name(&name_str) => match hash_file(&path) {
                Ok(hash) => {
                    out.insert(rel_path, Some(hash));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read a pipeline file");
                    out.insert(rel_path, None);
                }
            },
            // Not ours, or gone since the listing (or a dangling link).
            _ => {}
        }
    }
}

fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use tokio::time::timeout;

    /// Small, so the tests are quick.
    const DEBOUNCE: Duration = Duration::from_millis(200);
    /// How long a batch may take on a loaded machine.
    const DEADLINE: Duration = Duration::from_secs(10);
    /// How long nothing more must arrive for "exactly one batch" (5 × the debounce).
    const QUIET: Duration = Duration::from_millis(1000);

    struct Watched {
        dir: tempfile::TempDir,
        watcher: PipelineWatcher,
        rx: mpsc::Receiver<ChangeBatch>,
    }

    impl Watched {
        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn write(&self, rel: &str, content: &str) {
            write(self.dir.path(), rel, content);
        }

        /// Writes in place (no rename, the file keeps its inode), in two writes.
        fn write_in_place(&self, rel: &str, content: &str) {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(self.path(rel))
                .unwrap();
            let (a, b) = content.split_at(content.len() / 2);
            f.write_all(a.as_bytes()).unwrap();
            f.flush().unwrap();
            f.write_all(b.as_bytes()).unwrap();
        }

        /// The next batch's paths; fails the test if none comes before the deadline.
        async fn next_batch(&mut self) -> Vec<PathBuf> {
            match timeout(DEADLINE, self.rx.recv()).await {
                Ok(Some(batch)) => batch.paths,
                Ok(None) => panic!("the watcher stopped"),
                Err(_) => panic!("no batch within {DEADLINE:?}"),
            }
        }

        /// Fails the test if a batch arrives within the quiet period.
        async fn assert_quiet(&mut self, after: &str) {
            if let Ok(got) = timeout(QUIET, self.rx.recv()).await {
                panic!("expected no batch after {after}, got {got:?}");
            }
        }
    }

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, content).unwrap();
    }

    fn paths(rels: &[&str]) -> Vec<PathBuf> {
        rels.iter().map(PathBuf::from).collect()
    }

    /// A directory holding `files`, watched once they are written.
    fn watched(files: &[(&str, &str)]) -> Watched {
        let dir = tempfile::tempdir().unwrap();
        for (rel, content) in files {
            write(dir.path(), rel, content);
        }
        let (watcher, rx) = PipelineWatcher::start(dir.path(), DEBOUNCE).unwrap();
        Watched { dir, watcher, rx }
    }

    const P1: &str = "name: p\nsources: {}\n";
    const P2: &str = "name: p\nsources: {a: {type: stdin}}\n";

    #[tokio::test]
    async fn write_in_place_gives_one_batch() {
        let mut w = watched(&[("p.yaml", P1), ("q.yaml", P1)]);
        w.write_in_place("p.yaml", P2);
        assert_eq!(w.next_batch().await, paths(&["p.yaml"]));
        w.assert_quiet("one write in place").await;
    }

    /// VS Code and atomic writers: a temporary file renamed over the original.
    #[tokio::test]
    async fn temp_file_renamed_over_gives_one_batch() {
        let mut w = watched(&[("p.yaml", P1)]);
        w.write("p.yaml.tmp", P2);
        w.write(".p.yaml.~tmp", P2);
        fs::rename(w.path(".p.yaml.~tmp"), w.path("p.yaml")).unwrap();
        fs::remove_file(w.path("p.yaml.tmp")).unwrap();
        assert_eq!(w.next_batch().await, paths(&["p.yaml"]));
        w.assert_quiet("a rename over the file").await;
    }

    /// Vim with `backupcopy=no`: probe file `4913`, swap file, the original renamed to a
    /// backup, the new content written to a new file, the backup removed.
    #[tokio::test]
    async fn vim_save_by_rename_gives_one_batch() {
        let mut w = watched(&[("p.yaml", P1)]);
        w.write(".p.yaml.swp", "swap");
        w.write("4913", "");
        fs::remove_file(w.path("4913")).unwrap();
        fs::rename(w.path("p.yaml"), w.path("p.yaml~")).unwrap();
        w.write("p.yaml", P2);
        fs::remove_file(w.path("p.yaml~")).unwrap();
        w.write(".p.yaml.swp", "swap, later");
        assert_eq!(w.next_batch().await, paths(&["p.yaml"]));
        w.assert_quiet("a vim save").await;
    }

    #[tokio::test]
    async fn delete_then_create_gives_one_batch() {
        let mut w = watched(&[("p.yaml", P1)]);
        fs::remove_file(w.path("p.yaml")).unwrap();
        w.write("p.yaml", P2);
        assert_eq!(w.next_batch().await, paths(&["p.yaml"]));
        w.assert_quiet("a delete and create").await;
    }

    #[tokio::test]
    async fn new_file_gives_one_batch() {
        let mut w = watched(&[("p.yaml", P1)]);
        w.write("new.yml", P2);
        assert_eq!(w.next_batch().await, paths(&["new.yml"]));
        w.assert_quiet("a new file").await;
    }

    #[tokio::test]
    async fn deleted_file_gives_one_batch() {
        let mut w = watched(&[("p.yaml", P1), ("q.yaml", P1)]);
        fs::remove_file(w.path("q.yaml")).unwrap();
        assert_eq!(w.next_batch().await, paths(&["q.yaml"]));
        w.assert_quiet("a deletion").await;
    }

    #[tokio::test]
    async fn renamed_file_gives_one_batch_with_both_names() {
        let mut w = watched(&[("old.yaml", P1)]);
        fs::rename(w.path("old.yaml"), w.path("new.yaml")).unwrap();
        assert_eq!(w.next_batch().await, paths(&["new.yaml", "old.yaml"]));
        w.assert_quiet("a rename").await;
    }

    /// Like a `git checkout`: several files changed, one added, one removed, in
    /// subdirectories too, and git's own files.
    #[tokio::test]
    async fn many_files_at_once_give_one_batch() {
        let mut w = watched(&[
            ("a.yaml", P1),
            ("b.yml", P1),
            ("c.yaml", P1),
            ("unchanged.yaml", P1),
            ("templates/x.text.hbs", "{{title}}"),
            ("scripts/s.rhai", "true"),
            (".git/HEAD", "ref: refs/heads/main\n"),
        ]);
        w.write(".git/HEAD", "ref: refs/heads/other\n");
        w.write(".git/index.lock", "...");
        fs::rename(w.path(".git/index.lock"), w.path(".git/index")).unwrap();
        w.write("a.yaml", P2);
        w.write("b.yml", P2);
        fs::remove_file(w.path("c.yaml")).unwrap();
        w.write("d.yaml", P2);
        w.write("unchanged.yaml", P1);
        w.write("templates/x.text.hbs", "{{title}}!");
        w.write("scripts/s.rhai", "false");
        assert_eq!(
            w.next_batch().await,
            paths(&[
                "a.yaml",
                "b.yml",
                "c.yaml",
                "d.yaml",
                "scripts/s.rhai",
                "templates/x.text.hbs"
            ])
        );
        w.assert_quiet("a checkout").await;
    }

    #[tokio::test]
    async fn template_change_gives_a_batch() {
        let mut w = watched(&[("p.yaml", P1), ("templates/x.text.hbs", "{{title}}")]);
        w.write("templates/x.text.hbs", "{{title}} on {{host}}");
        assert_eq!(w.next_batch().await, paths(&["templates/x.text.hbs"]));
        w.assert_quiet("a template change").await;
    }

    /// A directory made after the start is watched too, even when a file lands in it
    /// before its watch is in place.
    #[tokio::test]
    async fn new_directory_with_a_script_gives_one_batch() {
        let mut w = watched(&[("p.yaml", P1)]);
        w.write("scripts/deep/s.rhai", "true");
        assert_eq!(w.next_batch().await, paths(&["scripts/deep/s.rhai"]));
        w.assert_quiet("a new directory").await;
        w.write("scripts/deep/s.rhai", "false");
        assert_eq!(w.next_batch().await, paths(&["scripts/deep/s.rhai"]));
    }

    /// Removing a directory gives one event for the directory alone: its files are still
    /// reported.
    #[tokio::test]
    async fn removed_directory_reports_its_files() {
        let mut w = watched(&[
            ("p.yaml", P1),
            ("templates/a.hbs", "a"),
            ("templates/mail/b.html.hbs", "b"),
        ]);
        fs::remove_dir_all(w.path("templates")).unwrap();
        assert_eq!(
            w.next_batch().await,
            paths(&["templates/a.hbs", "templates/mail/b.html.hbs"])
        );
        w.assert_quiet("a directory removed").await;
    }

    /// A directory renamed: its files under the old name are gone, under the new one new.
    #[tokio::test]
    async fn renamed_directory_reports_old_and_new_files() {
        let mut w = watched(&[("p.yaml", P1), ("scripts/s.rhai", "true")]);
        fs::rename(w.path("scripts"), w.path("rules")).unwrap();
        assert_eq!(
            w.next_batch().await,
            paths(&["rules/s.rhai", "scripts/s.rhai"])
        );
        w.assert_quiet("a directory renamed").await;
    }

    /// Changes spread over longer than the debouncer holds each file's events, with pauses
    /// shorter than `debounce`, are still one burst: the directory was never quiet.
    #[tokio::test]
    async fn paced_burst_gives_one_batch() {
        let debounce = Duration::from_secs(1);
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", P1);
        let (_watcher, mut rx) = PipelineWatcher::start(dir.path(), debounce).unwrap();
        for rel in ["a.yaml", "b.yaml", "c.yaml"] {
            write(dir.path(), rel, P2);
            // Part of the stimulus, not a wait for a condition: a pause longer than the
            // debouncer's own hold (≈ 0.3 s here) and shorter than `debounce`.
            if let Ok(got) = timeout(Duration::from_millis(400), rx.recv()).await {
                panic!("a batch before the burst ended: {got:?}");
            }
        }
        let batch = timeout(DEADLINE, rx.recv()).await.unwrap().unwrap();
        assert_eq!(batch.paths, paths(&["a.yaml", "b.yaml", "c.yaml"]));
        assert!(timeout(3 * debounce, rx.recv()).await.is_err());
    }

    /// A file rewritten without pause does not hold reports back for ever.
    #[tokio::test]
    async fn endless_writes_are_still_reported() {
        let mut w = watched(&[("p.yaml", P1)]);
        let started = tokio::time::Instant::now();
        let mut n = 0;
        let batch = loop {
            n += 1;
            w.write_in_place("p.yaml", &format!("{P1}# {n}\n"));
            if let Ok(got) = timeout(Duration::from_millis(50), w.rx.recv()).await {
                break got.unwrap();
            }
            assert!(started.elapsed() < DEADLINE, "no batch while writing");
        };
        assert_eq!(batch.paths, paths(&["p.yaml"]));
    }

    /// Files vigil does not read give nothing; the next real change is reported alone.
    #[tokio::test]
    async fn irrelevant_files_give_no_batch() {
        let mut w = watched(&[("p.yaml", P1)]);
        w.write("notes.txt", "hello");
        w.write(".p.yaml.swp", "swap");
        w.write(".p.yaml.swx", "swap");
        w.write("p.yaml~", "backup");
        w.write("p.yaml.tmp", "temp");
        w.write(".~p.yaml", "vscode");
        w.write(".hidden/h.yaml", P2);
        w.write(".git/config", "[core]");
        w.write("var/vigil.db", "state");
        w.write("var/vigil.db-wal", "state");
        w.write("4913", "");
        fs::remove_file(w.path("4913")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("user@host.1234", w.path(".#p.yaml")).unwrap();
        w.assert_quiet("changes to files vigil does not read").await;
        w.write("p.yaml", P2);
        assert_eq!(w.next_batch().await, paths(&["p.yaml"]));
    }

    /// Saving a file unchanged, rewriting it by rename with the same content or changing
    /// its permissions gives nothing; a real change afterwards is reported.
    #[tokio::test]
    async fn unchanged_content_gives_no_batch() {
        let mut w = watched(&[("p.yaml", P1), ("t.hbs", "x")]);
        w.write_in_place("p.yaml", P1);
        w.write("t.hbs.tmp", "x");
        fs::rename(w.path("t.hbs.tmp"), w.path("t.hbs")).unwrap();
        let perms = fs::metadata(w.path("p.yaml")).unwrap().permissions();
        fs::set_permissions(w.path("p.yaml"), perms).unwrap();
        w.assert_quiet("saves that changed nothing").await;
        w.write_in_place("p.yaml", P2);
        assert_eq!(w.next_batch().await, paths(&["p.yaml"]));
    }

    /// Two saves, the second after the first was reported, give a batch each.
    #[tokio::test]
    async fn separate_saves_give_a_batch_each() {
        let mut w = watched(&[("p.yaml", P1), ("q.yaml", P1)]);
        w.write("p.yaml", P2);
        assert_eq!(w.next_batch().await, paths(&["p.yaml"]));
        w.write("q.yaml", P2);
        assert_eq!(w.next_batch().await, paths(&["q.yaml"]));
        // Back to the first content: a change from what was last reported.
        w.write("p.yaml", P1);
        assert_eq!(w.next_batch().await, paths(&["p.yaml"]));
        w.assert_quiet("three saves").await;
    }

    #[tokio::test]
    async fn dropping_the_watcher_ends_the_receiver() {
        let Watched {
            dir,
            watcher,
            mut rx,
            ..
        } = watched(&[("p.yaml", P1)]);
        drop(watcher);
        match timeout(DEADLINE, rx.recv()).await {
            Ok(None) => {}
            other => panic!("expected the receiver to end, got {other:?}"),
        }
        drop(dir);
    }

    #[test]
    fn start_errors_say_what_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("pipelines");
        let err = PipelineWatcher::start(&missing, DEBOUNCE).unwrap_err();
        assert!(matches!(err, WatchError::NotADirectory { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("cannot watch {}: ", missing.display())),
            "{msg}"
        );
        assert!(msg.contains("no such directory; create it"), "{msg}");

        write(dir.path(), "p.yaml", P1);
        let file = dir.path().join("p.yaml");
        let err = PipelineWatcher::start(&file, DEBOUNCE).unwrap_err();
        assert!(
            err.to_string().contains("is a file, not a directory"),
            "{err}"
        );
    }

    /// The fingerprint opens every file it reads, and inotify reports each open: those
    /// must not count, or every look would cause the next one.
    #[test]
    fn opening_a_file_is_not_a_change() {
        use notify::event::{CreateKind, Event};
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let (batches, _rx) = mpsc::channel(1);
        let worker = Worker {
            root: root.clone(),
            debounce: DEBOUNCE,
            lag: DEBOUNCE,
            current: Fingerprint::new(),
            batches,
        };
        let report = |kind, rel: &str| -> DebounceEventResult {
            let event = Event::new(kind).add_path(root.join(rel));
            Ok(vec![DebouncedEvent::new(event, Instant::now())])
        };
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let close_write = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let create = EventKind::Create(CreateKind::File);
        assert!(worker.latest_relevant(&report(open, "p.yaml")).is_none());
        assert!(
            worker
                .latest_relevant(&report(close_write, "p.yaml"))
                .is_some()
        );
        assert!(worker.latest_relevant(&report(create, "p.yaml")).is_some());
        assert!(
            worker
                .latest_relevant(&report(create, "notes.txt"))
                .is_none()
        );
        assert!(
            worker
                .latest_relevant(&report(create, ".git/x.yaml"))
                .is_none()
        );
    }

    #[test]
    fn which_paths_vigil_reads() {
        for yes in [
            "p.yaml",
            "p.yml",
            "p.test.yaml",
            "sub/p.yaml",
            "templates/x.text.hbs",
            "scripts/s.rhai",
        ] {
            assert!(is_read_by_vigil(Path::new(yes)), "{yes}");
        }
        for no in [
            "notes.txt",
            ".p.yaml.swp",
            ".p.yaml.swx",
            "p.yaml~",
            "4913",
            ".#p.yaml",
            "#p.yaml#",
            "p.yaml.tmp",
            ".~p.yaml",
            ".p.yaml",
            ".git/p.yaml",
            ".hidden/p.yaml",
            "var/vigil.db",
            "..data",
            "",
        ] {
            assert!(!is_read_by_vigil(Path::new(no)), "{no}");
        }
    }
}
