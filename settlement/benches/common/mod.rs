//! What the registry benches share: an account pair to transfer between, and the transfers,
//! sent one call at a time, in batches of proposals then posts, or in batches of proposals
//! posted at once ([`BatchOp::ProposeAndPost`], what settlement sends).

use cccx_engine::types::InstrumentId;
use cccx_settlement::{
    AccountId, BatchOp, IssueUnits, OpenAccount, PostTransfer, ProposeAndPost, ProposeTransfer, Registry,
    RegistryError, RequestId, Timestamp, Vintage,
};

/// How a bench sends its transfers.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// A proposal, then its post: two calls per transfer.
    OneByOne,
    /// A batch of this many proposals, then one of their posts.
    Batches(u64),
    /// A batch of this many proposals, each posted at once if accepted.
    ProposeAndPost(u64),
}

impl Mode {
    /// The mode in words, for a bench's report.
    pub fn describe(self) -> String {
        match self {
            Mode::OneByOne => "one by one (propose, post)".into(),
            Mode::Batches(n) => format!("in batches of {n} (proposals, then posts)"),
            Mode::ProposeAndPost(n) => format!("in batches of {n} proposals posted at once"),
        }
    }
}

fn id(s: String) -> Result<RequestId, RegistryError> {
    RequestId::new(s)
}

/// Opens accounts `A{tag}` and `B{tag}` and issues `A{tag}` 10 units per transfer to come.
pub fn setup(
    r: &mut dyn Registry,
    tag: &str,
    transfers: u64,
) -> Result<(AccountId, AccountId), RegistryError> {
    let (a, b) = (AccountId::new(format!("A{tag}"))?, AccountId::new(format!("B{tag}"))?);
    r.open_account(&OpenAccount { id: id(format!("oa{tag}"))?, account: a.clone() }, Timestamp(0))?;
    r.open_account(&OpenAccount { id: id(format!("ob{tag}"))?, account: b.clone() }, Timestamp(0))?;
    let issue = IssueUnits {
        id: id(format!("i{tag}"))?,
        account: a.clone(),
        instrument: InstrumentId(0),
        vintage: Vintage(2024),
        quantity: transfers * 10,
    };
    r.issue(&issue, Timestamp(0))?;
    Ok((a, b))
}

/// Transfers 10 units from `a` to `b`, `transfers` times (transfer `t{tag}-{n}`, post
/// `p{tag}-{n}`), dated from 1 on; every answer must be a success.
pub fn send(
    r: &mut dyn Registry,
    tag: &str,
    (a, b): (&AccountId, &AccountId),
    transfers: u64,
    mode: Mode,
) -> Result<(), RegistryError> {
    let transfer = |n: u64| -> Result<RequestId, RegistryError> { id(format!("t{tag}-{n}")) };
    let propose = |n: u64| -> Result<ProposeTransfer, RegistryError> {
        Ok(ProposeTransfer {
            id: transfer(n)?,
            from: a.clone(),
            to: b.clone(),
            instrument: InstrumentId(0),
            quantity: 10,
            vintage: None,
        })
    };
    let post = |n: u64| -> Result<RequestId, RegistryError> { id(format!("p{tag}-{n}")) };
    let batch = match mode {
        Mode::OneByOne => {
            for n in 0..transfers {
                let at = Timestamp(1 + n as i64);
                let t = r.propose(&propose(n)?, at)?;
                r.post(&PostTransfer { id: post(n)?, transfer: t.id }, at)?;
            }
            return Ok(());
        }
        Mode::Batches(batch) | Mode::ProposeAndPost(batch) => batch.max(1),
    };
    let mut n = 0;
    while n < transfers {
        let at = Timestamp(1 + n as i64);
        let range = n..transfers.min(n + batch);
        let sends: Vec<Vec<BatchOp>> = match mode {
            Mode::ProposeAndPost(_) => vec![range
                .map(|k| {
                    Ok(BatchOp::ProposeAndPost(ProposeAndPost { propose: propose(k)?, post_id: post(k)? }))
                })
                .collect::<Result<_, RegistryError>>()?],
            _ => {
                let proposals = range.clone().map(|k| Ok(BatchOp::Propose(propose(k)?)));
                let posts =
                    range.map(|k| Ok(BatchOp::Post(PostTransfer { id: post(k)?, transfer: transfer(k)? })));
                vec![
                    proposals.collect::<Result<_, RegistryError>>()?,
                    posts.collect::<Result<_, RegistryError>>()?,
                ]
            }
        };
        for ops in sends {
            for answer in r.apply_batch(&ops, at)? {
                answer?;
            }
        }
        n += batch;
    }
    Ok(())
}
