//! The writer's write-ahead log, written in one call per commit.
//!
//! SQLite appends a commit to the log one frame at a time, and each frame
//! in two `pwrite`s: its 24-byte header, then its page. A commit of a
//! group of events is ~70 frames, ~140 system calls, each of which walks
//! the file system's write path for the (unaligned) pages it touches. This
//! module owns a VFS, `sluice-log`, that wraps the platform's default one:
//! the writer connection opens the database through it, and its log file
//! gathers contiguous writes in memory and writes them in one call when
//! the commit frame is complete (or before anything else touches the
//! file). Every other file, and every other connection, is the default
//! VFS's own, untouched.
//!
//! Nothing is published earlier than before: SQLite makes new frames
//! visible to readers (the WAL index header) only after the write of the
//! commit frame returned, and that write returns only once the whole
//! commit is in the file, with the error if writing it failed. A process
//! that dies with frames still gathered had not written its commit frame:
//! as after a crash in the middle of SQLite's own writes, the transaction
//! never happened. This module must never hold a commit frame past the
//! call that wrote it, nor reorder writes.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The VFS's registered name.
pub const NAME: &str = "sluice-log";
const NAME_C: &CStr = c"sluice-log";

/// Bytes gathered before they are written anyway (a commit larger than
/// this is written in several calls, still in order).
const MAX_GATHERED: usize = 4 << 20;
/// Largest write passed on at once: the unix VFS writes at most 128 KiB
/// less one byte per call, and takes a shorter write for a full disk.
const MAX_WRITE: usize = 124 << 10;
/// A log frame's header: page number, then the database size in pages
/// after a commit (non-zero only in a commit frame).
const FRAME_HEADER: usize = 24;

/// The default VFS this one wraps, kept once this one is registered.
struct Registered {
    inner: *mut ffi::sqlite3_vfs,
}

// The pointers are to VFS objects that live as long as the process and
// that SQLite lets any thread use.
unsafe impl Send for Registered {}
unsafe impl Sync for Registered {}

static REGISTERED: OnceLock<Result<Registered, String>> = OnceLock::new();

/// Registers the VFS (once per process; not as the default) and returns
/// its name, for `Connection::open_with_flags_and_vfs`.
pub fn register() -> Result<&'static str, String> {
    REGISTERED.get_or_init(|| unsafe { register_once() }).as_ref().map(|_| NAME).map_err(Clone::clone)
}

unsafe fn register_once() -> Result<Registered, String> {
    // SAFETY: `sqlite3_vfs_find` initializes SQLite if needed; the default
    // VFS it returns lives as long as the process.
    let inner = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
    if inner.is_null() {
        return Err("SQLite has no default VFS".into());
    }
    // The wrapper is the default VFS with another name, room for a log
    // file's state before the default VFS's own file, and its own `xOpen`.
    // The other methods are the default's: they read only fields copied
    // here (`pAppData`, `mxPathname`).
    let mut vfs: ffi::sqlite3_vfs = unsafe { std::ptr::read(inner) };
    let inner_size = usize::try_from(unsafe { (*inner).szOsFile }).map_err(|e| e.to_string())?;
    vfs.szOsFile = c_int::try_from(inner_offset() + inner_size).map_err(|e| e.to_string())?;
    vfs.zName = NAME_C.as_ptr();
    vfs.pNext = std::ptr::null_mut();
    vfs.xOpen = Some(open);
    let vfs = Box::leak(Box::new(vfs));
    // SAFETY: `vfs` is leaked, so it outlives every connection.
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if rc != ffi::SQLITE_OK {
        return Err(format!("registering the {NAME} VFS failed with code {rc}"));
    }
    Ok(Registered { inner })
}

/// A log file opened through the wrapper: the default VFS's file after
/// this state, in the memory SQLite gives `xOpen`.
#[repr(C)]
struct LogFile {
    /// Must come first: SQLite sees a `sqlite3_file` with these methods.
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Bytes written and not yet passed on, from file offset `start`.
    gathered: Vec<u8>,
    start: i64,
    /// The last frame header gathered marked a commit: its page completes it.
    commit_header: bool,
}

