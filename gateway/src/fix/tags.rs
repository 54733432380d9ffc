//! FIX 4.4 tag numbers used by the gateway (no generated message crate: raw messages plus
//! these constants).
#![allow(missing_docs)]

pub const AVG_PX: i32 = 6;
pub const CL_ORD_ID: i32 = 11;
pub const CUM_QTY: i32 = 14;
pub const EXEC_ID: i32 = 17;
pub const EXEC_INST: i32 = 18;
pub const LAST_PX: i32 = 31;
pub const LAST_QTY: i32 = 32;
pub const MSG_SEQ_NUM: i32 = 34;
pub const MSG_TYPE: i32 = 35;
pub const ORDER_ID: i32 = 37;
pub const ORDER_QTY: i32 = 38;
pub const ORD_STATUS: i32 = 39;
pub const ORD_TYPE: i32 = 40;
pub const ORIG_CL_ORD_ID: i32 = 41;
pub const REF_SEQ_NUM: i32 = 45;
pub const PRICE: i32 = 44;
pub const SIDE: i32 = 54;
pub const SYMBOL: i32 = 55;
pub const TEXT: i32 = 58;
pub const TIME_IN_FORCE: i32 = 59;
pub const TRANSACT_TIME: i32 = 60;
pub const CXL_REJ_REASON: i32 = 102;
pub const ORD_REJ_REASON: i32 = 103;
pub const NO_RELATED_SYM: i32 = 146;
pub const EXEC_TYPE: i32 = 150;
pub const LEAVES_QTY: i32 = 151;
pub const MD_REQ_ID: i32 = 262;
pub const SUBSCRIPTION_REQUEST_TYPE: i32 = 263;
pub const MARKET_DEPTH: i32 = 264;
pub const NO_MD_ENTRY_TYPES: i32 = 267;
pub const NO_MD_ENTRIES: i32 = 268;
pub const MD_ENTRY_TYPE: i32 = 269;
pub const MD_ENTRY_PX: i32 = 270;
pub const MD_ENTRY_SIZE: i32 = 271;
pub const TRADE_CONDITION: i32 = 277;
pub const MD_UPDATE_ACTION: i32 = 279;
pub const MD_REQ_REJ_REASON: i32 = 281;
pub const REF_MSG_TYPE: i32 = 372;
pub const BUSINESS_REJECT_REASON: i32 = 380;
pub const CXL_REJ_RESPONSE_TO: i32 = 434;
pub const MASS_CANCEL_REQUEST_TYPE: i32 = 530;
pub const MASS_CANCEL_RESPONSE: i32 = 531;
pub const MASS_CANCEL_REJECT_REASON: i32 = 532;
pub const USERNAME: i32 = 553;
pub const PASSWORD: i32 = 554;

/// `tag as u32`, for reading [`super::wire::Fields`].
pub const fn u(tag: i32) -> u32 {
    tag as u32
}
pub const UNSOLICITED_INDICATOR: i32 = 325;
pub const TRAD_SES_REQ_ID: i32 = 335;
pub const TRADING_SESSION_ID: i32 = 336;
pub const TRAD_SES_STATUS: i32 = 340;
pub const TRAD_SES_STATUS_REJ_REASON: i32 = 567;
pub const TRADING_SESSION_SUB_ID: i32 = 625;
