//! Sawmill's web UI: server-rendered search pages over the indexers' search API, with
//! failover between replicas. It arrives with the UI issue; until then this crate is empty
//! and `sawmill up` serves only the API.
