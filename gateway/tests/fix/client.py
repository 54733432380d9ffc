"""FIX 4.4 client scenarios against a cccx server, with the independent QuickFIX engine from
PyPI (quickfix 1.16.0) and its FIX 4.4 data dictionary validation ON: a message of ours that
breaks the dictionary makes this client answer with a session Reject (35=3), which the
scenarios report under "rejects_sent".

usage: python client.py SCENARIO PORT STATE_DIR CREDENTIALS_JSON
  CREDENTIALS_JSON: {"ALUCO": "<fix_password>", ...} (the sessions to open)
  SCENARIO: trade | badpass | gap_away | gap_back | seq
Prints one line `RESULT <json>` and exits 0 when the scenario ran to its end.
"""
import json
import os
import sys
import threading
import time

import quickfix as fix
import quickfix44 as fix44

SOH = "\x01"
TIMEOUT = 10.0


def fields_of(text):
    """[(tag, value)] of a raw message, groups flat."""
    out = []
    for piece in text.split(SOH):
        if "=" in piece:
            tag, value = piece.split("=", 1)
            if tag.isdigit():
                out.append((int(tag), value))
    return out


class Msg:
    def __init__(self, text):
        self.text = text
        self.fields = fields_of(text)

    def get(self, tag):
        for t, v in self.fields:
            if t == tag:
                return v
        return None

    def all(self, tag):
        return [v for t, v in self.fields if t == tag]

    @property
    def type(self):
        return self.get(35)

    def brief(self):
        keep = (35, 11, 41, 37, 17, 150, 39, 14, 151, 6, 31, 32, 38, 44, 58, 102, 103, 434, 530, 531, 43, 262, 336, 340)
        return {str(t): v for t, v in self.fields if t in keep}


class Client(fix.Application):
    def __init__(self, passwords, username_override=None):
        super().__init__()
        self.passwords = passwords
        self.username_override = username_override
        self.cond = threading.Condition()
        self.app_in = []      # (comp_id, Msg)
        self.admin_in = []    # (comp_id, Msg)
        self.admin_out = []   # (comp_id, Msg)
        self.logged_on = set()
        self.sessions = {}

    def onCreate(self, sid):
        self.sessions[sid.getSenderCompID().getValue()] = sid

    def onLogon(self, sid):
        with self.cond:
            self.logged_on.add(sid.getSenderCompID().getValue())
            self.cond.notify_all()

    def onLogout(self, sid):
        with self.cond:
            self.logged_on.discard(sid.getSenderCompID().getValue())
            self.cond.notify_all()

    def toAdmin(self, msg, sid):
        me = sid.getSenderCompID().getValue()
        mt = fix.MsgType()
        msg.getHeader().getField(mt)
        if mt.getValue() == fix.MsgType_Logon:
            msg.setField(fix.Username(self.username_override or me))
            msg.setField(fix.Password(self.passwords[me]))
        with self.cond:
            self.admin_out.append((me, Msg(msg.toString())))

    def fromAdmin(self, msg, sid):
        with self.cond:
            self.admin_in.append((sid.getSenderCompID().getValue(), Msg(msg.toString())))
            self.cond.notify_all()

    def toApp(self, msg, sid):
        pass

    def fromApp(self, msg, sid):
        # Only after the data dictionary validation passed.
        with self.cond:
            self.app_in.append((sid.getSenderCompID().getValue(), Msg(msg.toString())))
            self.cond.notify_all()

    # --- helpers -----------------------------------------------------------------------------
    def wait_logon(self, comp_ids, timeout=TIMEOUT):
        with self.cond:
            return self.cond.wait_for(lambda: set(comp_ids) <= self.logged_on, timeout)

    def mark(self):
        with self.cond:
            return len(self.app_in)

    def wait(self, comp_id, pred, since=0, timeout=TIMEOUT, count=1):
        """The first `count` app messages to comp_id after index `since` that match."""
        def found():
            return [m for c, m in self.app_in[since:] if c == comp_id and pred(m)]
        with self.cond:
            self.cond.wait_for(lambda: len(found()) >= count, timeout)
            got = found()
        if len(got) < count:
            raise RuntimeError("timeout waiting for a message to %s (got %s)" % (comp_id, [m.brief() for m in got]))
        return got[:count]

    def send(self, comp_id, msg):
        fix.Session.sendToTarget(msg, self.sessions[comp_id])

    def rejects_sent(self):
        return [m.text.replace(SOH, "|") for _, m in self.admin_out if m.type == "3"]


