//! Port of the standard order-flow generator, `shared/workloads/genflow.py`.
//!
//! [`write_flow`] writes the same bytes as `genflow.py` for the same options: the CSV header, the
//! optional prefill of resting orders, the `--ops` commands of the chosen [`Profile`] and, for the
//! auction profile, one `UNCROSS` per instrument. The stream is defined by the algorithm (see
//! `shared/workloads/WORKLOADS.md`); this module follows the Python step by step, including:
//!
//! - the seed is any integer, reduced modulo 2^64 like Python's `seed & (2**64 - 1)`;
//! - random draws happen in Python's evaluation order (left to right inside an expression), and
//!   the prefill draws the quantity *before* the participant while the main loop draws it after;
//! - `max(1, ...)` clamps the prices and amended quantities that can go below one;
//! - the live list is updated like Python's `live[i] = live[-1]; live.pop()` (a swap-remove);
//! - prices are computed in `i128`, so no `--mid` in `i64` range can overflow.
//!
//! Where the Python would crash (`--participants` or `--instruments` below one while commands are
//! generated), [`write_flow`] returns an [`io::ErrorKind::InvalidInput`] error instead, before
//! writing anything.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};

/// The CSV header line, as `genflow.py` writes it.
const HEADER: &[u8] = b"seq,op,order_id,participant,instrument,side,type,tif,price,qty\n";

/// Up to this many instruments the mids live in a vector; above it, in a map of the moved ones.
const DENSE_MIDS_MAX: u64 = 1 << 20;

/// The order-flow profile (`--profile`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Continuous trading: GTC, IOC, FOK and market orders, cancels and amends.
    #[default]
    Continuous,
    /// The same flow as `continuous`; meant to be used with `--prefill`.
    DeepBook,
    /// Call phase: DAY limit orders, cancels and amends, then one UNCROSS per instrument.
    Auction,
}

/// Options of `cccx gen-flow`, the same as genflow.py's.
///
/// Integers are read like Python's `int()`: surrounding whitespace, a `+` sign and `_` between
/// digits are accepted (`--ops 1_000_000`), and so are negative values (`--seed -5`; write
/// `--seed=-1_000` when a negative value contains `_`). [`Default`] gives the command-line
/// defaults.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[command(
    about = "Write the standard order flow, byte for byte as shared/workloads/genflow.py",
    long_about = "Write the standard order flow, byte for byte as shared/workloads/genflow.py.\n\n\
                  Integers are read like Python's int(): `--ops 1_000_000` and `--seed -5` work \
                  (write `--seed=-1_000` for a negative value with `_`)."
)]
pub struct GenFlowArgs {
    /// Workload profile.
    #[arg(long, value_enum, default_value_t = Profile::Continuous)]
    pub profile: Profile,

    /// Commands after the prefill (none if negative).
    #[arg(long, default_value_t = 1_000_000, value_parser = py_int::<i64>, allow_negative_numbers = true)]
    pub ops: i64,

    /// Seed of the SplitMix64 generator: any integer, taken modulo 2^64.
    #[arg(long, default_value_t = 1, value_parser = py_int::<i128>, allow_negative_numbers = true)]
    pub seed: i128,

    /// Number of participant accounts; orders go to accounts 0 to participants-1.
    #[arg(long, default_value_t = 1000, value_parser = py_int::<i64>, allow_negative_numbers = true)]
    pub participants: i64,

    /// Number of instruments, named CCC0, CCC1, ...
    #[arg(long, default_value_t = 1, value_parser = py_int::<i64>, allow_negative_numbers = true)]
    pub instruments: i64,

    /// Starting mid price in ticks.
    #[arg(long, default_value_t = 20_000, value_parser = py_int::<i64>, allow_negative_numbers = true)]
    pub mid: i64,

    /// Resting, non-crossing orders placed first.
    #[arg(long, default_value_t = 0, value_parser = py_int::<i64>, allow_negative_numbers = true)]
    pub prefill: i64,

    /// Cap on the generator's live GTC orders.
    #[arg(long, default_value_t = 50_000, value_parser = py_int::<i64>, allow_negative_numbers = true)]
    pub max_live: i64,
}

