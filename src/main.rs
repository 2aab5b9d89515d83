//! The `vlmflow` command: parse, call the library, print, exit 0 (success), 1 (a stage failed),
//! 2 (the Stagefile or the command line is wrong).

// Training allocates and frees large buffers every step; glibc hands them back to the OS each
// time (page faults cost 1.45× a step, benches/clip_step.rs). mimalloc, told to, keeps them.
#[global_allocator]
static ALLOCATOR: vlmflow::alloc::MiMalloc = vlmflow::alloc::MiMalloc;

fn main() {
    vlmflow::alloc::keep_freed_memory();
    // candle's elementwise pool spin-waits against rayon's matmul threads: one pool is faster on
    // small machines (~25% per training step here). A user's own setting wins.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: set before any other thread exists.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    std::process::exit(vlmflow::cli::main());
}
