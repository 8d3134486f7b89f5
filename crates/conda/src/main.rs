//! `nbrt-conda`: conda's command line on the rattler crates, one static executable that
//! stock images install as `conda` and `mamba` (it reads its name from argv[0]).

fn main() {
    let level = std::env::var("NBRT_CONDA_LOG").unwrap_or_default();
    if !level.is_empty() {
        eprintln!("nbrt-conda: NBRT_CONDA_LOG={level} (logging goes to stderr)");
    }
    std::process::exit(nbrt_conda::cli::main_with(std::env::args_os().collect()));
}