impl Default for GenFlowArgs {
    /// The command-line defaults.
    fn default() -> Self {
        GenFlowArgs {
            profile: Profile::Continuous,
            ops: 1_000_000,
            seed: 1,
            participants: 1000,
            instruments: 1,
            mid: 20_000,
            prefill: 0,
            max_live: 50_000,
        }
    }
}

/// Parses an integer the way Python's `int(str)` does (ASCII digits only), then narrows it to `T`.
fn py_int<T: TryFrom<i128>>(text: &str) -> Result<T, String> {
    let trimmed = text.trim();
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let out_of_range = || format!("{trimmed} is out of range");
    let mut value: i128 = 0;
    let mut after_digit = false;
    for byte in digits.bytes() {
        match byte {
            b'0'..=b'9' => {
                let digit = i128::from(byte - b'0');
                let shifted = value.checked_mul(10).ok_or_else(out_of_range)?;
                // Accumulate with the final sign so that i128::MIN is reachable.
                let next = if negative { shifted.checked_sub(digit) } else { shifted.checked_add(digit) };
                value = next.ok_or_else(out_of_range)?;
                after_digit = true;
            }
            b'_' if after_digit => after_digit = false,
            _ => return Err(format!("invalid integer {text:?}")),
        }
    }
    if !after_digit {
        return Err(format!("invalid integer {text:?}"));
    }
    T::try_from(value).map_err(|_| out_of_range())
}

/// The SplitMix64 generator of `genflow.py`.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed` modulo 2^64 (Python's `seed & (2**64 - 1)`).
    pub fn new(seed: i128) -> Self {
        // Two's-complement truncation keeps the low 64 bits: exactly the Python mask.
        SplitMix64 { state: seed as u64 }
    }

    /// The next 64-bit output (Python's `next()`).
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `next() % n`, as Python's `below(n)`. `n` must not be zero.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Writes the order flow `genflow.py` would write with the same options.
///
/// Output is buffered internally and flushed before returning. Fails with
/// [`io::ErrorKind::InvalidInput`], before writing anything, when `participants` or `instruments`
/// is below one while there are commands to generate (where the Python crashes); otherwise only
/// with the errors of `out`.
pub fn write_flow<W: Write>(args: &GenFlowArgs, out: W) -> io::Result<()> {
    Generator::new(args, out)?.run(args)
}

/// `value` as a count of at least one, or the error the Python's crash becomes.
fn positive(value: i64, option: &str) -> io::Result<u64> {
    match u64::try_from(value) {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{option} must be at least 1 when --ops or --prefill is positive (got {value})"),
        )),
    }
}

/// The current mid price of each instrument.
enum Mids {
    /// One entry per instrument.
    Dense(Vec<i128>),
    /// The start mid, and the mids of the instruments that have been touched (for huge counts).
    Sparse { start: i128, touched: HashMap<u64, i128> },
}

impl Mids {
    /// `count` instruments, all at `start`.
    fn new(count: u64, start: i128) -> Self {
        match usize::try_from(count) {
            Ok(len) if count <= DENSE_MIDS_MAX => Mids::Dense(vec![start; len]),
            _ => Mids::Sparse { start, touched: HashMap::new() },
        }
    }

    /// The mid of instrument `inst` (below the count), to read or move.
    #[inline]
    fn get_mut(&mut self, inst: u64) -> &mut i128 {
        match self {
            Mids::Dense(mids) => &mut mids[inst as usize],
            Mids::Sparse { start, touched } => touched.entry(inst).or_insert(*start),
        }
    }
}

/// Side of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Buy,
    Sell,
}

impl Side {
    /// The CSV spelling.
    fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

/// What a main-loop step does (Python's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A resting limit order: GTC, or DAY in the auction profile (Python's `"GTC"`).
    Rest,
    Ioc,
    Fok,
    Market,
    Cancel,
    Amend,
}

/// A resting order the generator may cancel or amend (an entry of Python's `live`).
#[derive(Debug, Clone, Copy)]
struct LiveOrder {
    oid: u64,
    inst: u64,
    part: u64,
    side: Side,
    price: i128,
    qty: i64,
}

/// One output line; `None` and `""` fields are written empty.
struct Row {
    op: &'static str,
    oid: Option<u64>,
    part: Option<u64>,
    inst: u64,
    side: &'static str,
    typ: &'static str,
    tif: &'static str,
    price: Option<i128>,
    qty: Option<i64>,
}

