//! The `vlmflow` command: parse, call the library, print, exit 0 (success), 1 (a stage failed),
//! 2 (the Stagefile or the command line is wrong).

fn main() {
    std::process::exit(vlmflow::cli::main());
}
