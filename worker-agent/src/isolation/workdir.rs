//! Runs' private working directories. A run that holds a job slot works in
//! the slot's directory, which the runs of that slot use one after another:
//! checked before each run (a directory, mode 700, owned by the run's
//! account, empty) and emptied after it. On ext4, making and removing a
//! directory for every run cost about 0.3 ms of CPU (inode allocation scans
//! past recently freed inodes), more than the rest of the agent's work for
//! a short job. Whatever fails the check (a file, a link, another mode or
//! owner, content left behind) is removed and the directory made afresh, so
//! a run never sees another's files.
//!
//! Blocking file-system calls: run them off the async runtime, once per run
//! (one hand-off to the blocking pool, not one per call).

use super::user::Account;
use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Mode of a run's directory: its owner only.
const PRIVATE: u32 = 0o700;
/// Mode of the work root: others may pass through to their own directory,
/// not list it.
const PASS_THROUGH: u32 = 0o711;

/// Makes `dir` a run's private working directory: mode 700, owned by
/// `owner` (the agent's own user when `None`), empty, under `root` (mode
/// 711). A directory that is all of that already is kept as it is;
/// anything else at `dir` is removed first.
pub fn ready(root: &Path, dir: &Path, owner: Option<&Account>) -> io::Result<()> {
    match fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() && m.mode() & 0o7777 == PASS_THROUGH => {}
        _ => {
            fs::create_dir_all(root)?;
            fs::set_permissions(root, Permissions::from_mode(PASS_THROUGH))?;
        }
    }
    if is_private_and_empty(dir, owner)? {
        return Ok(());
    }
    remove(dir)?;
    fs::create_dir(dir)?;
    fs::set_permissions(dir, Permissions::from_mode(PRIVATE))?;
    if let Some(account) = owner {
        std::os::unix::fs::chown(dir, Some(account.uid), Some(account.gid))?;
    }
    Ok(())
}

/// Removes everything inside `dir` and keeps `dir`. Links are removed, never
/// followed.
pub fn empty(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        remove(&entry?.path())?;
    }
    Ok(())
}

/// Removes whatever is at `path` (nothing there is not an error).
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

/// Whether `dir` is a directory (not a link to one) with mode 700, owned by
/// `owner`'s uid and gid (the agent's uid when `None`), and empty.
fn is_private_and_empty(dir: &Path, owner: Option<&Account>) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let owned = match owner {
        Some(account) => meta.uid() == account.uid && meta.gid() == account.gid,
        None => meta.uid() == nix::unistd::geteuid().as_raw(),
    };
    if !meta.is_dir() || meta.mode() & 0o7777 != PRIVATE || !owned {
        return Ok(false);
    }
    Ok(fs::read_dir(dir)?.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Root(std::path::PathBuf);

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn root() -> Root {
        Root(std::env::temp_dir().join(format!("workdir-test-{}", uuid::Uuid::new_v4().simple())))
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).map(|m| m.mode() & 0o7777).unwrap_or(0)
    }

    #[test]
    fn a_new_directory_is_private_under_a_pass_through_root() {
        let root = root();
        let dir = root.0.join("slot-0");
        ready(&root.0, &dir, None).unwrap();
        assert_eq!((mode(&root.0), mode(&dir)), (0o711, 0o700));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn an_emptied_directory_is_kept_and_what_a_run_left_is_gone() {
        let root = root();
        let dir = root.0.join("slot-0");
        ready(&root.0, &dir, None).unwrap();
        let outside = root.0.join("outside");
        fs::write(&outside, b"not the run's").unwrap();
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::write(dir.join("a/b/file"), b"x").unwrap();
        fs::write(dir.join(".hidden"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        std::os::unix::fs::symlink(&root.0, dir.join("dir-link")).unwrap();
        let inode = fs::metadata(&dir).unwrap().ino();
        empty(&dir).unwrap();
        ready(&root.0, &dir, None).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(fs::metadata(&dir).unwrap().ino(), inode, "the same directory");
        assert_eq!(
            fs::read(&outside).unwrap(),
            b"not the run's",
            "links not followed"
        );
    }

    /// Leaves at `dir` what a run (or anyone) may have made of it.
    fn spoil(what: &str, dir: &Path, other: &Path) {
        match what {
            "content" => fs::write(dir.join("left"), b"x").unwrap(),
            "mode" => fs::set_permissions(dir, Permissions::from_mode(0o755)).unwrap(),
            "file" => {
                fs::remove_dir_all(dir).unwrap();
                fs::write(dir, b"x").unwrap();
            }
            _ => {
                fs::remove_dir_all(dir).unwrap();
                fs::create_dir_all(other).unwrap();
                std::os::unix::fs::symlink(other, dir).unwrap();
            }
        }
    }

    #[test]
    fn anything_but_a_private_empty_directory_is_replaced() {
        let root = root();
        let dir = root.0.join("slot-0");
        let other = root.0.join("other");
        for what in ["content", "mode", "file", "link"] {
            ready(&root.0, &dir, None).unwrap();
            spoil(what, &dir, &other);
            ready(&root.0, &dir, None).unwrap();
            let meta = fs::symlink_metadata(&dir).unwrap();
            assert!(meta.is_dir(), "{what}");
            assert_eq!(mode(&dir), 0o700, "{what}");
            assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "{what}");
        }
        assert!(other.is_dir(), "a link's target is left alone");
    }
}
