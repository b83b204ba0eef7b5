//! A fleet of daemons: `rbuild serve`'s fleet flags ([`serve`]), and on the client side `--host` with
//! several daemons, the daemon a project builds on, and `rbuild fleet status`.

mod route;
mod serve;
mod status;

pub(crate) use route::{build, first_ready, members, Member};
pub use serve::FleetServeArgs;
pub use status::{run, FleetCommand};
