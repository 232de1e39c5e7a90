//! Property tests of the syslog parser: random bytes, and generated lines that are nearly
//! RFC 3164 or RFC 5424 (odd PRIs, timestamps, hosts, tags, structured data with escapes,
//! huge and empty parts, invalid UTF-8, NULs). Whatever arrives, parsing must not panic and
//! the record must stay within bounds of the datagram.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

use super::*;

/// Cases per property: 100,000, or `SAWMILL_PROPTEST_CASES` (as the indexer's property
/// tests read it). Each property runs in a few seconds in release mode.
fn cases() -> u32 {
    std::env::var("SAWMILL_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn config() -> Config {
    Config {
        cases: cases(),
        // Failures are reported with their input; no regression files in the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

fn parser() -> Parser {
    Parser {
        max_message_bytes: 2048,
        zone: Zone::Fixed(UtcOffset::UTC),
    }
}

fn received() -> OffsetDateTime {
    time::macros::datetime!(2026-11-27 08:00:00 UTC)
}

/// Everything a datagram must satisfy once parsed, whatever its bytes.
fn check(parser: &Parser, data: &[u8]) -> Result<(), TestCaseError> {
    let p = parser.parse(data, received());
    let ev = &p.event;
    let kept = data.len().min(parser.max_message_bytes);
    prop_assert_eq!(ev.truncated, data.len() > parser.max_message_bytes);
    // Each byte becomes at most one character (U+FFFD for invalid UTF-8, ␀ for NUL), and
    // a character is at most three bytes: the message is bounded by the datagram.
    let chars = ev.message.chars().count();
    prop_assert!(chars <= kept, "{} characters from {} bytes", chars, kept);
    prop_assert!(ev.message.len() <= 3 * kept);
    for (what, v) in [("host", &ev.host), ("service", &ev.service)] {
        if let Some(v) = v {
            prop_assert!(v.len() <= 3 * kept, "{} of {} bytes", what, v.len());
            prop_assert!(!v.contains(' ') && !v.is_empty(), "{} {:?}", what, v);
        }
    }
    prop_assert!(!ev.message.contains('\0'), "a NUL stays visible");
    // PRI decides facility and severity (a message may state its own level, which then
    // wins: that is the enrichment's job, checked without it below).
    let facility = ev.facility.unwrap();
    prop_assert!(ev.severity.is_some());
    let text = String::from_utf8_lossy(&data[..kept]);
    let bare = parser.parse_text(&text, received()).event;
    match split_pri(&text) {
        Pri::Valid(pri, _) => {
            prop_assert_eq!(facility, FACILITIES[(pri >> 3) as usize]);
            prop_assert_eq!(bare.severity, Some(Severity::from_rank(pri)));
        }
        Pri::Missing | Pri::Invalid => {
            prop_assert_eq!(facility, "user");
            prop_assert_eq!(bare.severity, Some(Severity::Notice));
        }
    }
    // The record on the wire is JSON, and carries the message unchanged.
    let mut out = Vec::new();
    ev.write_record(&mut out, None, "me");
    let rec: Value = serde_json::from_slice(&out)
        .map_err(|e| TestCaseError::fail(format!("record is not JSON: {e}")))?;
    prop_assert_eq!(rec["message"].as_str(), Some(ev.message.as_str()));
    let ts = rec["ts"].as_str().unwrap_or_default();
    prop_assert!(
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
        "ts {:?}",
        ts
    );
    Ok(())
}

/// Text with the characters that trip parsers: separators, brackets, quotes, escapes,
/// NUL, newlines, multi-byte characters; sometimes empty, sometimes huge.
fn text(max: usize) -> BoxedStrategy<String> {
    let piece = prop_oneof![
        8 => "[a-zA-Z0-9]{1,8}",
        2 => Just(" ".to_string()),
        2 => prop::sample::select(vec![
            ":", "[", "]", "=", "\"", "\\", "\\]", "\\\"", "-", "_", ".", "/", "<", ">", "{", "}",
            "\0", "\n", "\r", "\t", "ä", "é", "€", "𝄞", "\u{feff}", "\u{2400}", "  ", "1 ",
        ])
        .prop_map(str::to_string),
        1 => any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(piece, 0..max)
        .prop_map(|v| v.concat())
        .boxed()
}

/// Rarely a part of tens of kilobytes, so limits and cuts are crossed too.
fn part(max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        200 => text(max),
        1 => (prop::sample::select(vec!["x", "[", "\\", ":", " ", "é", "\0", "a="]), 1000usize..40_000)
            .prop_map(|(s, n)| s.repeat(n)),
    ]
    .boxed()
}

fn pri() -> BoxedStrategy<String> {
    prop_oneof![
        8 => (0u32..=191).prop_map(|p| format!("<{p}>")),
        1 => (192u32..100_000).prop_map(|p| format!("<{p}>")),
        1 => prop::sample::select(vec!["", "<", "<>", "<1", "<1a>", "<-1>", "<007>", "<+1>", "<١>"])
            .prop_map(str::to_string),
    ]
    .boxed()
}

const MONTH_WORDS: [&str; 8] = ["Jan", "feb", "MAR", "Aug", "Dec", "Xyz", "Ma", "Mär"];

/// `Mmm dd [yyyy ]hh:mm:ss[.fff][:]`, with numbers in and out of range.
fn timestamp_3164() -> BoxedStrategy<String> {
    (
        prop::sample::select(MONTH_WORDS.to_vec()),
        prop::sample::select(vec![" ", "  ", "   "]),
        0u32..40,
        prop::option::of(prop_oneof![1960u32..2110, 0u32..100_000]),
        (0u32..100, 0u32..100, 0u32..100),
        prop::option::of("[0-9]{0,15}"),
        any::<bool>(),
    )
        .prop_map(|(mon, sp, day, year, (h, m, s), frac, colon)| {
            let mut t = format!("{mon}{sp}{day}");
            if let Some(y) = year {
                t.push_str(&format!(" {y}"));
            }
            t.push_str(&format!(" {h:02}:{m:02}:{s:02}"));
            if let Some(f) = frac {
                t.push('.');
                t.push_str(&f);
            }
            if colon {
                t.push(':');
            }
            t
        })
        .boxed()
}

/// An RFC 3339 time, including years and offsets at the edges of what can be stored.
fn rfc3339() -> BoxedStrategy<String> {
    // Uniform numbers would almost never reach the edges, where the bugs are.
    let edge = |v: Vec<u32>, range: std::ops::Range<u32>| {
        prop_oneof![prop::sample::select(v), range].boxed()
    };
    (
        edge(vec![0, 1, 1969, 1970, 2026, 2262, 9999], 0..10_000),
        edge(vec![1, 12], 1..13),
        edge(vec![1, 31], 1..32),
        (
            edge(vec![0, 23], 0..24),
            edge(vec![0, 59], 0..60),
            edge(vec![0, 59, 60], 0..61),
        ),
        prop::option::of("[0-9]{1,12}"),
        prop_oneof![
            Just("Z".to_string()),
            (
                any::<bool>(),
                edge(vec![0, 23], 0..24),
                edge(vec![0, 59], 0..60)
            )
                .prop_map(|(neg, h, m)| format!("{}{h:02}:{m:02}", if neg { '-' } else { '+' }))
        ],
    )
        .prop_map(|(y, mo, d, (h, mi, s), frac, off)| {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
        })
        .boxed()
}

fn rfc3164_line() -> BoxedStrategy<Vec<u8>> {
    (
        pri(),
        prop::sample::select(vec!["", " ", "  "]),
        prop_oneof![4 => timestamp_3164(), 1 => rfc3339(), 1 => Just(String::new())],
        prop::option::of(prop_oneof![
            "[a-z0-9._-]{1,20}",
            Just("fe80::1".to_string()),
            text(4)
        ]),
        prop::option::of((
            prop_oneof!["[a-zA-Z0-9_./()-]{0,40}", text(4)],
            prop::option::of(prop_oneof![
                (0u64..u64::MAX).prop_map(|p| p.to_string()),
                text(3)
            ]),
            any::<bool>(),
        )),
        part(40),
        prop::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(pri, lead, ts, host, tag, msg, junk)| {
            let mut s = format!("{pri}{lead}{ts}");
            if let Some(h) = host {
                s.push(' ');
                s.push_str(&h);
            }
            if let Some((name, pid, colon)) = tag {
                s.push(' ');
                s.push_str(&name);
                if let Some(p) = pid {
                    s.push_str(&format!("[{p}]"));
                }
                if colon {
                    s.push(':');
                }
            }
            s.push(' ');
            s.push_str(&msg);
            let mut b = s.into_bytes();
            // Bytes that are not UTF-8 at all, where a sender's encoding slips in.
            b.extend(junk.iter().map(|x| x | 0x80));
            b
        })
        .boxed()
}

/// `[id k="v" …]` with escapes, and sometimes broken.
fn structured_data() -> BoxedStrategy<String> {
    let param = (
        "[a-zA-Z_.]{0,8}",
        prop::collection::vec(
            prop_oneof![
                4 => "[a-z 0-9=]{1,6}",
                1 => prop::sample::select(vec!["\\]", "\\\"", "\\\\", "\\", "]", "\"", "é", "\0"])
                    .prop_map(str::to_string),
            ],
            0..6,
        ),
    )
        .prop_map(|(k, v)| format!(" {k}=\"{}\"", v.concat()));
    let element = (
        prop_oneof!["[a-zA-Z]{1,8}(@[0-9]{1,5})?", text(2)],
        prop::collection::vec(param, 0..4),
        prop::sample::select(vec!["]", "", "]]", " ]"]),
    )
        .prop_map(|(id, params, close)| format!("[{id}{}{close}", params.concat()));
    prop_oneof![
        1 => Just("-".to_string()),
        4 => prop::collection::vec(element, 1..5).prop_map(|v| v.concat()),
        1 => (1usize..5000).prop_map(|n| "[".repeat(n)),
    ]
    .boxed()
}

fn rfc5424_line() -> BoxedStrategy<Vec<u8>> {
    let field = |pattern: &'static str| {
        prop_oneof![
            3 => pattern.prop_map(|s| s.to_string()),
            1 => Just("-".to_string()),
            1 => text(3),
        ]
    };
    (
        pri(),
        prop::sample::select(vec!["1", "1", "2", "01", ""]),
        prop_oneof![3 => rfc3339(), 1 => Just("-".to_string()), 1 => text(3)],
        field("[a-z0-9.:-]{1,30}"),
        field("[a-zA-Z0-9_.-]{1,48}"),
        field("[0-9]{1,20}|[a-z]{1,8}"),
        field("[A-Z0-9]{1,32}"),
        structured_data(),
        prop::option::of(part(30)),
        any::<bool>(),
    )
        .prop_map(|(pri, ver, ts, host, app, procid, msgid, sd, msg, bom)| {
            let mut s = format!("{pri}{ver} {ts} {host} {app} {procid} {msgid} {sd}");
            if let Some(m) = msg {
                s.push(' ');
                if bom {
                    s.push('\u{feff}');
                }
                s.push_str(&m);
            }
            s.into_bytes()
        })
        .boxed()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_break_the_parser(data in prop::collection::vec(any::<u8>(), 0..400)) {
        check(&parser(), &data)?;
    }

    #[test]
    fn near_rfc3164_lines_never_break_the_parser(data in rfc3164_line()) {
        check(&parser(), &data)?;
    }

    #[test]
    fn near_rfc5424_lines_never_break_the_parser(data in rfc5424_line()) {
        check(&parser(), &data)?;
    }
}