def settings_text(port, state_dir, comp_ids):
    dd = os.path.join(sys.prefix, "share", "quickfix", "FIX44.xml")
    s = f"""[DEFAULT]
ConnectionType=initiator
SocketConnectHost=127.0.0.1
SocketConnectPort={port}
ReconnectInterval=1
HeartBtInt=30
FileStorePath={state_dir}/store
FileLogPath={state_dir}/log
NonStopSession=Y
StartTime=00:00:00
EndTime=00:00:00
UseDataDictionary=Y
DataDictionary={dd}
ValidateUserDefinedFields=Y
ResetOnLogon=N
ResetOnLogout=N
ResetOnDisconnect=N
"""
    for c in comp_ids:
        s += f"\n[SESSION]\nBeginString=FIX.4.4\nSenderCompID={c}\nTargetCompID=CCCX\n"
    return s


def new_order(cl, symbol, side, qty, price=None, ord_type="2", tif=None, exec_inst=None):
    m = fix44.NewOrderSingle()
    m.setField(fix.ClOrdID(cl))
    m.setField(fix.Symbol(symbol))
    m.setField(fix.Side(side))
    m.setField(fix.TransactTime())
    m.setField(fix.OrderQty(qty))
    m.setField(fix.OrdType(ord_type))
    if price is not None:
        m.setField(fix.StringField(44, str(price)))
    if tif is not None:
        m.setField(fix.TimeInForce(tif))
    if exec_inst is not None:
        m.setField(fix.ExecInst(exec_inst))
    return m


def cancel(cl, orig, symbol, side):
    m = fix44.OrderCancelRequest()
    m.setField(fix.OrigClOrdID(orig))
    m.setField(fix.ClOrdID(cl))
    m.setField(fix.Symbol(symbol))
    m.setField(fix.Side(side))
    m.setField(fix.TransactTime())
    return m


def replace(cl, orig, symbol, side, qty, price):
    m = fix44.OrderCancelReplaceRequest()
    m.setField(fix.OrigClOrdID(orig))
    m.setField(fix.ClOrdID(cl))
    m.setField(fix.Symbol(symbol))
    m.setField(fix.Side(side))
    m.setField(fix.TransactTime())
    m.setField(fix.OrderQty(qty))
    m.setField(fix.OrdType(fix.OrdType_LIMIT))
    m.setField(fix.StringField(44, str(price)))
    return m


def md_request(req_id, symbol, subscribe=True):
    m = fix44.MarketDataRequest()
    m.setField(fix.MDReqID(req_id))
    m.setField(fix.SubscriptionRequestType("1" if subscribe else "0"))
    m.setField(fix.MarketDepth(0))
    for t in ("0", "1", "2"):
        g = fix44.MarketDataRequest.NoMDEntryTypes()
        g.setField(fix.MDEntryType(t))
        m.addGroup(g)
    g = fix44.MarketDataRequest.NoRelatedSym()
    g.setField(fix.Symbol(symbol))
    m.addGroup(g)
    return m


def session_status_request(req_id, symbol):
    m = fix44.TradingSessionStatusRequest()
    m.setField(fix.TradSesReqID(req_id))
    m.setField(fix.TradingSessionID(symbol))
    m.setField(fix.SubscriptionRequestType("0"))
    return m


def er(cl, exec_type):
    return lambda m: m.type == "8" and m.get(11) == cl and m.get(150) == exec_type


