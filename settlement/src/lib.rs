//! Registry transfers, delivery versus payment, reconciliation and the audit trail: not built yet (issue 6).
