//! Session calendars: when an instrument's call auction opens, closes and uncrosses.
//!
//! Certificate sessions follow a calendar (the REC market's is the last Wednesday of the month,
//! 13:00-15:00 IST). A [`SessionSchedule`] turns such a rule into the commands that move the
//! session on: `SetPhase(Call)` at the open, `SetPhase(CallClosed)` at the close (the registry's
//! holdings check runs then), `Uncross` after the holdings-check window, and `SetPhase(Closed)`
//! after the results are published. The engine never reads a clock: a scheduler outside it asks
//! [`SessionSchedule::due`] for the commands between two instants of its clock and sequences
//! them like any other command, so they are journaled and replay identically. An operator can
//! move a session by sending `SetPhase` itself.

use time::{Date, Duration, Month, OffsetDateTime, Time, UtcOffset, Weekday};

use crate::message::{Command, CommandBody};
use crate::types::{InstrumentId, Phase};

/// Which days a session runs on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SessionDay {
    /// The last given weekday of every month (the REC market: the last Wednesday).
    LastWeekdayOfMonth(Weekday),
    /// The `n`-th (1 to 5) given weekday of every month, when the month has one.
    NthWeekdayOfMonth(u8, Weekday),
    /// Every given weekday.
    Weekly(Weekday),
}

/// A session calendar for one instrument.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SessionSchedule {
    /// The instrument.
    pub instrument: InstrumentId,
    /// The days.
    pub day: SessionDay,
    /// Local time the bid window opens.
    pub open: Time,
    /// Local time the bid window closes.
    pub close: Time,
    /// Time between the close and the uncross (the registry's holdings check).
    pub holdings_check: Duration,
    /// Time between the uncross and the close of the session (the results are published).
    pub publish: Duration,
    /// The local time zone's offset from UTC (IST: +05:30).
    pub utc_offset: UtcOffset,
}

/// Why a schedule is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session schedule: {0}")]
pub struct ScheduleError(String);

impl SessionSchedule {
    /// Checks the schedule itself.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        if self.close <= self.open {
            return Err(ScheduleError("the bid window must close after it opens".into()));
        }
        if self.holdings_check.is_negative() || self.publish.is_negative() {
            return Err(ScheduleError("durations must not be negative".into()));
        }
        if let SessionDay::NthWeekdayOfMonth(n, _) = self.day {
            if !(1..=5).contains(&n) {
                return Err(ScheduleError(format!("week {n} of a month does not exist")));
            }
        }
        Ok(())
    }

    /// The commands due in the half-open interval `(from_ns, to_ns]` of Unix time in
    /// nanoseconds, in time order, each stamped with its due time.
    pub fn due(&self, from_ns: u64, to_ns: u64) -> Result<Vec<Command>, ScheduleError> {
        self.validate()?;
        let at = |ns: u64| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
                .map(|t| t.to_offset(self.utc_offset))
                .map_err(|e| ScheduleError(format!("time {ns}: {e}")))
        };
        let (from, to) = (at(from_ns)?, at(to_ns)?);
        let mut out = Vec::new();
        // A session's commands can fall after its day ends; start a day early.
        let mut date = from.date().previous_day().unwrap_or(from.date());
        while date <= to.date() {
            if self.runs_on(date) {
                for (when, body) in self.session_commands(date) {
                    let ns = when.unix_timestamp_nanos();
                    if ns > i128::from(from_ns) && ns <= i128::from(to_ns) {
                        out.push(Command { ts_ns: ns as u64, body });
                    }
                }
            }
            let Some(next) = date.next_day() else { break };
            date = next;
        }
        Ok(out)
    }

    fn runs_on(&self, date: Date) -> bool {
        match self.day {
            SessionDay::Weekly(weekday) => date.weekday() == weekday,
            SessionDay::LastWeekdayOfMonth(weekday) => {
                date.weekday() == weekday
                    && date.checked_add(Duration::days(7)).is_none_or(|d| d.month() != date.month())
            }
            SessionDay::NthWeekdayOfMonth(n, weekday) => {
                date.weekday() == weekday && (date.day() - 1) / 7 + 1 == n
            }
        }
    }

    fn session_commands(&self, date: Date) -> [(OffsetDateTime, CommandBody); 4] {
        let local = |t: Time| date.with_time(t).assume_offset(self.utc_offset);
        let (open, close) = (local(self.open), local(self.close));
        let uncross = close + self.holdings_check;
        let instrument = self.instrument;
        [
            (open, CommandBody::SetPhase { instrument, phase: Phase::Call }),
            (close, CommandBody::SetPhase { instrument, phase: Phase::CallClosed }),
            (uncross, CommandBody::Uncross { instrument }),
            (uncross + self.publish, CommandBody::SetPhase { instrument, phase: Phase::Closed }),
        ]
    }
}

