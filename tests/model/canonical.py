#!/usr/bin/env python3
"""Independent model of the canonical matching semantics (WORKLOADS.md).

Reads a workload CSV, applies the rules of "Canonical semantics" (continuous trading, and the call
auction of a file that contains UNCROSS) with a plain book, and writes the canonical trades and
final book of "Canonical outputs". It is written from the specification text alone, as a
cross-check of the Rust engine.

Usage: python3 tests/model/canonical.py FLOW.csv TRADES_OUT.csv BOOK_OUT.csv

Standard library only.

Points of the specification this model follows:
- A trade takes place at the resting order's price; the resting side is walked in price-time
  priority (best price first, then arrival order within the level).
- LIMIT GTC/DAY rest their remainder, LIMIT IOC and MARKET (always IOC, any price) drop it.
- LIMIT FOK trades only if the opposite side holds at least qty at prices that cross the limit;
  otherwise it is rejected with no trade.
- CANCEL/AMEND of an order that is not resting: rejected, nothing changes.
- AMEND to the same price with a quantity not larger than the open quantity keeps time priority
  (the open quantity becomes the new quantity). Anything else loses it: the order leaves the
  book, is matched as an aggressor at its new price, and its remainder rests at the back of the
  level (only GTC/DAY orders rest, so an amended order always may rest).

Call auction (a file with at least one UNCROSS line, found by reading the whole file first):
- Every instrument is in its call phase for the whole file. NEW (LIMIT GTC/DAY) rests without
  matching; CANCEL removes; AMEND keeps or loses time priority by the rule above, and an order
  that loses it moves to the back of its (new) level without matching.
- UNCROSS for an instrument: the clearing price is searched by brute force over every tick from
  the lowest to the highest order price of the instrument (outside that range V = 0): largest
  V(P) = min(D(P), S(P)), then smallest |D(P) - S(P)|; the remaining ticks must form one interval
  [lo, hi] (checked), and P = floor((lo + hi) / 2). No uncross when V = 0 (or a side is empty).
- Each side allocates V: whole levels in price priority, then the marginal level pro rata to open
  quantity, rounded down; the leftover units go one each to the largest remainders (ties to the
  earlier order in the level). Orders allocated 0 take no part.
- Trades pair the allocated buys and sells, each side walked in priority order (price, then
  time), each trade min(remaining buy, remaining sell) at P, aggressor_side AUCTION. Filled
  orders leave the book; partly filled ones keep their place with reduced leaves.

Choices where the text is silent (none of them arises in generated flows):
- CANCEL/AMEND find the order by order_id alone; the participant, instrument and side on the
  line are not checked against the resting order (a mismatch is reported on stderr).
- A NEW with qty <= 0, a LIMIT without a positive price, a NEW reusing the id of a resting
  order, and an AMEND with qty <= 0 or without a positive price are rejected (nothing changes).
- MARKET ignores its tif column ("always IOC").
- In a call-phase file, LIMIT IOC/FOK and MARKET orders are rejected with no effect (a warning on
  stderr): they cannot rest and nothing matches before the uncross.
- The call phase does not end at an UNCROSS: later NEW/CANCEL/AMEND still only change the book,
  and a later UNCROSS of the same instrument uncrosses again.
- Trades are numbered across the whole file, continuous or auction.
"""
import bisect
import sys

TRADES_HEADER = "trade_seq,instrument,price,qty,buy_order_id,sell_order_id,aggressor_side"
BOOK_HEADER = "instrument,side,price,order_id,leaves_qty"
FLOW_HEADER = "seq,op,order_id,participant,instrument,side,type,tif,price,qty"


class Order:
    __slots__ = ("oid", "participant", "instrument", "side", "price", "qty")

    def __init__(self, oid, participant, instrument, side, price, qty):
        self.oid = oid
        self.participant = participant
        self.instrument = instrument
        self.side = side
        self.price = price
        self.qty = qty  # open (leaves) quantity


