//! FIX 4.4 acceptor, REST/JSON API and the sequencer that feeds the engine: not built yet (issue 5).