def scenario_trade(c, out):
    """Continuous trading between ALUCO (buyer) and GREENOFF (seller) on CCC-2026-O."""
    sym, buy, sell = "CCC-2026-O", fix.Side_BUY, fix.Side_SELL
    A, G = "ALUCO", "GREENOFF"
    # Market data first: a snapshot, then increments.
    c.send(A, md_request("md1", sym))
    out["snapshot"] = c.wait(A, lambda m: m.type == "W")[0].brief()
    # The trading phase of the book (TradingSessionStatus, validated by the dictionary).
    c.send(A, session_status_request("ts1", sym))
    out["session_status"] = c.wait(A, lambda m: m.type == "h" and m.get(336) == sym)[0].brief()
    # Resting sell, then a buy that fills part of it.
    c.send(G, new_order("S1", sym, sell, 100, 900))
    out["sell_new"] = c.wait(G, er("S1", "0"))[0].brief()
    c.send(A, new_order("B1", sym, buy, 30, 900, tif=fix.TimeInForce_IMMEDIATE_OR_CANCEL))
    out["buy_new"] = c.wait(A, er("B1", "0"))[0].brief()
    out["buy_fill"] = c.wait(A, er("B1", "F"))[0].brief()
    out["sell_partial"] = c.wait(G, er("S1", "F"))[0].brief()
    # Replace: 80 in total (30 filled, so 50 open) at 950.
    c.send(G, replace("S1b", "S1", sym, sell, 80, 950))
    out["replaced"] = c.wait(G, er("S1b", "5"))[0].brief()
    # Status.
    st = fix44.OrderStatusRequest()
    st.setField(fix.ClOrdID("S1b"))
    st.setField(fix.Symbol(sym))
    st.setField(fix.Side(sell))
    c.send(G, st)
    out["status"] = c.wait(G, lambda m: m.type == "8" and m.get(150) == "I")[0].brief()
    # Cancel, then a cancel of an order that does not exist.
    c.send(G, cancel("X1", "S1b", sym, sell))
    out["cancelled"] = c.wait(G, er("X1", "4"))[0].brief()
    c.send(G, cancel("X2", "NOPE", sym, sell))
    out["cancel_reject"] = c.wait(G, lambda m: m.type == "9" and m.get(11) == "X2")[0].brief()
    # Rejects: a price that is not whole, an unknown symbol, a price outside the band (engine).
    c.send(A, new_order("R1", sym, buy, 1, "900.5"))
    out["reject_fraction"] = c.wait(A, er("R1", "8"))[0].brief()
    c.send(A, new_order("R2", "NOPE-1", buy, 1, 900))
    out["reject_symbol"] = c.wait(A, er("R2", "8"))[0].brief()
    c.send(A, new_order("R3", sym, buy, 1, 50))
    out["reject_band"] = c.wait(A, er("R3", "8"))[0].brief()
    # Post-only that would cross is rejected by the engine.
    c.send(G, new_order("P0", sym, sell, 5, 1000))
    c.wait(G, er("P0", "0"))
    c.send(A, new_order("P1", sym, buy, 5, 1000, exec_inst="6"))
    out["reject_post_only"] = c.wait(A, er("P1", "8"))[0].brief()
    # A resting bid (GTC by default), then the mass cancel: two more resting sells, then cancel all.
    c.send(A, new_order("B2", sym, buy, 5, 800))
    out["bid_rests"] = c.wait(A, er("B2", "0"))[0].brief()
    since = c.mark()
    c.send(G, new_order("M1", sym, sell, 5, 2000))
    c.send(G, new_order("M2", sym, sell, 5, 2100))
    c.wait(G, er("M2", "0"))
    mc = fix44.OrderMassCancelRequest()
    mc.setField(fix.ClOrdID("MC1"))
    mc.setField(fix.MassCancelRequestType(fix.MassCancelRequestType_CANCEL_ALL_ORDERS))
    mc.setField(fix.TransactTime())
    c.send(G, mc)
    out["mass_report"] = c.wait(G, lambda m: m.type == "r")[0].brief()
    out["mass_cancelled"] = sorted(m.get(11) for m in c.wait(
        G, lambda m: m.type == "8" and m.get(150) == "4", since=since, count=3))
    # A message type the exchange does not support: BusinessMessageReject.
    ssr = fix44.SecurityStatusRequest()
    ssr.setField(fix.SecurityStatusReqID("T1"))
    ssr.setField(fix.Symbol(sym))
    ssr.setField(fix.SubscriptionRequestType("0"))
    c.send(A, ssr)
    bmr = c.wait(A, lambda m: m.type == "j")[0]
    out["business_reject"] = {"372": bmr.get(372), "380": bmr.get(380), "58": bmr.get(58)}
    # Increments seen on the subscription.
    incs = [m for cc, m in c.app_in if cc == A and m.type == "X"]
    out["increments"] = len(incs)
    out["increment_entry_types"] = sorted(set(t for m in incs for t in m.all(269)))
    out["increment_actions"] = sorted(set(t for m in incs for t in m.all(279)))


