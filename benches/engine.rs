//! Criterion benches of the engine: add, cancel, match and the standard mixed flow, each for the
//! fast book and the naive reference book.
//!
//! `cargo bench --bench engine`. Figures go to BENCHMARKS.md; `cccx bench` is the harness for
//! whole-flow throughput and latency percentiles.

use std::hint::black_box;

use cccx::flow::{read_flow, Flow};
use cccx::genflow::{write_flow, GenFlowArgs};
use cccx_engine::{
    Book, Command, CommandBody, Engine, InstrumentId, InstrumentSpec, NewOrder, OrderBook, OrderId,
    ParticipantId, ReferenceBook, Side, TimeInForce,
};
use clap::Parser;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

/// Orders per batch in the add, cancel and match benches.
const BATCH: u64 = 10_000;

fn new_order(id: u64, side: Side, price: i64, qty: u64) -> Command {
    Command {
        ts_ns: id,
        body: CommandBody::New(NewOrder::limit(
            id,
            (id % 1000) as u32,
            0,
            side,
            TimeInForce::Gtc,
            price,
            qty,
        )),
    }
}

/// `BATCH` resting bids spread over 64 levels below 20000.
fn resting_bids() -> Vec<Command> {
    (1..=BATCH).map(|id| new_order(id, Side::Buy, 20_000 - (id % 64) as i64, 10)).collect()
}

fn engine_with<B: OrderBook>(commands: &[Command]) -> Engine<B> {
    let mut engine = Engine::<B>::new(vec![InstrumentSpec::canonical("CCC0")]).expect("valid spec");
    let mut out = Vec::new();
    for cmd in commands {
        out.clear();
        engine.apply(cmd, &mut out);
    }
    engine
}

fn run<B: OrderBook>(engine: &mut Engine<B>, commands: &[Command]) -> usize {
    let mut out = Vec::with_capacity(1024);
    let mut n = 0;
    for cmd in commands {
        out.clear();
        engine.apply(cmd, &mut out);
        n += out.len();
    }
    n
}

fn bench_book<B: OrderBook>(c: &mut Criterion, name: &str) {
    let bids = resting_bids();
    let cancels: Vec<Command> = (1..=BATCH)
        .map(|id| Command {
            ts_ns: BATCH + id,
            body: CommandBody::Cancel {
                instrument: InstrumentId(0),
                order_id: OrderId(id),
                participant: ParticipantId((id % 1000) as u32),
            },
        })
        .collect();
    // Sells of 5 at the lowest bid price: each fills half a resting order.
    let sells: Vec<Command> = (1..=BATCH * 2).map(|i| new_order(BATCH + i, Side::Sell, 19_900, 5)).collect();

    let mut group = c.benchmark_group(format!("{name}/ops"));
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("add", |b| {
        b.iter_batched(
            || engine_with::<B>(&[]),
            |mut e| (black_box(run(&mut e, &bids)), e),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("cancel", |b| {
        b.iter_batched(
            || engine_with::<B>(&bids),
            |mut e| (black_box(run(&mut e, &cancels)), e),
            BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(BATCH * 2));
    group.bench_function("match", |b| {
        b.iter_batched(
            || engine_with::<B>(&bids),
            |mut e| (black_box(run(&mut e, &sells)), e),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

#[derive(Parser)]
struct Gen {
    #[command(flatten)]
    args: GenFlowArgs,
}

fn generated(args: &[&str]) -> Flow {
    let gen = Gen::parse_from(std::iter::once("gen").chain(args.iter().copied()));
    let mut bytes = Vec::new();
    write_flow(&gen.args, &mut bytes).expect("generator writes to memory");
    read_flow(bytes.as_slice()).expect("generated flow parses")
}

fn bench_flows(c: &mut Criterion) {
    let flows = [
        ("continuous", generated(&["--profile", "continuous", "--ops", "200000"])),
        ("deep-book", generated(&["--profile", "deep-book", "--prefill", "100000", "--ops", "100000"])),
    ];
    for (name, flow) in &flows {
        let mut group = c.benchmark_group(format!("flow/{name}"));
        group.throughput(Throughput::Elements(flow.commands.len() as u64));
        group.sample_size(10);
        group.bench_function(BenchmarkId::new("fast", flow.commands.len()), |b| {
            b.iter_batched(
                || Engine::<Book>::new(flow.canonical_specs()).expect("valid specs"),
                |mut e| (black_box(run(&mut e, &flow.commands)), e),
                BatchSize::LargeInput,
            )
        });
        group.bench_function(BenchmarkId::new("naive", flow.commands.len()), |b| {
            b.iter_batched(
                || Engine::<ReferenceBook>::new(flow.canonical_specs()).expect("valid specs"),
                |mut e| (black_box(run(&mut e, &flow.commands)), e),
                BatchSize::LargeInput,
            )
        });
        group.finish();
    }
}

/// The journal alone: appending a flow's commands (durability none) and scanning them back
/// (CRC, sequence and chain checks), without the engine.
fn bench_journal(c: &mut Criterion) {
    use cccx_engine::journal::{scan, Durability, JournalConfig, JournalWriter};
    let flow = generated(&["--profile", "continuous", "--ops", "200000"]);
    let n = flow.commands.len() as u64;
    let config = |dir: &std::path::Path| JournalConfig {
        dir: dir.to_path_buf(),
        segment_bytes: 32 << 20,
        durability: Durability::None,
        genesis: [0; 32],
    };
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(n));
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("append", n), |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("temporary directory");
                let (writer, _) = JournalWriter::open(config(dir.path()), |_, _| {}).expect("journal opens");
                (dir, writer)
            },
            |(dir, mut writer)| {
                for cmd in &flow.commands {
                    black_box(writer.append(cmd).expect("append"));
                }
                (dir, writer)
            },
            BatchSize::PerIteration,
        )
    });
    let dir = tempfile::tempdir().expect("temporary directory");
    let (mut writer, _) = JournalWriter::open(config(dir.path()), |_, _| {}).expect("journal opens");
    for cmd in &flow.commands {
        writer.append(cmd).expect("append");
    }
    writer.close().expect("close");
    group.bench_function(BenchmarkId::new("scan", n), |b| {
        b.iter(|| {
            scan(dir.path(), [0; 32], |_, cmd| {
                black_box(cmd);
            })
            .expect("scan")
        })
    });
    group.finish();
}

fn bench_books(c: &mut Criterion) {
    bench_book::<Book>(c, "fast");
    bench_book::<ReferenceBook>(c, "naive");
}

criterion_group!(benches, bench_books, bench_flows, bench_journal);
criterion_main!(benches);
