//! A binary that only serves as the sandbox helper, for the sandbox crate's own tests and for embedders
//! whose `main` cannot call `sandbox::init::maybe_run` (`NamespaceExecutor::with_helper`).

fn main() {
    sandbox::init::maybe_run();
    eprintln!("rbuild-sandbox-helper: run by the sandbox executor only (first argument {})", sandbox::init::HELPER_ARG);
    std::process::exit(2);
}
