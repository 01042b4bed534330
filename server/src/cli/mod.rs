//! Command-line front ends. Each submodule parses one command's arguments and
//! calls into the library; no protocol logic lives here.

pub mod bill;
pub mod demo;
pub mod events;
pub mod paydir;
pub mod serve;
pub mod tools;