class Side:
    """One side of one instrument's book: price -> list of orders in time order."""

    def __init__(self, is_bid):
        self.is_bid = is_bid
        self.levels = {}
        self.prices = []  # ascending; the best bid is the last, the best ask the first

    def best_price(self):
        if not self.prices:
            return None
        return self.prices[-1] if self.is_bid else self.prices[0]

    def add_back(self, order):
        level = self.levels.get(order.price)
        if level is None:
            self.levels[order.price] = [order]
            bisect.insort(self.prices, order.price)
        else:
            level.append(order)

    def remove(self, order):
        level = self.levels[order.price]
        for i, o in enumerate(level):
            if o is order:
                del level[i]
                break
        else:
            raise AssertionError("order not in its level")
        if not level:
            self._drop_level(order.price)

    def _drop_level(self, price):
        del self.levels[price]
        i = bisect.bisect_left(self.prices, price)
        assert self.prices[i] == price
        del self.prices[i]

    def crosses(self, price, limit):
        """Whether a resting order of this side at `price` crosses an aggressor's `limit`
        (None = market, crosses everything)."""
        if limit is None:
            return True
        # resting bids are hit by a sell with limit <= bid; resting asks by a buy with limit >= ask
        return price >= limit if self.is_bid else price <= limit

    def qty_crossing(self, limit, needed):
        """The open quantity at prices crossing `limit`, counted up to `needed`."""
        total = 0
        order = reversed(self.prices) if self.is_bid else iter(self.prices)
        for price in order:
            if not self.crosses(price, limit):
                break
            for o in self.levels[price]:
                total += o.qty
            if total >= needed:
                break
        return total

    def in_priority_order(self):
        order = reversed(self.prices) if self.is_bid else iter(self.prices)
        for price in order:
            for o in self.levels[price]:
                yield o