/// Where the default VFS's file starts, after a [`LogFile`].
const fn inner_offset() -> usize {
    let align = 16;
    std::mem::size_of::<LogFile>().div_ceil(align) * align
}

fn registered_inner() -> *mut ffi::sqlite3_vfs {
    match REGISTERED.get() {
        Some(Ok(r)) => r.inner,
        _ => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let inner_vfs = registered_inner();
    let Some(inner_open) = (unsafe { inner_vfs.as_ref() }).and_then(|v| v.xOpen) else {
        return ffi::SQLITE_ERROR;
    };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // SAFETY: `file` has room for the default VFS's file (`szOsFile` is
        // larger): it is opened there as it is, and never sees this module.
        return unsafe { inner_open(inner_vfs, name, file, flags, out_flags) };
    }
    // SAFETY: SQLite gives `szOsFile` bytes, aligned for any file object.
    let inner = unsafe { file.cast::<u8>().add(inner_offset()).cast::<ffi::sqlite3_file>() };
    let rc = unsafe { inner_open(inner_vfs, name, inner, flags, out_flags) };
    if rc != ffi::SQLITE_OK {
        // SQLite calls `xClose` after a failed open only if `pMethods` is set.
        unsafe { (*file).pMethods = std::ptr::null() };
        return rc;
    }
    let state = LogFile { base: ffi::sqlite3_file { pMethods: &LOG_METHODS }, inner, gathered: Vec::new(), start: 0, commit_header: false };
    // SAFETY: the memory is ours to initialize; `close` drops it.
    unsafe { std::ptr::write(file.cast::<LogFile>(), state) };
    ffi::SQLITE_OK
}

/// Version 1: no shared memory or memory mapping, which SQLite asks of the
/// database file only, never of its log.
static LOG_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

impl LogFile {
    /// # Safety
    /// `file` must have been opened by [`open`] as a log file.
    unsafe fn of<'a>(file: *mut ffi::sqlite3_file) -> &'a mut LogFile {
        unsafe { &mut *file.cast::<LogFile>() }
    }

    fn methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: the default VFS set its methods when it opened the file.
        unsafe { &*(*self.inner).pMethods }
    }

    /// Passes what is gathered on, in one write. On failure it is dropped:
    /// it belonged to the transaction the error now fails.
    fn flush(&mut self) -> c_int {
        if self.gathered.is_empty() {
            return ffi::SQLITE_OK;
        }
        let rc = self.write_through(&self.gathered, self.start);
        self.gathered.clear();
        self.commit_header = false;
        rc
    }

    /// Writes `data` at `offset` on the default VFS's file, in pieces it
    /// takes whole.
    fn write_through(&self, data: &[u8], offset: i64) -> c_int {
        let Some(write) = self.methods().xWrite else { return ffi::SQLITE_IOERR_WRITE };
        let mut offset = offset;
        for piece in data.chunks(MAX_WRITE) {
            // SAFETY: the piece is live for the call; the file is open.
            let rc = unsafe { write(self.inner, piece.as_ptr().cast(), piece.len() as c_int, offset) };
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            offset += piece.len() as i64;
        }
        ffi::SQLITE_OK
    }

    fn write(&mut self, data: &[u8], offset: i64) -> c_int {
        let end = self.start + self.gathered.len() as i64;
        if !self.gathered.is_empty() && (offset != end || self.gathered.len() + data.len() > MAX_GATHERED) {
            let rc = self.flush();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if data.len() > MAX_GATHERED {
            return self.write_through(data, offset);
        }
        if data.len() == FRAME_HEADER {
            self.commit_header = data[4..8] != [0; 4];
            if self.commit_header && self.gathered.is_empty() {
                // A commit frame's header with nothing before it to join:
                // the frame of a one-page commit, whose page follows, or a
                // header whose checksum SQLite rewrites after the commit
                // (a transaction that overwrote its own frames), which no
                // write may follow before SQLite publishes the commit.
                return self.write_through(data, offset);
            }
        }
        if self.gathered.is_empty() {
            self.start = offset;
        }
        self.gathered.extend_from_slice(data);
        if data.len() != FRAME_HEADER && self.commit_header {
            // The commit frame is complete: SQLite publishes it as soon as
            // this call returns.
            return self.flush();
        }
        ffi::SQLITE_OK
    }
}

