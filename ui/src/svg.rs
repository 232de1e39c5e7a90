//! Geometry of the two charts, computed on the server so the page only draws: the hits
//! histogram of Discover and the swimlane timeline of the request view.

use std::collections::HashMap;

use sawmill_record::api::HistogramResponse;
use sawmill_record::time::parse_rfc3339;

use crate::row::{format_iso, format_utc, Row};
use crate::url::View;

pub const WIDTH: f64 = 1000.0;
pub const HIST_HEIGHT: f64 = 120.0;

/// One bucket: its bar (and the part of it that is errors), and the zoom link.
#[derive(Clone, Debug)]
pub struct Bar {
    pub x: String,
    pub w: String,
    pub y: String,
    pub h: String,
    pub err_y: String,
    pub err_h: String,
    pub errors: u64,
    pub title: String,
    pub href: String,
}

#[derive(Clone, Debug)]
pub struct Tick {
    pub x: String,
    pub label: String,
    pub iso: String,
}

#[derive(Clone, Debug)]
pub struct Histogram {
    pub bars: Vec<Bar>,
    pub ticks: Vec<Tick>,
    pub max: u64,
    pub interval: String,
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

/// `1 s`, `30 s`, `5 min`, `1 h`, `1 d`: the bucket width in words.
pub fn interval_text(ms: i64) -> String {
    match ms {
        ms if ms < 1000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{} s", ms / 1000),
        ms if ms < 3_600_000 => format!("{} min", ms / 60_000),
        ms if ms < 86_400_000 => format!("{} h", ms / 3_600_000),
        ms => format!("{} d", ms / 86_400_000),
    }
}

/// About six labels across, on bucket boundaries `slot` apart: dates for buckets of a day
/// or more, milliseconds for buckets under a second.
fn ticks(h: &HistogramResponse, slot: f64) -> Vec<Tick> {
    let every = (h.buckets.len() / 6).max(1);
    let day = h.interval_ms >= 86_400_000;
    h.buckets
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .filter_map(|(i, b)| {
            let t = parse_rfc3339(&b.ts)?;
            let label = if day {
                format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
            } else if h.interval_ms < 1000 {
                format!(
                    "{:02}:{:02}:{:02}.{:03}",
                    t.hour(),
                    t.minute(),
                    t.second(),
                    t.millisecond()
                )
            } else {
                format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
            };
            Some(Tick {
                x: f1(i as f64 * slot),
                label,
                iso: format_iso(t),
            })
        })
        .collect()
}

/// Bars for each bucket scaled to the largest; `errors` (same buckets, error severities
/// only) is drawn over them. Each bar links to Discover zoomed to its bucket.
pub fn histogram(
    h: &HistogramResponse,
    errors: Option<&HistogramResponse>,
    view: &View,
) -> Histogram {
    let n = h.buckets.len().max(1) as f64;
    let max = h.buckets.iter().map(|b| b.count).max().unwrap_or(0);
    let errs: HashMap<&str, u64> = errors
        .map(|e| e.buckets.iter().map(|b| (b.ts.as_str(), b.count)).collect())
        .unwrap_or_default();
    let slot = WIDTH / n;
    let scale = |c: u64| {
        if max == 0 {
            0.0
        } else {
            // A bucket with anything in it stays visible.
            let v = c as f64 / max as f64 * (HIST_HEIGHT - 2.0);
            if c > 0 {
                v.max(1.5)
            } else {
                0.0
            }
        }
    };
    let interval_us = h.interval_ms.max(1) * 1000;
    let mut bars = Vec::with_capacity(h.buckets.len());
    for (i, b) in h.buckets.iter().enumerate() {
        let Some(t) = parse_rfc3339(&b.ts) else {
            continue;
        };
        // A range ending near year 9999 puts the last bucket's end out of range.
        let end = t
            .checked_add(time::Duration::microseconds(interval_us - 1))
            .unwrap_or(t);
        let (start_iso, end_iso) = (format_iso(t), format_iso(end));
        let bh = scale(b.count);
        let e = errs.get(b.ts.as_str()).copied().unwrap_or(0).min(b.count);
        let eh = scale(e).min(bh);
        bars.push(Bar {
            x: f1(i as f64 * slot),
            w: f1((slot - 1.0).max(0.5)),
            y: f1(HIST_HEIGHT - bh),
            h: f1(bh),
            err_y: f1(HIST_HEIGHT - eh),
            err_h: f1(eh),
            errors: e,
            title: format!(
                "{} — {}: {} records{}",
                format_utc(t),
                interval_text(h.interval_ms),
                b.count,
                if e > 0 {
                    format!(", {e} errors")
                } else {
                    String::new()
                }
            ),
            href: view.discover(|v| {
                v.start = start_iso;
                v.end = end_iso;
            }),
        });
    }
    Histogram {
        bars,
        ticks: ticks(h, slot),
        max,
        interval: interval_text(h.interval_ms),
    }
}

pub const LANE_H: f64 = 30.0;
pub const LABEL_W: f64 = 150.0;

#[derive(Clone, Debug)]
pub struct Lane {
    pub name: String,
    pub y: String,
    pub text_y: String,
    pub line_y: String,
    pub count: usize,
}

#[derive(Clone, Debug)]
pub struct Mark {
    pub cx: String,
    pub cy: String,
    pub r: &'static str,
    pub error: bool,
    pub href: String,
    pub title: String,
}

#[derive(Clone, Debug)]
pub struct Swimlanes {
    pub lanes: Vec<Lane>,
    pub marks: Vec<Mark>,
    pub height: String,
    pub span: String,
    pub end_x: String,
}

/// One lane per service in order of first appearance; each record a mark placed by its
/// time between the first and the last record. Errors are larger and red.
pub fn swimlanes(rows: &[Row]) -> Swimlanes {
    let mut order: Vec<String> = Vec::new();
    // A placeholder for a record that could not be read has no service and no time.
    for r in rows.iter().filter(|r| !r.unreadable) {
        if !order.contains(&r.service) {
            order.push(r.service.clone());
        }
    }
    let times: Vec<i64> = rows.iter().filter_map(|r| r.time.micros).collect();
    let t0 = times.iter().copied().min().unwrap_or(0);
    let t1 = times.iter().copied().max().unwrap_or(0);
    let plot = WIDTH - LABEL_W - 20.0;
    let lane_of = |s: &str| order.iter().position(|o| o == s).unwrap_or(0);
    let marks = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.unreadable)
        .map(|(i, r)| {
            let t = r.time.micros.unwrap_or(t0);
            let frac = if t1 > t0 {
                (t - t0) as f64 / (t1 - t0) as f64
            } else {
                0.0
            };
            let lane = lane_of(&r.service);
            let text: String = r.message.iter().map(|s| s.text.as_str()).collect();
            let first_line = text.lines().next().unwrap_or("");
            Mark {
                cx: f1(LABEL_W + 10.0 + frac * plot),
                cy: f1(lane as f64 * LANE_H + LANE_H / 2.0),
                r: if r.error { "7" } else { "4.5" },
                error: r.error,
                href: format!("#rec{i}"),
                title: format!(
                    "{} {} {}: {}",
                    r.offset,
                    r.service,
                    r.severity,
                    crate::row::cut(first_line, 160).0
                ),
            }
        })
        .collect();
    let lanes = order
        .iter()
        .enumerate()
        .map(|(i, name)| Lane {
            name: crate::row::cut(name, 22).0,
            y: f1(i as f64 * LANE_H),
            text_y: f1(i as f64 * LANE_H + LANE_H / 2.0 + 4.0),
            line_y: f1(i as f64 * LANE_H + LANE_H / 2.0),
            count: rows
                .iter()
                .filter(|r| !r.unreadable && &r.service == name)
                .count(),
        })
        .collect();
    Swimlanes {
        lanes,
        marks,
        height: f1(order.len().max(1) as f64 * LANE_H),
        span: crate::row::offset_text(t1 - t0),
        end_x: f1(WIDTH - 10.0),
    }
}
