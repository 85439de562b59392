//! The `hubsync` binary: parses the command line and hands over to the library.

/// mimalloc: mapping a record allocates its property names and values, many small strings that
/// live until the batch is sent; glibc's allocator spends a third of `bench validate` on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hubsync::cli::main()
}
