//! Where lines come from; one module per source, named as users call it.

pub mod docker;
pub mod file;
pub mod run;
pub mod syslog;