/// Flushes, then runs `f` on the default VFS's file.
fn flushed(file: *mut ffi::sqlite3_file, f: impl FnOnce(&ffi::sqlite3_io_methods, *mut ffi::sqlite3_file) -> c_int) -> c_int {
    // SAFETY: SQLite calls these methods only on files `open` set them on.
    let log = unsafe { LogFile::of(file) };
    let rc = log.flush();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    f(log.methods(), log.inner)
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let flushed = flushed(file, |_, _| ffi::SQLITE_OK);
    // SAFETY: as in `flushed`; the state is dropped once, here.
    let log = unsafe { LogFile::of(file) };
    let closed = match log.methods().xClose {
        Some(close) => unsafe { close(log.inner) },
        None => ffi::SQLITE_OK,
    };
    unsafe { std::ptr::drop_in_place(file.cast::<LogFile>()) };
    if flushed != ffi::SQLITE_OK { flushed } else { closed }
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    let Ok(len) = usize::try_from(amount) else { return ffi::SQLITE_IOERR_WRITE };
    // SAFETY: SQLite passes `amount` readable bytes.
    let data = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    unsafe { LogFile::of(file) }.write(data, offset)
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, data: *mut c_void, amount: c_int, offset: i64) -> c_int {
    flushed(file, |m, inner| m.xRead.map_or(ffi::SQLITE_IOERR_READ, |f| unsafe { f(inner, data, amount, offset) }))
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushed(file, |m, inner| m.xTruncate.map_or(ffi::SQLITE_IOERR_TRUNCATE, |f| unsafe { f(inner, size) }))
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flushed(file, |m, inner| m.xSync.map_or(ffi::SQLITE_IOERR_FSYNC, |f| unsafe { f(inner, flags) }))
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushed(file, |m, inner| m.xFileSize.map_or(ffi::SQLITE_IOERR_FSTAT, |f| unsafe { f(inner, size) }))
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    flushed(file, |m, inner| m.xLock.map_or(ffi::SQLITE_IOERR_LOCK, |f| unsafe { f(inner, level) }))
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    flushed(file, |m, inner| m.xUnlock.map_or(ffi::SQLITE_IOERR_UNLOCK, |f| unsafe { f(inner, level) }))
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    flushed(file, |m, inner| m.xCheckReservedLock.map_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, |f| unsafe { f(inner, out) }))
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    flushed(file, |m, inner| m.xFileControl.map_or(ffi::SQLITE_NOTFOUND, |f| unsafe { f(inner, op, arg) }))
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as in `flushed`; nothing is written here.
    let log = unsafe { LogFile::of(file) };
    log.methods().xSectorSize.map_or(4096, |f| unsafe { f(log.inner) })
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let log = unsafe { LogFile::of(file) };
    log.methods().xDeviceCharacteristics.map_or(0, |f| unsafe { f(log.inner) })
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    use super::*;

    fn open_logged(path: &std::path::Path) -> Connection {
        let vfs = register().expect("the VFS registers");
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs).expect("opens through the VFS");
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;").unwrap();
        conn
    }

    /// Frames in the log: (file size - 32-byte header) / (24 + page size).
    fn frames(path: &std::path::Path) -> u64 {
        let wal = std::fs::metadata(format!("{}-wal", path.display())).map(|m| m.len()).unwrap_or(0);
        wal.saturating_sub(32) / (24 + 4096)
    }

    #[test]
    fn commits_through_the_vfs_are_seen_by_other_connections_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = open_logged(&path);
        writer.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL); CREATE INDEX t_v ON t (v);").unwrap();
        // A reader on the default VFS, as the store's pool and checkpointer are.
        let reader = Connection::open(&path).unwrap();
        for round in 0..50i64 {
            writer.execute_batch("BEGIN IMMEDIATE").unwrap();
            for k in 0..40 {
                let id = round * 40 + k;
                writer
                    .execute("INSERT INTO t (k, v) VALUES (?, ?)", rusqlite::params![id, format!("{id:08}-{}", "x".repeat(300))])
                    .unwrap();
            }
            writer.execute_batch("COMMIT").unwrap();
            // Every commit is in the file once COMMIT returns: nothing gathered.
            let seen: i64 = reader.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
            assert_eq!(seen, (round + 1) * 40, "the reader sees every committed row");
        }
        assert!(frames(&path) > 50, "the rows went through the log");
        let check: String = reader.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
    }

    /// The database as a process killed now would leave it (the log and
    /// the database file as they are, nothing checkpointed or closed),
    /// copied under `name` and opened on the default VFS, which recovers
    /// the log from the file alone.
    fn as_if_killed(dir: &tempfile::TempDir, path: &std::path::Path, name: &str) -> Connection {
        let copy = dir.path().join(name);
        std::fs::copy(path, &copy).unwrap();
        std::fs::copy(format!("{}-wal", path.display()), format!("{}-wal", copy.display())).unwrap();
        Connection::open(&copy).unwrap()
    }

    fn count_and_check(conn: &Connection) -> (i64, i64) {
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
        conn.query_row("SELECT count(*), coalesce(max(k), -1) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
    }

    #[test]
    fn a_transaction_larger_than_the_cache_and_a_rollback_leave_a_sound_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = open_logged(&path);
        // A tiny cache: the transaction spills frames to the log before its
        // commit, overwrites some of them in place, and SQLite then rewrites
        // the checksums of the frames from there on, the commit frame's last.
        writer.execute_batch("PRAGMA cache_size = 8; CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL);").unwrap();
        writer.execute_batch("BEGIN").unwrap();
        for k in 0..3000i64 {
            writer.execute("INSERT INTO t (k, v) VALUES (?, zeroblob(2000))", [k]).unwrap();
        }
        writer.execute("UPDATE t SET v = zeroblob(1000) WHERE k % 3 = 0", []).unwrap();
        writer.execute_batch("COMMIT").unwrap();
        assert_eq!(count_and_check(&as_if_killed(&dir, &path, "spilled.db")), (3000, 2999), "the commit survives a kill");

        writer.execute_batch("BEGIN").unwrap();
        for k in 3000..4000i64 {
            writer.execute("INSERT INTO t (k, v) VALUES (?, zeroblob(2000))", [k]).unwrap();
        }
        writer.execute_batch("ROLLBACK").unwrap();
        writer.execute("INSERT INTO t (k, v) VALUES (5000, x'00')", []).unwrap();
        let expected = (3001, 5000);
        assert_eq!(count_and_check(&as_if_killed(&dir, &path, "rolled-back.db")), expected, "committed rows, not rolled-back ones");
        drop(writer);
        assert_eq!(count_and_check(&Connection::open(&path).unwrap()), expected, "and the same once closed");
    }

    #[test]
    fn a_log_left_by_a_killed_writer_recovers_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = open_logged(&path);
        writer.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);").unwrap();
        for k in 0..200i64 {
            writer.execute("INSERT INTO t (k, v) VALUES (?, ?)", rusqlite::params![k, "y".repeat(500)]).unwrap();
        }
        assert_eq!(count_and_check(&as_if_killed(&dir, &path, "copy.db")), (200, 199));
        drop(writer);
    }
}
