//! Outputs that are either all there or not touched: a folder of files written as a set
//! ([`OutputSet`]) and single files ([`AtomicFile`]), both checked before the run and written
//! through temporaries that a signal handler can remove ([`remove_temporaries`]).
//!
//! An output set is written into a sibling folder `.<name>.infodiff-tmp-<pid>` and swapped with
//! the destination in one `renameat2(RENAME_EXCHANGE)` (Linux; elsewhere two renames), so a
//! reader sees the old three files or the new three, never a mix. A destination folder that
//! holds anything else is not swapped away: there each file is renamed into place on its own,
//! after all three are written. Temporaries left by a killed process (SIGKILL cannot be
//! caught) are removed by the next run writing to the same place.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::error::{Error, Result};

/// The files of a measurement, in the order they are written.
pub const OUTPUT_FILES: [&str; 3] = ["curves.csv", "summary.json", "entropy.svg"];

const TMP_TAG: &str = "infodiff-tmp-";

// ---- temporaries a signal handler removes ------------------------------------------------

const SLOTS: usize = 16;
static TEMPS: [AtomicPtr<libc::c_char>; SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];

/// Registers `path` for [`remove_temporaries`]; returns its slot (None when all are taken: the
/// path is then only removed by the normal paths and by the next run).
fn register(path: &Path) -> Option<usize> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).ok()?.into_raw();
    for (i, slot) in TEMPS.iter().enumerate() {
        if slot
            .compare_exchange(std::ptr::null_mut(), c, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Some(i);
        }
    }
    // SAFETY: `c` came from `into_raw` above and was not stored.
    drop(unsafe { CString::from_raw(c) });
    None
}

fn unregister(slot: Option<usize>) {
    if let Some(i) = slot {
        let p = TEMPS[i].swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: every stored pointer came from `CString::into_raw` in `register`.
            drop(unsafe { CString::from_raw(p) });
        }
    }
}

/// Removes every registered temporary (files first, then folders). Async-signal-safe: only
/// atomic loads, `unlink` and `rmdir`; meant for a SIGINT/SIGTERM handler, which then
/// re-raises the signal.
pub fn remove_temporaries() {
    for slot in &TEMPS {
        let p = slot.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: p is a NUL-terminated string that is never freed while registered.
            unsafe { libc::unlink(p) };
        }
    }
    for slot in &TEMPS {
        let p = slot.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: as above.
            unsafe { libc::rmdir(p) };
        }
    }
}

/// Paths registered for removal on a signal until dropped.
struct Registered(Vec<Option<usize>>);

impl Registered {
    fn new(paths: &[PathBuf]) -> Registered {
        Registered(paths.iter().map(|p| register(p)).collect())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        for s in self.0.drain(..) {
            unregister(s);
        }
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for the process.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH))
}

/// Removes `<dir>/.<stem>.infodiff-tmp-<pid>` entries whose process is gone (left by a
/// SIGKILL): folders of output files, or single files.
fn remove_stale(dir: &Path, stem: &str) {
    let prefix = format!(".{stem}.{TMP_TAG}");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() as i32 || pid_alive(pid) {
            continue;
        }
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => {
                for f in OUTPUT_FILES {
                    let _ = std::fs::remove_file(p.join(f));
                }
                let _ = std::fs::remove_dir(&p);
            }
            Ok(t) if t.is_file() => {
                let _ = std::fs::remove_file(&p);
            }
            _ => {}
        }
    }
}

fn file_name_of(path: &Path, option: &str) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::config(
                option,
                "a path ending in a UTF-8 file or folder name",
                path.display(),
            )
        })
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Swaps two paths atomically where the system can (Linux `renameat2`); false where it cannot.
pub(crate) fn exchange(a: &Path, b: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let (Ok(ca), Ok(cb)) = (
            CString::new(a.as_os_str().as_bytes()),
            CString::new(b.as_os_str().as_bytes()),
        ) else {
            return false;
        };
        // SAFETY: two valid NUL-terminated paths; RENAME_EXCHANGE swaps them or fails.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                ca.as_ptr(),
                libc::AT_FDCWD,
                cb.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        r == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (a, b);
        false
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The destination is absent or holds only infodiff's outputs: swap the folders.
    Swap,
    /// The destination holds other files too: rename each output into place.
    PerFile,
}

/// A destination folder for the three outputs, checked (and its temporary folder created)
/// before the run; [`OutputSet::commit`] writes the set, dropping it uncommitted removes the
/// temporary.
pub struct OutputSet {
    dest: PathBuf,
    tmp: PathBuf,
    mode: Mode,
    done: bool,
    _reg: Registered,
}

