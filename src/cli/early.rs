//! What must happen before libtensorflow's own start-up code runs. On CPUs where TensorFlow turns
//! oneDNN on by default (AVX-512 VNNI or BF16, AMX), loading the library prints "oneDNN custom
//! operations are on" through absl before absl's logging is initialised, so no log level hides
//! it, and it comes before `main`. An entry in the executable's `.preinit_array` runs before any
//! shared library's initialisers: unless `--verbose` is given or `TF_CPP_MIN_LOG_LEVEL` asks for
//! info or warning lines (0 or 1), it points stderr at /dev/null for that start-up, and
//! [`restore_stderr`], first thing in `main`, points it back. Only what libraries print while
//! loading is lost.

use std::ffi::{CStr, c_char, c_int};
use std::sync::atomic::{AtomicI32, Ordering};

/// The real stderr while start-up runs silenced (-1: not silenced).
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);

#[used]
#[unsafe(link_section = ".preinit_array")]
static SILENCE_LIBRARY_START: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = silence_library_start;

/// Runs before libc and libtensorflow initialise: only plain system calls, no allocation.
extern "C" fn silence_library_start(argc: c_int, argv: *const *const c_char, envp: *const *const c_char) {
    // SAFETY: the loader passes argc valid argument strings and a NULL-terminated environment.
    let verbose = (0..argc.max(0) as usize).any(|i| unsafe { CStr::from_ptr(*argv.add(i)) }.to_bytes() == b"--verbose");
    let mut wants_logs = false;
    let mut e = envp;
    // SAFETY: as above.
    unsafe {
        while !e.is_null() && !(*e).is_null() {
            let var = CStr::from_ptr(*e).to_bytes();
            wants_logs |= var == b"TF_CPP_MIN_LOG_LEVEL=0" || var == b"TF_CPP_MIN_LOG_LEVEL=1";
            e = e.add(1);
        }
    }
    if verbose || wants_logs {
        return;
    }
    // SAFETY: plain file-descriptor calls on a path literal.
    unsafe {
        let saved = libc::dup(2);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        if saved < 0 || null < 0 {
            return;
        }
        libc::dup2(null, 2);
        libc::close(null);
        SAVED_STDERR.store(saved, Ordering::SeqCst);
    }
}

/// Points stderr back where it was (once the libraries have loaded).
pub(crate) fn restore_stderr() {
    let saved = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if saved >= 0 {
        // SAFETY: `saved` is the descriptor dup'ed above, still open.
        unsafe {
            libc::dup2(saved, 2);
            libc::close(saved);
        }
    }
}
