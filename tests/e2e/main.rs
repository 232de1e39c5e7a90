//! End-to-end tests: each starts the real `sawmill` binary and talks to it over HTTP.

mod bulk;
mod durability;
mod ingest;
mod operations;
mod search;
mod up;
mod util;
