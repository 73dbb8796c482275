//! What a program may call, and how long it may run.
//!
//! The function list is VRL's `stdlib-base` (the crate is built without its
//! network, environment, file-system and crypto functions, so those are not
//! even compiled in), minus the few base functions listed in [`REMOVED`].
//! The time bound has two parts: a deadline checked between expressions
//! (`Deadline`) and a cap on the backtracking of Oniguruma, the regex
//! engine behind `parse_grok`, whose single calls a deadline between
//! expressions cannot interrupt ([`limit_backtracking`]).

use std::ops::ControlFlow;
use std::sync::Once;
use std::time::{Duration, Instant};

use vrl::compiler::runtime::ExecutionControl;
use vrl::compiler::Function;

/// Functions of VRL's standard library that logingest leaves out although
/// the `vrl` features it is built with contain them.
///
/// * `log`: writes to the daemon's own log at run time (I/O from a program
///   anyone with etcd write access can set; a program's output is its
///   document);
/// * `decode_gzip`, `decode_zlib`, `decode_zstd`, `decode_snappy`,
///   `decode_lz4`: decompression without an output limit, so a small crafted
///   line can expand to gigabytes in one uninterruptible call (Kafka already
///   compresses record batches transparently);
/// * `parse_groks`: its Oniguruma calls panic when they reach the retry
///   limit; VRL catches the panic, but the panic message goes to stderr for
///   every such document, outside logingest's log format (and a build with
///   `panic = "abort"` would die). `parse_grok` (one pattern; chain several
///   with `??`) reports the same case as "no match".
pub const REMOVED: &[&str] = &[
    "log",
    "parse_groks",
    "decode_gzip",
    "decode_zlib",
    "decode_zstd",
    "decode_snappy",
    "decode_lz4",
];

/// Functions of VRL's full standard library that the `vrl` build used here
/// does not contain (the features `enable_env_functions`,
/// `enable_system_functions`, `enable_network_functions`,
/// `enable_crypto_functions` are off). A program calling one fails to
/// compile; the diagnostic then says why.
pub const NOT_BUILT: &[&str] = &[
    // environment
    "get_env_var",
    // system: host name, time zone, files
    "get_hostname",
    "get_timezone_name",
    "parse_etld",
    "encode_proto",
    "parse_proto",
    "validate_json_schema",
    // network
    "http_request",
    "dns_lookup",
    "reverse_dns",
    // crypto and hashes (pure, but not needed so far)
    "decrypt",
    "encrypt",
    "decrypt_ip",
    "encrypt_ip",
    "crc",
    "hmac",
    "md5",
    "seahash",
    "sha1",
    "sha2",
    "sha3",
    "xxhash",
];

/// The functions a program may call.
pub fn functions() -> Vec<Box<dyn Function>> {
    let mut all = vrl::stdlib::all();
    all.retain(|f| !REMOVED.contains(&f.identifier()));
    all
}

/// Why a function a program calls is not available, when it is one that
/// logingest leaves out on purpose.
pub fn why_unavailable(name: &str) -> Option<&'static str> {
    if REMOVED.contains(&name) || NOT_BUILT.contains(&name) {
        Some(match name {
            "get_env_var" => "programs cannot read the environment",
            "get_hostname" | "get_timezone_name" => "programs cannot query the host",
            "parse_etld" | "encode_proto" | "parse_proto" | "validate_json_schema" => {
                "programs cannot read files"
            }
            "http_request" | "dns_lookup" | "reverse_dns" => "programs cannot use the network",
            "log" => "programs cannot write to logingest's log",
            "parse_groks" => {
                "its regex engine panics at the backtracking limit; use parse_grok (chain \
                 patterns with ??)"
            }
            n if n.starts_with("decode_") => {
                "unbounded decompression is left out (a small line could expand to gigabytes)"
            }
            _ => "logingest is built without VRL's crypto and hash functions",
        })
    } else {
        None
    }
}

/// Oniguruma's retry limit for one search: all start positions of one
/// `parse_grok` call together (Oniguruma's default is unlimited, with 10
/// million per start position). See the module documentation of
/// [`crate::transform`] for the measurements behind it.
pub const ONIG_RETRY_LIMIT_IN_SEARCH: u32 = 2_000_000;

/// Sets Oniguruma's process-wide retry limit for a search (once). Every
/// Oniguruma search in the process starts from it: the `grok` crate behind
/// `parse_grok` passes `MatchParam::default()`, which copies the global
/// limits, and reports a search over the limit as "no match".
pub fn limit_backtracking() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the function only stores an integer in a static of the C
        // library; it takes no pointers. `Once` keeps calls from racing, and
        // a search reads the value once, when its match parameters are
        // initialised.
        unsafe {
            onig_sys::onig_set_retry_limit_in_search(ONIG_RETRY_LIMIT_IN_SEARCH.into());
        }
    });
}

/// Interrupts a run whose wall-clock time exceeds `limit`. VRL calls
/// [`ExecutionControl::checkpoint`] before every expression, and the clock is
/// read at each (about 25 ns; reading it only every 16 expressions let a
/// program of repeated `s = s + s` grow its string 32-fold between two
/// readings). The overrun past `limit` is one expression, bounded by the
/// input size and the regex limit.
pub(crate) struct Deadline {
    start: Instant,
    limit: Duration,
    expired: bool,
}

impl Deadline {
    pub(crate) fn new(limit: Duration) -> Self {
        Self {
            start: Instant::now(),
            limit,
            expired: false,
        }
    }

    /// Whether a checkpoint found the time up.
    pub(crate) fn expired(&self) -> bool {
        self.expired
    }
}

impl ExecutionControl for Deadline {
    fn checkpoint(&mut self) -> ControlFlow<()> {
        if self.expired || self.start.elapsed() > self.limit {
            self.expired = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}
