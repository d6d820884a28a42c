//! The embedded log: the shared conformance checks, then what only it does (files, recovery,
//! retention, bounds).

mod back_pressure;
mod checks;
#[path = "../conformance/mod.rs"]
mod conformance;
mod damage;
mod helpers;
mod limits;
mod recovery;
mod retention;
