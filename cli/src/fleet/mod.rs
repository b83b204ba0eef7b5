//! A fleet of daemons: `rbuild serve`'s fleet flags ([`serve`]), and on the client side `--host` with
//! several daemons, the daemon a project builds on, and `rbuild fleet status`.

mod serve;

pub use serve::FleetServeArgs;