impl OutputSet {
    /// Checks `dest` (`--out`): a folder or a path to create, in a writable place. Creates the
    /// temporary folder now, so an unwritable destination fails before any work.
    pub fn prepare(dest: &Path) -> Result<OutputSet> {
        let dest = match std::fs::canonicalize(dest) {
            Ok(p) => p, // an existing folder, or a symlink to one: write where it points
            Err(_) => dest.to_path_buf(),
        };
        let name = file_name_of(&dest, "--out")?;
        let parent = parent_of(&dest);
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let mode = match std::fs::symlink_metadata(&dest) {
            Err(_) => Mode::Swap,
            Ok(m) if m.is_dir() => {
                let entries = std::fs::read_dir(&dest).map_err(|e| Error::io(&dest, e))?;
                let only_ours = entries.flatten().all(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| OUTPUT_FILES.contains(&n))
                        && e.file_type().is_ok_and(|t| t.is_file())
                });
                if only_ours { Mode::Swap } else { Mode::PerFile }
            }
            Ok(_) => {
                return Err(Error::config(
                    "--out",
                    "a folder, or a path where one can be created",
                    format!("{} (not a folder)", dest.display()),
                ));
            }
        };
        let (tmp_parent, stem) = match mode {
            Mode::Swap => (parent, name),
            Mode::PerFile => (dest.clone(), "out".to_string()),
        };
        remove_stale(&tmp_parent, &stem);
        let tmp = tmp_parent.join(format!(".{stem}.{TMP_TAG}{}", std::process::id()));
        let mut paths: Vec<PathBuf> = OUTPUT_FILES.iter().map(|f| tmp.join(f)).collect();
        paths.push(tmp.clone());
        let reg = Registered::new(&paths);
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(OutputSet {
            dest,
            tmp,
            mode,
            done: false,
            _reg: reg,
        })
    }

    /// The destination folder.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Writes `files` (name, bytes; names from [`OUTPUT_FILES`]) and puts them in place as a set.
    pub fn commit(mut self, files: &[(&str, &[u8])]) -> Result<()> {
        for (name, bytes) in files {
            write_synced(&self.tmp.join(name), bytes)?;
        }
        sync_dir(&self.tmp);
        match self.mode {
            Mode::Swap if self.dest.exists() => {
                if exchange(&self.tmp, &self.dest) {
                    // self.tmp now holds the old set; Drop removes it
                } else {
                    let old = parent_of(&self.dest).join(format!(
                        ".{}.{TMP_TAG}old-{}",
                        file_name_of(&self.dest, "--out")?,
                        std::process::id()
                    ));
                    std::fs::rename(&self.dest, &old).map_err(|e| Error::io(&self.dest, e))?;
                    if let Err(e) = std::fs::rename(&self.tmp, &self.dest) {
                        let _ = std::fs::rename(&old, &self.dest); // the old set back
                        return Err(Error::io(&self.dest, e));
                    }
                    remove_set(&old);
                }
            }
            Mode::Swap => {
                std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
            }
            Mode::PerFile => {
                for (name, _) in files {
                    std::fs::rename(self.tmp.join(name), self.dest.join(name))
                        .map_err(|e| Error::io(self.dest.join(name), e))?;
                }
            }
        }
        sync_dir(&parent_of(&self.dest));
        self.done = true;
        remove_set(&self.tmp); // the old set after a swap; nothing (or an empty folder) otherwise
        Ok(())
    }
}

fn remove_set(dir: &Path) {
    for f in OUTPUT_FILES {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for OutputSet {
    fn drop(&mut self) {
        if !self.done {
            remove_set(&self.tmp);
        }
    }
}

/// One output file (`denoise --output`), checked before the run: a regular file or a new path
/// in a writable folder (a symlink, device, FIFO or folder there is refused, not replaced).
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    done: bool,
    _reg: Registered,
}

impl AtomicFile {
    /// Checks `dest` (named `option` in errors) and creates its temporary now.
    pub fn prepare(dest: &Path, option: &str) -> Result<AtomicFile> {
        let name = file_name_of(dest, option)?;
        match std::fs::symlink_metadata(dest) {
            Ok(m) if !m.file_type().is_file() => {
                let what = if m.file_type().is_symlink() {
                    "a symbolic link"
                } else if m.is_dir() {
                    "a folder"
                } else {
                    "a device, FIFO or socket"
                };
                return Err(Error::config(
                    option,
                    "a regular file or a new path (it is replaced)",
                    format!("{} ({what})", dest.display()),
                ));
            }
            _ => {}
        }
        let parent = parent_of(dest);
        remove_stale(&parent, &name);
        let tmp = parent.join(format!(".{name}.{TMP_TAG}{}", std::process::id()));
        let reg = Registered::new(std::slice::from_ref(&tmp));
        std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            tmp,
            done: false,
            _reg: reg,
        })
    }

    /// Writes `bytes` and renames the file into place.
    pub fn commit(mut self, bytes: &[u8]) -> Result<()> {
        write_synced(&self.tmp, bytes)?;
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