/// A reusable line buffer with an integer formatter.
struct Line {
    bytes: Vec<u8>,
    fmt: itoa::Buffer,
}

impl Line {
    /// Appends `text` and a comma.
    #[inline]
    fn text(&mut self, text: &str) {
        self.bytes.extend_from_slice(text.as_bytes());
        self.bytes.push(b',');
    }

    /// Appends `value` (nothing for `None`) and a comma.
    #[inline]
    fn int<I: itoa::Integer>(&mut self, value: Option<I>) {
        if let Some(value) = value {
            self.bytes.extend_from_slice(self.fmt.format(value).as_bytes());
        }
        self.bytes.push(b',');
    }

    /// Appends a price (nothing for `None`) and a comma, formatting it as `i64` when it fits.
    #[inline]
    fn price(&mut self, price: Option<i128>) {
        match price.map(i64::try_from) {
            Some(Ok(small)) => self.int(Some(small)),
            _ => self.int(price),
        }
    }
}

/// The generator's state: Python's locals of `main()`.
struct Generator<W: Write> {
    rng: SplitMix64,
    out: BufWriter<W>,
    line: Line,
    mids: Mids,
    live: Vec<LiveOrder>,
    seq: u64,
    next_id: u64,
    /// Validated `--participants`; zero when no command is generated.
    participants: u64,
    /// Validated `--instruments`; zero when no command is generated.
    instruments: u64,
    /// `--max-live` as a length: a new GTC order becomes a cancel once `live.len() >= live_cap`.
    live_cap: usize,
    auction: bool,
    /// The time in force of resting limit orders: DAY in the auction profile, GTC otherwise.
    tif_rest: &'static str,
}

impl<W: Write> Generator<W> {
    /// Validates the options and sets up the state; writes nothing yet.
    fn new(args: &GenFlowArgs, out: W) -> io::Result<Self> {
        let (participants, instruments) = if args.ops > 0 || args.prefill > 0 {
            (positive(args.participants, "--participants")?, positive(args.instruments, "--instruments")?)
        } else {
            (0, 0) // Python never draws from them: only the header (and UNCROSS lines) follow.
        };
        let auction = args.profile == Profile::Auction;
        Ok(Generator {
            rng: SplitMix64::new(args.seed),
            out: BufWriter::with_capacity(1 << 16, out),
            line: Line { bytes: Vec::with_capacity(128), fmt: itoa::Buffer::new() },
            mids: Mids::new(instruments, i128::from(args.mid)),
            live: Vec::new(),
            seq: 0,
            next_id: 1,
            participants,
            instruments,
            live_cap: usize::try_from(args.max_live.max(0)).unwrap_or(usize::MAX),
            auction,
            tif_rest: if auction { "DAY" } else { "GTC" },
        })
    }

    /// Writes the whole file and flushes it.
    fn run(mut self, args: &GenFlowArgs) -> io::Result<()> {
        self.out.write_all(HEADER)?;
        for _ in 0..args.prefill.max(0) {
            self.prefill_order()?;
        }
        for _ in 0..args.ops.max(0) {
            self.step()?;
        }
        if self.auction {
            // Python's range(instruments): nothing when instruments <= 0.
            for inst in 0..args.instruments.max(0).unsigned_abs() {
                self.emit(Row {
                    op: "UNCROSS",
                    oid: None,
                    part: None,
                    inst,
                    side: "",
                    typ: "",
                    tif: "",
                    price: None,
                    qty: None,
                })?;
            }
        }
        self.out.flush()
    }

    /// Writes one line, numbering it with the next `seq`.
    fn emit(&mut self, row: Row) -> io::Result<()> {
        self.seq += 1;
        let line = &mut self.line;
        line.bytes.clear();
        line.int(Some(self.seq));
        line.text(row.op);
        line.int(row.oid);
        line.int(row.part);
        line.bytes.extend_from_slice(b"CCC");
        line.int(Some(row.inst));
        line.text(row.side);
        line.text(row.typ);
        line.text(row.tif);
        line.price(row.price);
        line.int(row.qty);
        *line.bytes.last_mut().expect("a line ends with a comma") = b'\n';
        self.out.write_all(&line.bytes)
    }

    /// Python's `qty()`: `1 + below(100) * (below(100) + 1) // 10`, draws left to right.
    #[inline]
    fn qty(&mut self) -> i64 {
        let a = self.rng.below(100);
        let b = self.rng.below(100);
        1 + (a * (b + 1) / 10) as i64
    }

