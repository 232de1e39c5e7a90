//! End-to-end tests: each starts the real `sawmill` binary and talks to it over HTTP.

mod bulk;
mod corpus;
mod docker;
mod durability;
mod files;
mod ingest;
mod operations;
mod replicas;
mod run;
mod search;
mod shipper;
mod ui;
mod up;
mod util;
