fn main() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "nbrt-init".into());
    std::process::exit(nbrt_init::main_with(argv0, args.collect()));
}