class Engine:
    def __init__(self, call_phase=False):
        self.call_phase = call_phase  # a file with UNCROSS: nothing matches outside an uncross
        self.books = {}  # instrument name -> {"BUY": Side, "SELL": Side}
        self.resting = {}  # order_id -> Order
        self.trades = []
        self.warnings = []

    def book(self, instrument):
        b = self.books.get(instrument)
        if b is None:
            b = {"BUY": Side(True), "SELL": Side(False)}
            self.books[instrument] = b
        return b

    def match(self, order, limit):
        """Matches `order` (not in the book) against the opposite side while its best price
        crosses `limit` (None = market). Decrements order.qty."""
        book = self.book(order.instrument)
        opposite = book["SELL" if order.side == "BUY" else "BUY"]
        while order.qty > 0:
            best = opposite.best_price()
            if best is None or not opposite.crosses(best, limit):
                break
            level = opposite.levels[best]
            while order.qty > 0 and level:
                resting = level[0]
                q = min(order.qty, resting.qty)
                order.qty -= q
                resting.qty -= q
                if order.side == "BUY":
                    buy, sell = order.oid, resting.oid
                else:
                    buy, sell = resting.oid, order.oid
                self.trades.append((order.instrument, best, q, buy, sell, order.side))
                if resting.qty == 0:
                    level.pop(0)
                    del self.resting[resting.oid]
            if not level:
                opposite._drop_level(best)

    def rest(self, order):
        self.book(order.instrument)[order.side].add_back(order)
        self.resting[order.oid] = order

    def new(self, seq, oid, participant, instrument, side, typ, tif, price, qty):
        if qty <= 0 or oid in self.resting:
            return
        order = Order(oid, participant, instrument, side, price, qty)
        if self.call_phase:
            if typ not in ("LIMIT", "MARKET"):
                raise ValueError(f"unknown order type {typ!r}")
            if typ == "MARKET" or tif in ("IOC", "FOK"):
                self.warnings.append(f"seq {seq}: {typ} {tif} order {oid} in the call phase: rejected")
                return
            if tif not in ("GTC", "DAY"):
                raise ValueError(f"unknown tif {tif!r}")
            if price is None or price <= 0:
                return
            self.rest(order)  # call phase: rests without matching
            return
        if typ == "MARKET":
            self.match(order, None)
            return
        if typ != "LIMIT":
            raise ValueError(f"unknown order type {typ!r}")
        if price is None or price <= 0:
            return
        if tif in ("GTC", "DAY"):
            self.match(order, price)
            if order.qty > 0:
                self.rest(order)
        elif tif == "IOC":
            self.match(order, price)
        elif tif == "FOK":
            opposite = self.book(instrument)["SELL" if side == "BUY" else "BUY"]
            if opposite.qty_crossing(price, qty) >= qty:
                self.match(order, price)
                assert order.qty == 0
        else:
            raise ValueError(f"unknown tif {tif!r}")

    def check_fields(self, seq, order, participant, instrument, side):
        if (participant is not None and participant != order.participant) or (
            instrument and instrument != order.instrument) or (side and side != order.side):
            self.warnings.append(f"seq {seq}: fields differ from order {order.oid}'s NEW")

    def cancel(self, seq, oid, participant, instrument, side):
        order = self.resting.get(oid)
        if order is None:
            return
        self.check_fields(seq, order, participant, instrument, side)
        self.book(order.instrument)[order.side].remove(order)
        del self.resting[oid]

    def amend(self, seq, oid, participant, instrument, side, price, qty):
        order = self.resting.get(oid)
        if order is None or qty <= 0 or price is None or price <= 0:
            return
        self.check_fields(seq, order, participant, instrument, side)
        if price == order.price and qty <= order.qty:
            order.qty = qty  # keeps time priority
            return
        # loses priority: leave the book, match as an aggressor, rest the remainder at the back
        self.book(order.instrument)[order.side].remove(order)
        del self.resting[oid]
        order.price = price
        order.qty = qty
        if not self.call_phase:  # in the call phase it only moves to the back of its level
            self.match(order, price)
        if order.qty > 0:
            self.rest(order)

    def uncross(self, instrument):
        """The uniform-price uncross of `instrument` (steps 1-7 of "Call auction")."""
        book = self.books.get(instrument)
        if book is None:
            return
        buys = list(book["BUY"].in_priority_order())  # highest limit first, then time
        sells = list(book["SELL"].in_priority_order())  # lowest limit first, then time
        if not buys or not sells:
            return
        # Steps 1-3 by brute force over every tick between the lowest and the highest order
        # price (below the lowest S(P) = 0, above the highest D(P) = 0: V = 0 there).
        prices = [o.price for o in buys] + [o.price for o in sells]
        candidates = []  # (V, surplus, tick)
        for tick in range(min(prices), max(prices) + 1):
            demand = sum(o.qty for o in buys if o.price >= tick)
            supply = sum(o.qty for o in sells if o.price <= tick)
            candidates.append((min(demand, supply), abs(demand - supply), tick))
        volume = max(c[0] for c in candidates)
        if volume == 0:
            return  # step 4
        surplus = min(c[1] for c in candidates if c[0] == volume)
        ticks = [c[2] for c in candidates if c[0] == volume and c[1] == surplus]
        lo, hi = ticks[0], ticks[-1]
        if ticks != list(range(lo, hi + 1)):
            raise AssertionError(f"{instrument}: the candidate ticks {ticks} are not one interval")
        price = (lo + hi) // 2
        # Step 5: each side allocates `volume` among its orders that accept `price`.
        buy_alloc = allocate([o for o in buys if o.price >= price], volume)
        sell_alloc = allocate([o for o in sells if o.price <= price], volume)
        # Step 6: pair the allocated orders, each side walked in priority order.
        buy_left = [[o, q] for o, q in buy_alloc if q > 0]
        sell_left = [[o, q] for o, q in sell_alloc if q > 0]
        bi = si = 0
        while bi < len(buy_left) and si < len(sell_left):
            b, s = buy_left[bi], sell_left[si]
            q = min(b[1], s[1])
            self.trades.append((instrument, price, q, b[0].oid, s[0].oid, "AUCTION"))
            b[1] -= q
            s[1] -= q
            if b[1] == 0:
                bi += 1
            if s[1] == 0:
                si += 1
        assert bi == len(buy_left) and si == len(sell_left), "the sides allocated different totals"
        # Step 7: the filled parts leave; the rest stays in place with reduced leaves.
        for side, alloc in (("BUY", buy_alloc), ("SELL", sell_alloc)):
            for order, q in alloc:
                order.qty -= q
                if order.qty == 0:
                    book[side].remove(order)
                    del self.resting[order.oid]