/// The last day of `month` in `year` (for tests and tools).
pub fn last_day_of(year: i32, month: Month) -> Option<Date> {
    Date::from_calendar_date(year, month, month.length(year)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{offset, time};

    fn rec_style() -> SessionSchedule {
        SessionSchedule {
            instrument: InstrumentId(0),
            day: SessionDay::LastWeekdayOfMonth(Weekday::Wednesday),
            open: time!(13:00),
            close: time!(15:00),
            holdings_check: Duration::minutes(30),
            publish: Duration::minutes(15),
            utc_offset: offset!(+5:30),
        }
    }

    fn ns(year: i32, month: Month, day: u8, hour: u8, minute: u8) -> u64 {
        let date = Date::from_calendar_date(year, month, day).unwrap();
        let t = date.with_hms(hour, minute, 0).unwrap().assume_utc();
        t.unix_timestamp_nanos() as u64
    }

    #[test]
    fn the_last_wednesday_of_the_month_in_ist() {
        // November 2026: the last Wednesday is the 25th; 13:00 IST is 07:30 UTC.
        let cmds =
            rec_style().due(ns(2026, Month::November, 1, 0, 0), ns(2026, Month::December, 1, 0, 0)).unwrap();
        let i = InstrumentId(0);
        assert_eq!(
            cmds,
            vec![
                Command {
                    ts_ns: ns(2026, Month::November, 25, 7, 30),
                    body: CommandBody::SetPhase { instrument: i, phase: Phase::Call }
                },
                Command {
                    ts_ns: ns(2026, Month::November, 25, 9, 30),
                    body: CommandBody::SetPhase { instrument: i, phase: Phase::CallClosed }
                },
                Command {
                    ts_ns: ns(2026, Month::November, 25, 10, 0),
                    body: CommandBody::Uncross { instrument: i }
                },
                Command {
                    ts_ns: ns(2026, Month::November, 25, 10, 15),
                    body: CommandBody::SetPhase { instrument: i, phase: Phase::Closed }
                },
            ]
        );
    }

    #[test]
    fn a_year_has_twelve_sessions_and_the_interval_is_half_open() {
        let s = rec_style();
        let year = s.due(ns(2026, Month::January, 1, 0, 0), ns(2027, Month::January, 1, 0, 0)).unwrap();
        assert_eq!(year.len(), 48);
        assert!(year.windows(2).all(|w| w[0].ts_ns < w[1].ts_ns));
        // Asking again from the last command's time gives nothing twice.
        let last = year[year.len() - 1].ts_ns;
        assert!(s.due(last, last + 1).unwrap().is_empty());
        assert_eq!(s.due(last - 1, last).unwrap().len(), 1);
        // December 2026: the 30th.
        let dec = s.due(ns(2026, Month::December, 1, 0, 0), ns(2027, Month::January, 1, 0, 0)).unwrap();
        assert_eq!(dec[0].ts_ns, ns(2026, Month::December, 30, 7, 30));
    }

    #[test]
    fn nth_and_weekly_days() {
        let mut s = rec_style();
        s.day = SessionDay::NthWeekdayOfMonth(2, Weekday::Monday);
        let cmds = s.due(ns(2026, Month::November, 1, 0, 0), ns(2026, Month::December, 1, 0, 0)).unwrap();
        assert_eq!(cmds[0].ts_ns, ns(2026, Month::November, 9, 7, 30));
        s.day = SessionDay::Weekly(Weekday::Friday);
        let cmds = s.due(ns(2026, Month::November, 1, 0, 0), ns(2026, Month::December, 1, 0, 0)).unwrap();
        assert_eq!(cmds.len(), 4 * 4);
        s.day = SessionDay::NthWeekdayOfMonth(6, Weekday::Friday);
        assert!(s.due(0, 1).is_err());
        s.day = SessionDay::Weekly(Weekday::Friday);
        s.close = time!(12:00);
        assert!(s.due(0, 1).is_err());
    }

    #[test]
    fn the_commands_drive_a_session_through_the_engine() {
        use crate::{Book, Engine, Event, InstrumentSpec};
        let spec = InstrumentSpec {
            initial_phase: Phase::Closed,
            ..InstrumentSpec::canonical("CCC-2026-COMPLIANCE")
        };
        let mut engine = Engine::<Book>::new(vec![spec]).unwrap();
        let cmds =
            rec_style().due(ns(2026, Month::November, 1, 0, 0), ns(2026, Month::December, 1, 0, 0)).unwrap();
        let phases: Vec<Phase> = cmds
            .iter()
            .flat_map(|c| engine.apply_vec(c))
            .filter_map(|e| match e {
                Event::PhaseChanged { phase, .. } => Some(phase),
                _ => None,
            })
            .collect();
        assert_eq!(phases, vec![Phase::Call, Phase::CallClosed, Phase::Uncrossed, Phase::Closed]);
        assert_eq!(last_day_of(2026, Month::February).map(|d| d.day()), Some(28));
    }
}
