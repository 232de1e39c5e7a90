//! The live tail over every group: one indexer event stream per group (on one healthy
//! replica), merged as events arrive into one bounded channel. A slow reader slows the
//! upstream reads (the channel is small and each upstream waits for room), so nothing
//! buffers without bound; one upstream ending ends the tail, and the reader reconnects.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use sawmill_record::api::{self, TailParams};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::cluster::{Answer, Attempt, Cluster};
use crate::error::Result;
use crate::search::{rank_hit, Doc};

/// Events in flight between the upstreams and the reader.
const CHANNEL: usize = 64;
/// The longest event an upstream may send; a longer one ends its stream.
const MAX_EVENT_BYTES: usize = 8 << 20;
/// Longest a replica may take to answer a tail's headers.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Indexers send a keep-alive every 15 s; three missed mean the replica hangs.
const SILENCE: Duration = Duration::from_secs(45);

/// One event of the merged tail.
#[derive(Clone, Debug, PartialEq)]
pub enum TailEvent {
    /// A new matching record, `_id` cluster-wide.
    Hit(Doc),
    /// A group skipped this many records (a round found more than it sends).
    Skipped(u64),
    /// Something the reader should show, the tail going on.
    Problem(String),
    /// An upstream ended: the tail ends after this, and the reader may reconnect.
    Ended(String),
}

/// A running merged tail. Dropping it closes every upstream.
pub struct Tail {
    rx: mpsc::Receiver<TailEvent>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The upstream URLs, one per group that answered.
    pub urls: Vec<String>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Tail {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Tail {
    /// The next event; none once the tail ended or the server stops.
    pub async fn next(&mut self) -> Option<TailEvent> {
        self.rx.recv().await
    }
}

/// One server-sent event: (`event`, `data`).
fn take_events(buf: &mut BytesMut) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let block = buf.split_to(end + 2);
        let text = String::from_utf8_lossy(&block);
        let (mut event, mut data, mut has_data) = ("message".to_string(), String::new(), false);
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if has_data {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
                has_data = true;
            }
        }
        if has_data {
            out.push((event, data));
        }
    }
    out
}

impl Cluster {
    /// Opens [`api::TAIL`] on one replica of every group and merges the streams.
    pub async fn tail(&self, p: &TailParams) -> Result<Tail> {
        let slot = self.admit_tail()?;
        let groups = self.groups(&HashMap::new());
        if groups.is_empty() {
            return Err(self.no_groups());
        }
        let pq = crate::path_and_query(api::TAIL, p);
        let (tx, rx) = mpsc::channel(CHANNEL);
        let mut tail = Tail {
            rx,
            tasks: Vec::new(),
            urls: Vec::new(),
            _slot: slot,
        };
        let mut missing = Vec::new();
        // Opened at once, each bounded: a hung replica delays the tail by one header
        // timeout, not one per group.
        let pq = &pq;
        let opens = groups.iter().map(|(g, members)| async move {
            let opened = self
                .first(g, members, |base| self.open(format!("{base}{pq}")))
                .await;
            (g, opened)
        });
        for (g, opened) in futures_util::future::join_all(opens).await {
            match opened {
                Ok((replica, (url, resp))) => {
                    let a = Answer {
                        group: g.clone(),
                        replica,
                        url: url.clone(),
                        value: (),
                    };
                    tail.urls.push(url);
                    let mut closing = self.closing();
                    let tx = tx.clone();
                    tail.tasks.push(tokio::spawn(async move {
                        let why = tokio::select! {
                            why = relay(resp, &a, &tx) => why,
                            _ = closing.wait_for(|c| *c) => return,
                        };
                        let _ = tx
                            .send(TailEvent::Ended(format!("group `{}`: {why}", a.group)))
                            .await;
                    }));
                }
                Err(Attempt::Final(e) | Attempt::Elsewhere(e)) => return Err(e),
                Err(Attempt::Failover(why)) => missing.push((g.clone(), why)),
            }
        }
        if tail.urls.is_empty() {
            return Err(crate::Error::Unavailable {
                attempts: missing.into_iter().map(|(_, w)| w).collect(),
            });
        }
        for (g, why) in missing {
            let _ = tx.try_send(TailEvent::Problem(format!(
                "group {g} did not answer: its records are missing from this tail ({why})"
            )));
        }
        Ok(tail)
    }
}

impl Cluster {
    /// Opens one upstream: its answer's headers within [`OPEN_TIMEOUT`] (or the request
    /// timeout, if shorter), so a hung replica (a stopped process still holding its port)
    /// is given up and the next asked; no timeout after, as the stream lasts as long as the
    /// reader watches.
    async fn open(&self, url: String) -> std::result::Result<(String, reqwest::Response), Attempt> {
        let limit = OPEN_TIMEOUT.min(self.request_timeout());
        match tokio::time::timeout(limit, self.send(&url, None)).await {
            Ok(r) => Ok((url, r?)),
            Err(_) => Err(Attempt::Failover(format!(
                "`{url}`: no answer within {limit:?}"
            ))),
        }
    }
}

/// Reads one upstream into `tx` until it ends: why it ended.
async fn relay(resp: reqwest::Response, a: &Answer<()>, tx: &mpsc::Sender<TailEvent>) -> String {
    let mut body = Box::pin(resp.bytes_stream());
    let mut buf = BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout(SILENCE, body.next()).await {
            Err(_) => return "the indexer stopped answering".into(),
            Ok(None) => return "the indexer closed the stream".into(),
            Ok(Some(Err(e))) => return crate::cluster::describe(&e),
            Ok(Some(Ok(c))) => c,
        };
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_EVENT_BYTES {
            return format!("an event longer than {MAX_EVENT_BYTES} bytes");
        }
        for (event, data) in take_events(&mut buf) {
            let ev = match event.as_str() {
                "message" => match serde_json::from_str::<Doc>(&data)
                    .map_err(|e| e.to_string())
                    .and_then(|d| rank_hit(d, a).map_err(|e| e.to_string()))
                {
                    Ok(h) => TailEvent::Hit(h.doc),
                    Err(e) => TailEvent::Problem(format!("group {}: {e}", a.group)),
                },
                "skipped" => TailEvent::Skipped(data.trim().parse().unwrap_or(0)),
                _ => TailEvent::Problem(format!("group {}: {data}", a.group)),
            };
            if tx.send(ev).await.is_err() {
                return "the reader left".into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_across_chunks() {
        let mut buf =
            BytesMut::from(&b": hi\n\ndata: {\"a\":1}\n\nevent: skipped\ndata: 5\n\ndata: {"[..]);
        assert_eq!(
            take_events(&mut buf),
            [
                ("message".to_string(), "{\"a\":1}".to_string()),
                ("skipped".to_string(), "5".to_string())
            ]
        );
        buf.extend_from_slice(b"}\n\n");
        assert_eq!(
            take_events(&mut buf),
            [("message".to_string(), "{}".to_string())]
        );
    }
}