def allocate(orders, total):
    """Step 5 on one side: `orders` (those that accept the clearing price, in priority order)
    share `total`. Returns [(order, allocated qty)] in the same order, up to the marginal level."""
    assert sum(o.qty for o in orders) >= total
    alloc = []
    left = total
    i = 0
    while left > 0:
        level = [o for o in orders[i:] if o.price == orders[i].price]  # in time order
        i += len(level)
        level_qty = sum(o.qty for o in level)
        if left >= level_qty:  # the whole level fills
            alloc.extend((o, o.qty) for o in level)
            left -= level_qty
            continue
        # the marginal level: pro rata to open quantity, rounded down
        shares = [left * o.qty // level_qty for o in level]
        remainders = [left * o.qty % level_qty for o in level]
        leftover = left - sum(shares)
        assert 0 <= leftover < len(level)
        # one unit each to the largest remainders, ties to the earlier order
        for k in sorted(range(len(level)), key=lambda k: (-remainders[k], k))[:leftover]:
            shares[k] += 1
        alloc.extend(zip(level, shares))
        left = 0
    return alloc


def opt_int(text):
    return int(text) if text != "" else None


def run(flow_path):
    with open(flow_path, newline="") as f:
        header = f.readline().rstrip("\r\n")
        if header != FLOW_HEADER:
            raise ValueError(f"{flow_path}: unexpected header {header!r}")
        lines = []
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split(",")
            if len(fields) != 10:
                raise ValueError(f"{flow_path}:{lineno}: expected 10 fields, got {len(fields)}")
            lines.append((lineno, fields))
    # "Call auction (a file that contains UNCROSS)": the whole file is in the call phase.
    engine = Engine(call_phase=any(fields[1] == "UNCROSS" for _, fields in lines))
    for lineno, fields in lines:
        seq, op, oid, part, inst, side, typ, tif, price, qty = fields
        if op == "NEW":
            if side not in ("BUY", "SELL"):
                raise ValueError(f"{flow_path}:{lineno}: bad side {side!r}")
            engine.new(seq, int(oid), opt_int(part), inst, side, typ, tif, opt_int(price), int(qty))
        elif op == "CANCEL":
            engine.cancel(seq, int(oid), opt_int(part), inst, side)
        elif op == "AMEND":
            engine.amend(seq, int(oid), opt_int(part), inst, side, opt_int(price), int(qty))
        elif op == "UNCROSS":
            if not inst:
                raise ValueError(f"{flow_path}:{lineno}: UNCROSS without an instrument")
            engine.uncross(inst)
        else:
            raise ValueError(f"{flow_path}:{lineno}: unknown op {op!r}")
    return engine


def write_outputs(engine, trades_path, book_path):
    with open(trades_path, "w", newline="") as f:
        out = [TRADES_HEADER]
        for n, (inst, price, q, buy, sell, aggressor) in enumerate(engine.trades, start=1):
            out.append(f"{n},{inst},{price},{q},{buy},{sell},{aggressor}")
        f.write("\n".join(out) + "\n")
    with open(book_path, "w", newline="") as f:
        out = [BOOK_HEADER]
        for inst in sorted(engine.books):
            for side in ("BUY", "SELL"):
                for o in engine.books[inst][side].in_priority_order():
                    out.append(f"{inst},{side},{o.price},{o.oid},{o.qty}")
        f.write("\n".join(out) + "\n")


def main(argv):
    if len(argv) != 4:
        sys.stderr.write("usage: canonical.py FLOW.csv TRADES_OUT.csv BOOK_OUT.csv\n")
        return 2
    engine = run(argv[1])
    for w in engine.warnings[:20]:
        sys.stderr.write(f"canonical.py: warning: {w}\n")
    write_outputs(engine, argv[2], argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
