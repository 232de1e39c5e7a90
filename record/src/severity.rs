//! The eight syslog severities (RFC 5424 §6.2.1), most severe first.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A record's severity. Ordered by rank: `Emerg < Alert < … < Debug`, so "at least as
/// severe as `err`" is `sev <= Severity::Err`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Emerg,
    Alert,
    Crit,
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

/// A word that names no severity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownSeverity(pub String);

impl fmt::Display for UnknownSeverity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`severity` `{}` is not one of ", self.0)?;
        for (i, s) in Severity::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(s.name())?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownSeverity {}

impl Severity {
    /// Every severity, in rank order (index = syslog number).
    pub const ALL: [Severity; 8] = [
        Severity::Emerg,
        Severity::Alert,
        Severity::Crit,
        Severity::Err,
        Severity::Warning,
        Severity::Notice,
        Severity::Info,
        Severity::Debug,
    ];

    /// The name stored and searched: `emerg` … `debug`.
    pub const fn name(self) -> &'static str {
        match self {
            Severity::Emerg => "emerg",
            Severity::Alert => "alert",
            Severity::Crit => "crit",
            Severity::Err => "err",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
            Severity::Debug => "debug",
        }
    }

    /// The syslog number, 0 (emerg) to 7 (debug).
    pub const fn rank(self) -> u8 {
        self as u8
    }

    /// The severity of a syslog number; only the low three bits of a priority count.
    pub const fn from_rank(n: u8) -> Severity {
        Severity::ALL[(n & 7) as usize]
    }

    /// Severe enough to be an error: `err` or worse.
    pub fn is_error(self) -> bool {
        self <= Severity::Err
    }

    /// A level word as loggers spell it (`ERROR`, `warn`, `fatal`, `Informational`, …),
    /// without numbers: used where a word in free text may or may not be a level.
    pub fn from_word(s: &str) -> Option<Severity> {
        let s = s.trim();
        // Longest spelling is "informational"; anything longer is no level.
        if s.len() > 13 {
            return None;
        }
        let mut buf = [0u8; 13];
        let lower = &mut buf[..s.len()];
        lower.copy_from_slice(s.as_bytes());
        lower.make_ascii_lowercase();
        Some(match &*lower {
            b"emerg" | b"emergency" | b"panic" => Severity::Emerg,
            b"alert" => Severity::Alert,
            b"crit" | b"critical" | b"fatal" => Severity::Crit,
            b"err" | b"error" => Severity::Err,
            b"warning" | b"warn" => Severity::Warning,
            b"notice" => Severity::Notice,
            b"info" | b"informational" | b"information" => Severity::Info,
            b"debug" | b"trace" => Severity::Debug,
            _ => return None,
        })
    }

    /// What an ingested `severity` may be: a level word or a syslog number `0`–`7`.
    pub fn parse(s: &str) -> Result<Severity, UnknownSeverity> {
        let t = s.trim();
        if let [d @ b'0'..=b'7'] = t.as_bytes() {
            return Ok(Severity::from_rank(d - b'0'));
        }
        Severity::from_word(t).ok_or_else(|| UnknownSeverity(s.to_string()))
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Severity {
    type Err = UnknownSeverity;
    fn from_str(s: &str) -> Result<Severity, UnknownSeverity> {
        Severity::parse(s)
    }
}

impl Serialize for Severity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Severity, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Severity::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ranks_and_spellings_agree() {
        for (i, s) in Severity::ALL.iter().enumerate() {
            assert_eq!(s.rank() as usize, i);
            assert_eq!(Severity::from_rank(i as u8), *s);
            assert_eq!(Severity::parse(s.name()), Ok(*s));
            assert_eq!(Severity::parse(&i.to_string()), Ok(*s));
        }
        assert_eq!(Severity::parse(" ERROR "), Ok(Severity::Err));
        assert_eq!(Severity::parse("Fatal"), Ok(Severity::Crit));
        assert_eq!(Severity::from_word("3"), None);
        assert_eq!(Severity::from_word("informationally"), None);
        let e = Severity::parse("loud").unwrap_err().to_string();
        assert_eq!(
            e,
            "`severity` `loud` is not one of emerg, alert, crit, err, warning, notice, info, debug"
        );
        assert!(Severity::Crit.is_error() && !Severity::Warning.is_error());
    }

    #[test]
    fn serde_uses_the_names() {
        let j = serde_json::to_string(&Severity::Warning).unwrap();
        assert_eq!(j, "\"warning\"");
        let s: Severity = serde_json::from_str("\"WARN\"").unwrap();
        assert_eq!(s, Severity::Warning);
        assert!(serde_json::from_str::<Severity>("\"x\"").is_err());
    }
}
