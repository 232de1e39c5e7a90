//! Highlighting: which words of a message the query matched, as segments of plain text that
//! the template wraps in `<mark>`, so that log text never becomes markup.

use std::collections::HashSet;

/// A run of message text, matched or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub text: String,
    pub hit: bool,
}

/// The words a query looks for in `message`, lowercased as the index stores them.
#[derive(Clone, Debug, Default)]
pub struct Terms {
    exact: HashSet<String>,
    prefixes: Vec<String>,
}

/// Splits like the index's default tokenizer: alphanumeric runs, lowercased.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out.into_iter()
}

/// The phrase whose opening quote is at `i`, unescaped, and the index after its closing
/// quote.
fn phrase_at(chars: &[char], i: usize) -> (String, usize) {
    let mut k = i + 1;
    let mut s = String::new();
    while k < chars.len() && chars[k] != '"' {
        if chars[k] == '\\' && k + 1 < chars.len() {
            k += 1;
        }
        s.push(chars[k]);
        k += 1;
    }
    (s, k + 1)
}

/// The index of the `)` that closes the group opened at `i` (the end when it is never
/// closed).
fn group_end(chars: &[char], i: usize) -> usize {
    let mut depth = 0;
    let mut k = i;
    while k < chars.len() {
        match chars[k] {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        k += 1;
    }
    k
}

impl Terms {
    /// Reads the bare words and phrases of a Lucene-like query (those that search
    /// `message`), leaving out negated ones and other fields' values.
    pub fn from_query(q: &str) -> Terms {
        let mut t = Terms::default();
        let chars: Vec<char> = q.chars().collect();
        let mut i = 0;
        let mut negated = false;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() || c == '(' || c == ')' || c == '+' {
                if c == '(' || c == ')' {
                    negated = false;
                }
                i += 1;
                continue;
            }
            if c == '-' {
                negated = true;
                i += 1;
                continue;
            }
            // One token: an optional `field:` then a phrase or a word.
            let mut field = None;
            let mut j = i;
            while j < chars.len() && (chars[j].is_alphanumeric() || "._".contains(chars[j])) {
                j += 1;
            }
            if j < chars.len() && chars[j] == ':' && j > i {
                field = Some(chars[i..j].iter().collect::<String>());
                i = j + 1;
            }
            let (text, phrase, next) = if i < chars.len() && chars[i] == '"' {
                let (s, next) = phrase_at(&chars, i);
                (s, true, next)
            } else if i < chars.len() && chars[i] == '(' {
                // `field:( … )`: another field's group, skipped whole.
                if field.as_deref().is_some_and(|f| f != "message") {
                    i = group_end(&chars, i) + 1;
                    negated = false;
                    continue;
                }
                i += 1;
                continue;
            } else {
                let mut k = i;
                while k < chars.len() && !chars[k].is_whitespace() && chars[k] != ')' {
                    k += 1;
                }
                (chars[i..k].iter().collect::<String>(), false, k)
            };
            i = next;
            if !phrase && field.is_none() && ["AND", "OR", "&&", "||"].contains(&text.as_str()) {
                continue;
            }
            if !phrase && field.is_none() && (text == "NOT" || text == "!") {
                negated = true;
                continue;
            }
            let searches_message = field.as_deref().is_none_or(|f| f == "message");
            if !negated && searches_message && text != "*" {
                t.add(&text, phrase);
            }
            negated = false;
        }
        t
    }

    /// The words of one query term: `word*` matches by prefix; `~` and `^` suffixes change
    /// scoring, not words.
    fn add(&mut self, text: &str, phrase: bool) {
        let bare = text.split(['~', '^']).next().unwrap_or("");
        let prefix = !phrase && bare.ends_with('*');
        for (_, w) in words(bare) {
            let w = w.to_lowercase();
            if w.len() > 40 {
                continue;
            }
            if prefix {
                self.prefixes.push(w);
            } else {
                self.exact.insert(w);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    fn matches(&self, word: &str) -> bool {
        let w = word.to_lowercase();
        self.exact.contains(&w) || self.prefixes.iter().any(|p| w.starts_with(p.as_str()))
    }

    /// `text` as matched and unmatched runs; adjacent runs of one kind are merged.
    pub fn segments(&self, text: &str) -> Vec<Segment> {
        if self.is_empty() {
            return vec![Segment {
                text: text.to_string(),
                hit: false,
            }];
        }
        let mut out: Vec<Segment> = Vec::new();
        let mut push = |s: &str, hit: bool| {
            if s.is_empty() {
                return;
            }
            match out.last_mut() {
                Some(last) if last.hit == hit && !hit => last.text.push_str(s),
                _ => out.push(Segment {
                    text: s.to_string(),
                    hit,
                }),
            }
        };
        let mut at = 0;
        for (pos, w) in words(text) {
            if self.matches(w) {
                push(&text[at..pos], false);
                push(w, true);
                at = pos + w.len();
            }
        }
        push(&text[at..], false);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(q: &str, text: &str) -> Vec<String> {
        Terms::from_query(q)
            .segments(text)
            .into_iter()
            .filter(|s| s.hit)
            .map(|s| s.text)
            .collect()
    }

    #[test]
    fn bare_words_and_phrases_are_marked_case_insensitively() {
        assert_eq!(
            marked(
                "Timeout \"card declined\"",
                "payment timeout: Card DECLINED again"
            ),
            vec!["timeout", "Card", "DECLINED"]
        );
    }

    #[test]
    fn other_fields_and_negated_words_are_not_marked() {
        assert_eq!(
            marked(
                "service:payments AND NOT retry -slow message:charged",
                "charged payments retry slow"
            ),
            vec!["charged"]
        );
        assert_eq!(marked("host:(a OR b) x", "a b x"), vec!["x"]);
    }

    #[test]
    fn prefixes_match_and_markup_stays_text() {
        let segs = Terms::from_query("scr*").segments("<script>alert(1)</script>");
        assert_eq!(
            segs,
            vec![
                Segment {
                    text: "<".into(),
                    hit: false
                },
                Segment {
                    text: "script".into(),
                    hit: true
                },
                Segment {
                    text: ">alert(1)</".into(),
                    hit: false
                },
                Segment {
                    text: "script".into(),
                    hit: true
                },
                Segment {
                    text: ">".into(),
                    hit: false
                },
            ]
        );
    }

    #[test]
    fn a_query_without_words_leaves_the_text_whole() {
        assert_eq!(
            Terms::from_query("*").segments("a <b>"),
            vec![Segment {
                text: "a <b>".into(),
                hit: false
            }]
        );
    }
}