    /// A fair coin: BUY on zero.
    #[inline]
    fn side(&mut self) -> Side {
        if self.rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    /// Takes the next order id.
    #[inline]
    fn take_id(&mut self) -> u64 {
        let oid = self.next_id;
        self.next_id += 1;
        oid
    }

    /// One prefill order: a resting limit order 64 to 2111 ticks away from the mid.
    fn prefill_order(&mut self) -> io::Result<()> {
        let inst = self.rng.below(self.instruments);
        let side = self.side();
        let away = 64 + i128::from(self.rng.below(2048));
        let mid = *self.mids.get_mut(inst);
        let price = if side == Side::Buy { mid - away } else { mid + away }.max(1);
        let qty = self.qty(); // before the participant, unlike the main loop
        let part = self.rng.below(self.participants);
        let oid = self.take_id();
        let tif = self.tif_rest;
        self.emit(Row {
            op: "NEW",
            oid: Some(oid),
            part: Some(part),
            inst,
            side: side.as_str(),
            typ: "LIMIT",
            tif,
            price: Some(price),
            qty: Some(qty),
        })
    }

    /// One main-loop command: drift the mid, pick a kind, then cancel, amend or place an order.
    fn step(&mut self) -> io::Result<()> {
        let inst = self.rng.below(self.instruments);
        let drift = self.rng.below(200);
        let mid = self.mids.get_mut(inst);
        if drift == 0 {
            *mid += 1;
        } else if drift == 1 && *mid > 200 {
            *mid -= 1;
        }
        let mid = *mid;
        match self.kind() {
            Kind::Cancel => self.cancel(),
            Kind::Amend => self.amend(),
            kind => self.new_order(kind, inst, mid),
        }
    }

    /// Draws the kind of command, then applies the live-list cap and the empty-list fallback.
    fn kind(&mut self) -> Kind {
        let r = self.rng.below(100);
        let mut kind = match r {
            _ if self.auction => match r {
                0..85 => Kind::Rest,
                85..95 => Kind::Cancel,
                _ => Kind::Amend,
            },
            0..45 => Kind::Rest,
            45..53 => Kind::Ioc,
            53..55 => Kind::Fok,
            55..57 => Kind::Market,
            57..95 => Kind::Cancel,
            _ => Kind::Amend,
        };
        if kind == Kind::Rest && self.live.len() >= self.live_cap {
            kind = Kind::Cancel;
        }
        if matches!(kind, Kind::Cancel | Kind::Amend) && self.live.is_empty() {
            kind = Kind::Rest;
        }
        kind
    }

    /// Cancels a random live order (the list must not be empty).
    fn cancel(&mut self) -> io::Result<()> {
        let i = self.rng.below(self.live.len() as u64) as usize;
        let order = self.live.swap_remove(i); // live[i] = live[-1]; live.pop()
        self.emit(Row {
            op: "CANCEL",
            oid: Some(order.oid),
            part: Some(order.part),
            inst: order.inst,
            side: order.side.as_str(),
            typ: "",
            tif: "",
            price: None,
            qty: None,
        })
    }

    /// Amends a random live order (the list must not be empty): reduces it (7 in 10) or moves it.
    fn amend(&mut self) -> io::Result<()> {
        let i = self.rng.below(self.live.len() as u64) as usize;
        let order = &mut self.live[i];
        if self.rng.below(10) < 7 {
            // reduce, keeping priority: max(1, oq - 1 - below(max(1, oq)))
            let cut = self.rng.below(order.qty.max(1).unsigned_abs()) as i64;
            order.qty = (order.qty - 1 - cut).max(1);
        } else {
            // move, losing priority: max(1, oprice + below(5) - 2)
            order.price = (order.price + i128::from(self.rng.below(5)) - 2).max(1);
        }
        let order = *order;
        self.emit(Row {
            op: "AMEND",
            oid: Some(order.oid),
            part: Some(order.part),
            inst: order.inst,
            side: order.side.as_str(),
            typ: "LIMIT",
            tif: "",
            price: Some(order.price),
            qty: Some(order.qty),
        })
    }

    /// Places a new order of `kind` (not a cancel or amend) on `inst`, whose mid is `mid`.
    fn new_order(&mut self, kind: Kind, inst: u64, mid: i128) -> io::Result<()> {
        let side = self.side();
        let part = self.rng.below(self.participants);
        let oid = self.take_id();
        let qty = self.qty();
        let mut row = Row {
            op: "NEW",
            oid: Some(oid),
            part: Some(part),
            inst,
            side: side.as_str(),
            typ: "MARKET",
            tif: "IOC",
            price: None,
            qty: Some(qty),
        };
        if kind == Kind::Market {
            return self.emit(row);
        }
        let off = if self.rng.below(100) < 15 {
            -i128::from(self.rng.below(8)) // aggressive: at or through the mid
        } else {
            let a = self.rng.below(64);
            let b = self.rng.below(64);
            i128::from(a * b / 64) // passive: skewed toward the mid
        };
        let price = if side == Side::Buy { mid - off } else { mid + off }.max(1);
        row.typ = "LIMIT";
        row.price = Some(price);
        row.tif = match kind {
            Kind::Ioc => "IOC",
            Kind::Fok => "FOK",
            _ => self.tif_rest,
        };
        self.emit(row)?;
        if kind == Kind::Rest {
            self.live.push(LiveOrder { oid, inst, part, side, price, qty });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A command line holding only the generator's options.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: GenFlowArgs,
    }

    fn parse(argv: &[&str]) -> Result<GenFlowArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("gen-flow").chain(argv.iter().copied())).map(|cli| cli.args)
    }

