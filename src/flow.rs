//! Reading a standard workload CSV (`seq,op,order_id,participant,instrument,side,type,tif,price,qty`,
//! see WORKLOADS.md) into engine commands under the canonical semantics.
//!
//! Besides WORKLOADS.md's NEW, CANCEL, AMEND and UNCROSS, cccx reads four operator lines of its
//! own (never in the standard workloads), with the unused fields empty:
//!
//! | op | fields used | command |
//! |---|---|---|
//! | `PHASE` | instrument, type = `CONTINUOUS`, `CALL`, `CLOSED`, `CALL_CLOSED` or `UNCROSSED` | move the instrument to that phase |
//! | `FUNDS` | participant, price = a signed amount | deposit (or withdraw) funds |
//! | `HOLDINGS` | participant, instrument, qty = a signed quantity | credit (or debit) registry holdings |
//! | `SHORTFALL` | participant, instrument | the registry found the seller short |

use std::collections::HashMap;
use std::fmt;
use std::io::Read;

use cccx_engine::{
    Command, CommandBody, InstrumentId, InstrumentSpec, NewOrder, OrderId, OrderType, ParticipantId, Phase,
    Price, Qty, Side, TimeInForce, RESTING_ORDERS_MAX,
};

/// The header line every workload file starts with.
pub const FLOW_HEADER: &str = "seq,op,order_id,participant,instrument,side,type,tif,price,qty";

/// A parsed workload: the instruments in order of first appearance and the commands.
#[derive(Debug, Default)]
pub struct Flow {
    /// Instrument names; `InstrumentId(i)` is `instruments[i]`.
    pub instruments: Vec<String>,
    /// The commands, stamped with their `seq` as time.
    pub commands: Vec<Command>,
}

impl Flow {
    /// The instrument specifications of the canonical semantics: tick 1, lot 1, no band, no
    /// self-trade prevention, no quantity limit, room in each book for every resting order the
    /// flow enters (so that no order is ever refused for want of room), and the call phase for
    /// a file that contains an UNCROSS (closed for one with PHASE lines).
    pub fn canonical_specs(&self) -> Vec<InstrumentSpec> {
        let mut resting = vec![0u64; self.instruments.len()];
        for cmd in &self.commands {
            if let CommandBody::New(o) = &cmd.body {
                if o.order_type == OrderType::Limit && o.tif.rests() {
                    resting[o.instrument.0 as usize] += 1;
                }
            }
        }
        let room = |n: u64| n.clamp(1, u64::from(RESTING_ORDERS_MAX)) as u32;
        // A file with PHASE lines drives the phases itself, from closed; a file with an UNCROSS
        // is a call auction: every instrument is in its call phase.
        let phased = self.commands.iter().any(|c| matches!(c.body, CommandBody::SetPhase { .. }));
        let auction = self.commands.iter().any(|c| matches!(c.body, CommandBody::Uncross { .. }));
        let phase = match (phased, auction) {
            (true, _) => Phase::Closed,
            (false, true) => Phase::Call,
            (false, false) => Phase::Continuous,
        };
        self.instruments
            .iter()
            .zip(resting)
            .map(|(name, n)| InstrumentSpec {
                resting_orders_max: room(n),
                initial_phase: phase,
                ..InstrumentSpec::canonical(name)
            })
            .collect()
    }
}

/// A problem in a workload file, with the 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowError {
    /// 1-based line number (the header is line 1).
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for FlowError {}

fn err(line: u64, message: impl Into<String>) -> FlowError {
    FlowError { line, message: message.into() }
}

