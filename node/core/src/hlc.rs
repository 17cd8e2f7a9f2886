//! Hybrid logical clock stamps: wall-clock milliseconds plus a counter, so every event a node
//! stamps sorts after everything the node has seen, even when its wall clock jumps back.

use std::fmt;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One stamp. Ordered by `(wall_ms, counter)`; written as `0001763780000000-00000`, fixed
/// width, so the text sorts the same way as the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc {
    pub wall_ms: u64,
    pub counter: u32,
}

impl Hlc {
    pub fn parse(s: &str) -> Option<Self> {
        let (wall, counter) = s.split_once('-')?;
        if wall.len() != 16 || counter.len() != 5 {
            return None;
        }
        Some(Self {
            wall_ms: wall.parse().ok()?,
            counter: counter.parse().ok()?,
        })
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016}-{:05}", self.wall_ms, self.counter)
    }
}

impl Serialize for Hlc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hlc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hlc::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad HLC stamp {s:?}")))
    }
}

/// A node's clock. The wall time is passed in, so tests and simulations control it.
#[derive(Debug, Default)]
pub struct HlcClock {
    last: Mutex<Hlc>,
}

impl HlcClock {
    /// A clock that will never stamp before `floor` (the newest stamp in the store at start).
    pub fn new(floor: Hlc) -> Self {
        Self {
            last: Mutex::new(floor),
        }
    }

    /// A fresh stamp, later than every stamp this clock has made or observed.
    pub fn now(&self, wall_ms: u64) -> Hlc {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let next = if wall_ms > last.wall_ms {
            Hlc {
                wall_ms,
                counter: 0,
            }
        } else {
            Hlc {
                wall_ms: last.wall_ms,
                counter: last.counter.saturating_add(1),
            }
        };
        *last = next;
        next
    }

    /// Takes a stamp seen from elsewhere into account.
    pub fn observe(&self, seen: Hlc) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if seen > *last {
            *last = seen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_even_when_the_wall_clock_goes_back() {
        let clock = HlcClock::default();
        let a = clock.now(1000);
        let b = clock.now(900);
        let c = clock.now(1000);
        let d = clock.now(2000);
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        clock.observe(Hlc {
            wall_ms: 5000,
            counter: 3,
        });
        assert!(
            clock.now(2001)
                > Hlc {
                    wall_ms: 5000,
                    counter: 3
                }
        );
    }

    #[test]
    fn text_form_roundtrips_and_sorts() {
        let a = Hlc {
            wall_ms: 99,
            counter: 12,
        };
        let b = Hlc {
            wall_ms: 100,
            counter: 1,
        };
        assert_eq!(Hlc::parse(&a.to_string()), Some(a));
        assert!(a.to_string() < b.to_string());
        assert_eq!(Hlc::parse("12-3"), None);
    }
}