    fn flow(args: &GenFlowArgs) -> io::Result<String> {
        let mut out = Vec::new();
        write_flow(args, &mut out)?;
        Ok(String::from_utf8(out).expect("ASCII output"))
    }

    /// First outputs, from `python3 -c 'from genflow import SplitMix64; ...'`.
    #[test]
    fn splitmix64_matches_python() {
        let cases: [(i128, [u64; 4]); 4] = [
            (0, [0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f, 0xf88bb8a8724c81ec]),
            (1, [0x910a2dec89025cc1, 0xbeeb8da1658eec67, 0xf893a2eefb32555e, 0x71c18690ee42c90b]),
            (-1, [0xe4d971771b652c20, 0xe99ff867dbf682c9, 0x382ff84cb27281e9, 0x6d1db36ccba982d2]),
            (1234567, [0x599ed017fb08fc85, 0x2c73f08458540fa5, 0x883ebce5a3f27c77, 0x3fbef740e9177b3f]),
        ];
        for (seed, expected) in cases {
            let mut rng = SplitMix64::new(seed);
            let got: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
            assert_eq!(got, expected, "seed {seed}");
        }
    }

    /// Seeds outside u64 are masked like Python's `seed & (2**64 - 1)`.
    #[test]
    fn splitmix64_masks_seeds_like_python() {
        let first = |seed: i128| SplitMix64::new(seed).next_u64();
        assert_eq!(first(i128::MIN), first(0));
        assert_eq!(first(i128::MAX), first(-1));
        assert_eq!(first((1 << 64) + 1), first(1));
        assert_eq!(first(-1), 0xe4d971771b652c20);
    }

    #[test]
    fn splitmix64_below_matches_python() {
        let mut rng = SplitMix64::new(1);
        let got: Vec<u64> = (0..10).map(|_| rng.below(100)).collect();
        assert_eq!(got, [65, 19, 90, 35, 61, 48, 45, 33, 20, 50]);
        let mut rng = SplitMix64::new(-1);
        let got: Vec<u64> = (0..10).map(|_| rng.below(7)).collect();
        assert_eq!(got, [0, 1, 0, 6, 1, 5, 3, 4, 5, 3]);
    }

    #[test]
    fn command_line_defaults_match_default_impl() {
        assert_eq!(parse(&[]).unwrap(), GenFlowArgs::default());
    }

    #[test]
    fn command_line_accepts_python_spellings() {
        let args = parse(&[
            "--profile",
            "deep-book",
            "--ops",
            "1_000",
            "--seed",
            "-5",
            "--mid=-3",
            "--max-live",
            "+7",
            "--prefill= 12 ",
        ])
        .unwrap();
        assert_eq!(args.profile, Profile::DeepBook);
        assert_eq!((args.ops, args.seed, args.mid, args.max_live, args.prefill), (1000, -5, -3, 7, 12));
        let huge = parse(&["--seed=-170141183460469231731687303715884105728"]).unwrap();
        assert_eq!(huge.seed, i128::MIN);
        assert_eq!(parse(&["--profile", "auction"]).unwrap().profile, Profile::Auction);
    }

