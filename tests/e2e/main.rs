//! End-to-end tests: each starts the real `sawmill` binary and talks to it over HTTP.

mod bulk;
mod clean_stop;
mod cluster;
mod contract;
mod corpus;
mod docker;
mod durability;
mod fanout;
mod files;
mod ingest;
mod load;
mod objstore;
mod operations;
mod placement;
mod query;
mod repair;
mod replicas;
mod run;
mod search;
mod security;
mod sequence;
mod shipper;
mod stopping;
mod ui;
mod up;
mod util;
