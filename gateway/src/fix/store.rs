//! The FIX sessions' message store: `mmap_store.cpp`, a QuickFIX `MessageStoreFactory` that keeps
//! each session's sequence numbers and sent messages in one memory-mapped file
//! (`<FileStorePath>/<BeginString>-<Sender>-<Target>.mstore`), so storing a message costs no
//! system call. Like QuickFIX's `FileStore` (which it replaces, and whose files it takes over
//! when a session has no store file yet), it survives the process being killed, not a power cut.

use std::ffi::{c_char, CString};
use std::path::Path;

use quickfix::FfiMessageStoreFactory;
use quickfix_ffi::FixMessageStoreFactory_t;

extern "C" {
    fn cccx_mmap_store_factory_new(dir: *const c_char) -> Option<FixMessageStoreFactory_t>;
    fn cccx_mmap_store_factory_delete(factory: FixMessageStoreFactory_t);
    fn cccx_mmap_store_seqnums(path: *const c_char, sender: *mut u64, target: *mut u64) -> i32;
}

/// A factory of memory-mapped message stores under one directory.
#[derive(Debug)]
pub struct MmapStoreFactory(FixMessageStoreFactory_t);

// SAFETY: the factory is created on one thread and used by QuickFIX's acceptor, which
// serialises calls to it; it holds only its directory name.
unsafe impl Send for MmapStoreFactory {}

impl MmapStoreFactory {
    /// A factory whose stores live under `dir` (created when the first session opens).
    pub fn new(dir: &Path) -> Result<MmapStoreFactory, String> {
        let text = dir.to_str().ok_or_else(|| format!("store path {} is not UTF-8", dir.display()))?;
        let dir = CString::new(text).map_err(|_| format!("store path {text:?} contains a NUL byte"))?;
        // SAFETY: a valid C string; the factory copies it.
        unsafe { cccx_mmap_store_factory_new(dir.as_ptr()) }
            .map(MmapStoreFactory)
            .ok_or_else(|| "cannot create the FIX message store factory".to_string())
    }
}

impl FfiMessageStoreFactory for MmapStoreFactory {
    fn as_ffi_ptr(&self) -> FixMessageStoreFactory_t {
        self.0
    }
}

impl Drop for MmapStoreFactory {
    fn drop(&mut self) {
        // SAFETY: created by cccx_mmap_store_factory_new, deleted once.
        unsafe { cccx_mmap_store_factory_delete(self.0) }
    }
}

/// The next sender and target sequence numbers recorded in a session's store file.
pub fn stored_seqnums(file: &Path) -> Option<(u64, u64)> {
    let path = CString::new(file.to_str()?).ok()?;
    let (mut sender, mut target) = (0u64, 0u64);
    // SAFETY: a valid C string and two valid out pointers.
    let rc = unsafe { cccx_mmap_store_seqnums(path.as_ptr(), &mut sender, &mut target) };
    (rc == 0).then_some((sender, target))
}