    #[test]
    fn py_int_rejects_what_python_rejects() {
        for bad in ["", "-", "_1", "1_", "1__0", "0x10", "1.0", "- 5", "+-5"] {
            assert!(py_int::<i64>(bad).is_err(), "{bad:?}");
        }
        assert_eq!(py_int::<i64>("007"), Ok(7));
        assert!(py_int::<i64>("9223372036854775808").is_err());
        assert!(py_int::<i128>("170141183460469231731687303715884105728").is_err());
    }

    #[test]
    fn zero_participants_or_instruments_are_invalid_when_used() {
        for args in [
            GenFlowArgs { ops: 1, participants: 0, ..GenFlowArgs::default() },
            GenFlowArgs { ops: 0, prefill: 1, instruments: -2, ..GenFlowArgs::default() },
        ] {
            let err = flow(&args).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{args:?}");
        }
    }

    #[test]
    fn unused_participants_and_instruments_are_not_checked() {
        let header = std::str::from_utf8(HEADER).unwrap();
        let args = GenFlowArgs { ops: -3, participants: 0, instruments: 0, ..GenFlowArgs::default() };
        assert_eq!(flow(&args).unwrap(), header);
        let args = GenFlowArgs { profile: Profile::Auction, ops: 0, participants: 0, instruments: 2, ..args };
        let expected = format!("{header}1,UNCROSS,,,CCC0,,,,,\n2,UNCROSS,,,CCC1,,,,,\n");
        assert_eq!(flow(&args).unwrap(), expected);
    }

    /// Small outputs of `genflow.py`, pasted.
    #[test]
    fn small_flows_match_python() {
        let header = std::str::from_utf8(HEADER).unwrap();
        let args = GenFlowArgs { ops: 4, ..GenFlowArgs::default() };
        let expected = "1,NEW,1,761,CCC0,SELL,LIMIT,GTC,20013,221\n\
                        2,CANCEL,1,761,CCC0,SELL,,,,\n\
                        3,NEW,2,14,CCC0,SELL,MARKET,IOC,,433\n\
                        4,NEW,3,159,CCC0,SELL,LIMIT,GTC,20000,11\n";
        assert_eq!(flow(&args).unwrap(), format!("{header}{expected}"));
        // --ops 4 --seed=-5 --profile auction --instruments 2 --prefill 1 --mid 150
        let args =
            GenFlowArgs { profile: Profile::Auction, seed: -5, instruments: 2, prefill: 1, mid: 150, ..args };
        let expected = "1,NEW,1,417,CCC0,BUY,LIMIT,DAY,1,109\n\
                        2,NEW,2,771,CCC1,SELL,LIMIT,DAY,164,433\n\
                        3,CANCEL,2,771,CCC1,SELL,,,,\n\
                        4,NEW,3,22,CCC1,SELL,LIMIT,DAY,154,24\n\
                        5,NEW,4,83,CCC1,BUY,LIMIT,DAY,148,117\n\
                        6,UNCROSS,,,CCC0,,,,,\n\
                        7,UNCROSS,,,CCC1,,,,,\n";
        assert_eq!(flow(&args).unwrap(), format!("{header}{expected}"));
    }

    #[test]
    fn sparse_mids_behave_like_dense_ones() {
        let mut dense = Mids::new(3, 20_000);
        let mut sparse = Mids::Sparse { start: 20_000, touched: HashMap::new() };
        assert!(matches!(dense, Mids::Dense(_)));
        *dense.get_mut(2) += 1;
        *sparse.get_mut(2) += 1;
        assert_eq!((*dense.get_mut(2), *dense.get_mut(0)), (*sparse.get_mut(2), *sparse.get_mut(0)));
        // A count Python could not allocate: only the touched instruments are stored.
        let args = GenFlowArgs { ops: 2000, instruments: i64::MAX, ..GenFlowArgs::default() };
        assert!(matches!(Mids::new(i64::MAX as u64, 0), Mids::Sparse { .. }));
        assert_eq!(flow(&args).unwrap().lines().count(), 2001);
    }
}
