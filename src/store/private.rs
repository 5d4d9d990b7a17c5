//! What vigil keeps under `state_dir` (raw events, the outbox, checkpoints) is its user's
//! only: directories mode 0700, files mode 0600. Created so, and tightened (with a log
//! line saying what changed) when they were made looser before — a directory only when
//! it is vigil's own.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// The mode of the directories vigil makes under `state_dir` (and of `state_dir`).
pub const DIR_MODE: u32 = 0o700;
/// The mode of the files vigil makes under `state_dir`.
pub const FILE_MODE: u32 = 0o600;

/// Makes `dir` (and the parents it lacks) with mode 0700. An existing `dir` that group
/// or others may use is tightened to 0700 (logged) when it is vigil's own — empty, or
/// holding vigil's database — and otherwise left as it is with a warning: `state_dir`
/// may name a directory that other things use (`/var/lib`, a project directory), whose
/// mode is not vigil's to change.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            return Ok(());
        }
        let own = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()
            .map(|names| names.is_empty() || names.iter().any(|n| n == "vigil.db"))?;
        if mode & 0o1000 != 0 || !own {
            tracing::warn!(
                path = %dir.display(),
                mode = format!("{mode:04o}"),
                "a directory of vigil's state is open to other users and holds other things: left as it is; give state_dir a directory of its own"
            );
            return Ok(());
        }
        tighten(dir, mode, DIR_MODE)?;
    }
    Ok(())
}

/// Sets `path`'s mode from `from` to `to`, and says so.
#[cfg(unix)]
fn tighten(path: &Path, from: u32, to: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(to))?;
    tracing::warn!(
        path = %path.display(),
        from = format!("{from:04o}"),
        to = format!("{to:04o}"),
        "a part of vigil's state was open to other users: its mode is now {to:04o}"
    );
    Ok(())
}

/// Tightens the existing file `path` to mode 0600 when group or others may use it
/// (logged); nothing when there is no such file.
pub fn private_file(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mode = meta.permissions().mode() & 0o7777;
        if !meta.is_file() || mode & 0o077 == 0 {
            return Ok(());
        }
        tighten(path, mode, FILE_MODE)?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Opens `path` to append to it, made with mode 0600 when missing (an existing file is
/// tightened, see [`private_file`]).
pub fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    let file = options.open(path)?;
    private_file(path)?;
    Ok(file)
}

/// Makes the file `path` with mode 0600 if it is missing; an existing one is not opened
/// (closing a file this process opened drops the SQLite locks it holds on it), only
/// tightened (see [`private_file`]).
pub fn touch(path: &Path) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.create_new(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => private_file(path),
        Err(e) => Err(e),
    }
}

/// Writes `text` to the file `path` (mode 0600) through a temporary file beside it, so a
/// reader sees the old text or the new.
pub fn write_replace(path: &Path, text: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("part");
    let mut options = OpenOptions::new();
    options.create(true).write(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    let mut file = options.open(&tmp)?;
    private_file(&tmp)?;
    file.write_all(text)?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn new_directories_and_files_are_private_and_old_ones_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/state");
        private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        let log = state.join("x.jsonl");
        open_append(&log).unwrap();
        assert_eq!(mode(&log), 0o600);

        // A directory that is vigil's own (it holds the database) is tightened; one that
        // holds other things is not vigil's to change.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o755, "x.jsonl is not vigil's database");
        std::fs::write(state.join("vigil.db"), "").unwrap();
        private_dir(&state).unwrap();
        open_append(&log).unwrap();
        assert_eq!((mode(&state), mode(&log)), (0o700, 0o600));
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o775)).unwrap();
        private_dir(&empty).unwrap();
        assert_eq!(mode(&empty), 0o700);

        let db = state.join("db");
        std::fs::write(&db, "kept").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o664)).unwrap();
        touch(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(std::fs::read_to_string(&db).unwrap(), "kept");

        let clock = state.join("clock");
        write_replace(&clock, b"t").unwrap();
        assert_eq!(mode(&clock), 0o600);
    }

    #[test]
    fn a_shared_directory_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        private_dir(dir.path()).unwrap();
        assert_eq!(mode(dir.path()), 0o1777);
    }
}
