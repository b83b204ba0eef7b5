//! The sandbox helper for the solver's integration tests (and for embedders whose `main` cannot call
//! `sandbox::init::maybe_run`): `NamespaceExecutor::with_helper` re-executes this binary.

fn main() {
    sandbox::init::maybe_run();
    eprintln!("solver-sandbox-helper: run by the sandbox executor only (first argument {})", sandbox::init::HELPER_ARG);
    std::process::exit(2);
}