/// Reads a whole workload.
pub fn read_flow(input: impl Read) -> Result<Flow, FlowError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
    let mut record = csv::ByteRecord::new();
    let mut flow = Flow::default();
    let mut names: HashMap<Vec<u8>, InstrumentId> = HashMap::new();
    let header = FLOW_HEADER.replace(',', "");
    let mut records = 0u64;
    loop {
        let line = match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => record.position().map_or(records + 1, |p| p.line()),
            Err(e) => {
                let line = e.position().map_or(records + 1, |p| p.line());
                return Err(err(line, format!("unreadable CSV: {e}")));
            }
        };
        records += 1;
        if records == 1 {
            if record.as_slice() != header.as_bytes() || record.len() != 10 {
                return Err(err(line, format!("expected the header `{FLOW_HEADER}`")));
            }
            continue;
        }
        let cmd = parse_record(&record, &mut names, &mut flow.instruments).map_err(|m| err(line, m))?;
        flow.commands.push(cmd);
    }
    if records == 0 {
        return Err(err(1, "empty file: expected a header line"));
    }
    Ok(flow)
}

fn parse_record(
    r: &csv::ByteRecord,
    names: &mut HashMap<Vec<u8>, InstrumentId>,
    instruments: &mut Vec<String>,
) -> Result<Command, String> {
    if r.len() != 10 {
        return Err(format!("expected 10 fields, found {}", r.len()));
    }
    let seq: u64 = number(r, 0, "seq")?;
    let op = &r[1];
    let body = match op {
        b"UNCROSS" => Some(CommandBody::Uncross { instrument: instrument(r, names, instruments)? }),
        b"PHASE" => Some(CommandBody::SetPhase {
            instrument: instrument(r, names, instruments)?,
            phase: phase(&r[6])?,
        }),
        b"FUNDS" => Some(CommandBody::Funds {
            participant: ParticipantId(number(r, 3, "participant")?),
            amount: number(r, 8, "price (the amount)")?,
        }),
        b"HOLDINGS" => Some(CommandBody::Holdings {
            participant: ParticipantId(number(r, 3, "participant")?),
            instrument: instrument(r, names, instruments)?,
            qty: number(r, 9, "qty")?,
        }),
        b"SHORTFALL" => Some(CommandBody::Shortfall {
            participant: ParticipantId(number(r, 3, "participant")?),
            instrument: instrument(r, names, instruments)?,
        }),
        _ => None,
    };
    if let Some(body) = body {
        return Ok(Command { ts_ns: seq, body });
    }
    let order_id = OrderId(number(r, 2, "order_id")?);
    let participant = ParticipantId(number(r, 3, "participant")?);
    let instrument = instrument(r, names, instruments)?;
    let body = match op {
        b"NEW" => {
            let order_type = match &r[6] {
                b"LIMIT" => OrderType::Limit,
                b"MARKET" => OrderType::Market,
                other => return Err(format!("type: expected LIMIT or MARKET, found `{}`", text(other))),
            };
            let price = match order_type {
                OrderType::Limit => number(r, 8, "price")?,
                OrderType::Market if r[8].is_empty() => 0,
                OrderType::Market => return Err("price: a MARKET order carries no price".into()),
            };
            CommandBody::New(NewOrder {
                order_id,
                participant,
                instrument,
                side: side(r)?,
                order_type,
                tif: tif(&r[7])?,
                price,
                qty: number(r, 9, "qty")?,
                post_only: false,
            })
        }
        b"CANCEL" => CommandBody::Cancel { instrument, order_id, participant },
        b"AMEND" => CommandBody::Amend {
            instrument,
            order_id,
            participant,
            price: number::<Price>(r, 8, "price")?,
            qty: number::<Qty>(r, 9, "qty")?,
        },
        other => {
            return Err(format!(
                "op: expected NEW, CANCEL, AMEND, UNCROSS, PHASE, FUNDS, HOLDINGS or SHORTFALL, found `{}`",
                text(other)
            ))
        }
    };
    Ok(Command { ts_ns: seq, body })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn number<T: std::str::FromStr>(r: &csv::ByteRecord, i: usize, name: &str) -> Result<T, String> {
    let field = &r[i];
    if field.is_empty() {
        return Err(format!("{name}: missing"));
    }
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{name}: `{}` is not a valid number", text(field)))
}

fn side(r: &csv::ByteRecord) -> Result<Side, String> {
    match &r[5] {
        b"BUY" => Ok(Side::Buy),
        b"SELL" => Ok(Side::Sell),
        b"" => Err("side: missing".into()),
        other => Err(format!("side: expected BUY or SELL, found `{}`", text(other))),
    }
}

/// A phase name in the `type` column of a PHASE line.
fn phase(field: &[u8]) -> Result<Phase, String> {
    match field {
        b"CONTINUOUS" => Ok(Phase::Continuous),
        b"CALL" => Ok(Phase::Call),
        b"CLOSED" => Ok(Phase::Closed),
        b"CALL_CLOSED" => Ok(Phase::CallClosed),
        b"UNCROSSED" => Ok(Phase::Uncrossed),
        b"" => Err("type (the phase): missing".into()),
        other => Err(format!(
            "type (the phase): expected CONTINUOUS, CALL, CLOSED, CALL_CLOSED or UNCROSSED, found `{}`",
            text(other)
        )),
    }
}

fn tif(field: &[u8]) -> Result<TimeInForce, String> {
    match field {
        b"GTC" => Ok(TimeInForce::Gtc),
        b"DAY" => Ok(TimeInForce::Day),
        b"IOC" => Ok(TimeInForce::Ioc),
        b"FOK" => Ok(TimeInForce::Fok),
        b"" => Err("tif: missing".into()),
        other => Err(format!("tif: expected GTC, DAY, IOC or FOK, found `{}`", text(other))),
    }
}

fn instrument(
    r: &csv::ByteRecord,
    names: &mut HashMap<Vec<u8>, InstrumentId>,
    instruments: &mut Vec<String>,
) -> Result<InstrumentId, String> {
    let name = &r[4];
    if let Some(id) = names.get(name) {
        return Ok(*id);
    }
    let valid = !name.is_empty() && name.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b));
    if !valid {
        return Err(format!("instrument: `{}` is not a valid instrument name", text(name)));
    }
    let id = InstrumentId(u32::try_from(instruments.len()).map_err(|_| "too many instruments")?);
    names.insert(name.to_vec(), id);
    instruments.push(text(name));
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Flow, FlowError> {
        read_flow(format!("{FLOW_HEADER}\n{body}").as_bytes())
    }

    #[test]
    fn reads_every_op() {
        let flow = parse(
            "1,NEW,1,7,CCC0,BUY,LIMIT,GTC,20000,5\n\
             2,NEW,2,8,CCC1,SELL,MARKET,IOC,,3\n\
             3,CANCEL,1,7,CCC0,BUY,,,,\n\
             4,AMEND,1,7,CCC0,BUY,LIMIT,,20001,4\n",
        )
        .unwrap();
        assert_eq!(flow.instruments, vec!["CCC0", "CCC1"]);
        assert_eq!(flow.commands.len(), 4);
        assert_eq!(
            flow.commands[0].body,
            CommandBody::New(NewOrder::limit(1, 7, 0, Side::Buy, TimeInForce::Gtc, 20000, 5))
        );
        assert_eq!(flow.commands[1].body, CommandBody::New(NewOrder::market(2, 8, 1, Side::Sell, 3)));
        assert_eq!(flow.commands[1].ts_ns, 2);
        assert_eq!(
            flow.commands[3].body,
            CommandBody::Amend {
                instrument: InstrumentId(0),
                order_id: OrderId(1),
                participant: ParticipantId(7),
                price: 20001,
                qty: 4
            }
        );
    }

    #[test]
    fn reads_the_operator_lines() {
        let flow = parse(
            "1,PHASE,,,CCC0,,CALL,,,\n\
             2,FUNDS,,7,,,,,-250,\n\
             3,HOLDINGS,,8,CCC0,,,,,-40\n\
             4,SHORTFALL,,8,CCC0,,,,,\n",
        )
        .unwrap();
        let bodies: Vec<CommandBody> = flow.commands.iter().map(|c| c.body).collect();
        let (i, p) = (InstrumentId(0), ParticipantId(8));
        assert_eq!(
            bodies,
            vec![
                CommandBody::SetPhase { instrument: i, phase: Phase::Call },
                CommandBody::Funds { participant: ParticipantId(7), amount: -250 },
                CommandBody::Holdings { participant: p, instrument: i, qty: -40 },
                CommandBody::Shortfall { instrument: i, participant: p },
            ]
        );
        assert_eq!(flow.canonical_specs()[0].initial_phase, Phase::Closed);
        let err = parse("1,PHASE,,,CCC0,,OPEN,,,\n").unwrap_err();
        assert!(err.to_string().contains("expected CONTINUOUS"), "{err}");
        let err = parse("1,FUNDS,,7,,,,,,\n").unwrap_err();
        assert!(err.to_string().contains("amount"), "{err}");
    }

    proptest::proptest! {
        /// Whatever bytes follow the header, reading never panics: a flow or an error that
        /// names a line of the input.
        #[test]
        fn arbitrary_input_never_panics(body in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just(b',' ),
                proptest::strategy::Just(b'\n'),
                proptest::strategy::Just(b'"'),
                proptest::prelude::any::<u8>(),
                proptest::sample::select(b"NEWCANCELAMENDBUYSELLLIMITMARKETGTCIOCFOKDAY0123456789-".to_vec()),
            ],
            0..400,
        )) {
            let mut input = format!("{FLOW_HEADER}\n").into_bytes();
            input.extend(body);
            let lines = input.iter().filter(|b| **b == b'\n').count() as u64 + 1;
            if let Err(e) = read_flow(input.as_slice()) {
                proptest::prop_assert!(e.line >= 2 && e.line <= lines, "{e}");
            }
        }
    }

    #[test]
    fn bad_input_names_the_line() {
        let cases = [
            ("1,NEW,1,7,CCC0,BUY,LIMIT,GTC,20000,5\n2,FROB,1,7,CCC0,BUY,LIMIT,GTC,1,1\n", 3, "op"),
            ("1,NEW,1,7,CCC0,BUY,LIMIT,GTC,,5\n", 2, "price: missing"),
            ("1,NEW,1,7,CCC0,BUY,LIMIT,GTC,12a,5\n", 2, "price: `12a`"),
            ("1,NEW,1,7,CCC0,BUY,LIMIT,GTC,5\n", 2, "10 fields"),
            ("1,NEW,1,7,CCC0,UP,LIMIT,GTC,5,5\n", 2, "side"),
            ("1,NEW,1,7,CCC0,BUY,LIMIT,GTX,5,5\n", 2, "tif"),
            ("1,NEW,1,7,CCC0,BUY,STOP,GTC,5,5\n", 2, "type"),
            ("1,NEW,,7,CCC0,BUY,LIMIT,GTC,5,5\n", 2, "order_id: missing"),
            ("1,NEW,1,7,CCC0,BUY,LIMIT,GTC,5,-5\n", 2, "qty"),
            ("1,UNCROSS,,,,,,,,\n", 2, "instrument"),
        ];
        for (body, line, needle) in cases {
            let e = parse(body).unwrap_err();
            assert_eq!(e.line, line, "{body}: {e}");
            assert!(e.to_string().contains(needle), "{body}: {e}");
        }
        assert_eq!(read_flow("seq,op\n".as_bytes()).unwrap_err().line, 1);
        assert_eq!(read_flow("".as_bytes()).unwrap_err().line, 1);
        // A quoted field spanning lines: the error names the line the record starts on.
        let e =
            parse("1,NEW,1,7,\"CCC\n0\",BUY,LIMIT,GTC,5,5\n2,NEW,2,7,CCC0,BUY,LIMIT,GTC,x,5\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }
}