def scenario_gap_away(c, out):
    """ALUCO rests a buy and logs out; GREENOFF fills it while ALUCO is away."""
    sym = "CCC-2026-O"
    c.send("ALUCO", new_order("GAP-B", sym, fix.Side_BUY, 10, 500))
    c.wait("ALUCO", er("GAP-B", "0"))
    seq = fix.Session.lookupSession(c.sessions["ALUCO"])
    out["aluco_next_target"] = seq.getExpectedTargetNum()


def scenario_fill_while_away(c, out):
    sym = "CCC-2026-O"
    c.send("GREENOFF", new_order("GAP-S", sym, fix.Side_SELL, 10, 500))
    # It fills the resting bid B2 (800) first, then GAP-B (500).
    filled = c.wait("GREENOFF", lambda m: er("GAP-S", "F")(m) and m.get(39) == "2")
    out["seller_fill"] = filled[0].brief()


def scenario_gap_back(c, out):
    """ALUCO reconnects: the fill it missed comes by resend (PossDupFlag=Y)."""
    out["resent_fill"] = c.wait("ALUCO", er("GAP-B", "F"), timeout=15)[0].brief()
    out["resend_requests_sent"] = sum(1 for _, m in c.admin_out if m.type == "2")


def scenario_seq(c, out):
    """Logon, one order, logout: report the sequence numbers."""
    tag = os.environ.get("CCCX_TAG", "Q")
    c.send("ALUCO", new_order("SEQ-" + tag, "CCC-2026-O", fix.Side_BUY, 1, 100))
    c.wait("ALUCO", lambda m: m.type == "8" and m.get(11) == "SEQ-" + tag)


def main():
    scenario, port, state_dir, creds = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    os.makedirs(state_dir, exist_ok=True)
    cfg = os.path.join(state_dir, "client-%s.cfg" % scenario)
    comp_ids = list(creds)
    with open(cfg, "w") as f:
        f.write(settings_text(port, state_dir, comp_ids))
    c = Client(creds)
    settings = fix.SessionSettings(cfg)
    initiator = fix.SocketInitiator(c, fix.FileStoreFactory(settings), settings, fix.FileLogFactory(settings))
    out = {"scenario": scenario}
    ok = False
    try:
        initiator.start()
        if scenario == "badpass":
            out["logged_on"] = c.wait_logon(comp_ids, timeout=4)
            out["logouts"] = [m.get(58) for _, m in c.admin_in if m.type == "5"]
            ok = True
        elif not c.wait_logon(comp_ids):
            out["error"] = "no logon"
        else:
            ok = run(c, scenario, out)
    except Exception as e:  # noqa: BLE001 - reported to the test
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        out["rejects_sent"] = c.rejects_sent()
        out["sequence_resets_received"] = sum(1 for _, m in c.admin_in if m.type == "4" and m.get(123) != "Y")
        initiator.stop()
        print("RESULT " + json.dumps(out), flush=True)
    return ok


def run(c, scenario, out):
    logons = [m for _, m in c.admin_in if m.type == "A"]
    out["logon_in_seq"] = int(logons[0].get(34)) if logons else None
    sent = [m for _, m in c.admin_out if m.type == "A"]
    out["logon_out_seq"] = int(sent[0].get(34)) if sent else None
    {
        "trade": scenario_trade,
        "gap_away": scenario_gap_away,
        "fill_while_away": scenario_fill_while_away,
        "gap_back": scenario_gap_back,
        "seq": scenario_seq,
    }[scenario](c, out)
    time.sleep(0.3)  # let late messages (and any reject of ours) arrive
    for comp_id, sid in c.sessions.items():
        s = fix.Session.lookupSession(sid)
        out.setdefault("next", {})[comp_id] = [s.getExpectedSenderNum(), s.getExpectedTargetNum()]
    return True


if __name__ == "__main__":
    sys.stdout.flush()
    rc = 0 if main() else 1
    sys.stdout.flush()
    os._exit(rc)
