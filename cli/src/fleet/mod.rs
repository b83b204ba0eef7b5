//! A fleet of daemons: `rbuild serve`'s fleet flags ([`serve`]), and on the client side `--host` with
//! several daemons, the daemon a project builds on, and `rbuild fleet status`.

mod route;
mod serve;
mod status;

pub(crate) use route::{first_ready, members, project_key, rendezvous, Member};
pub use serve::FleetServeArgs;
pub use status::{run, FleetCommand};
