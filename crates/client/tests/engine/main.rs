//! The client engine against the real simulator over real sockets: lifecycle, faults and
//! the no-silent-loss invariant checked against the simulator's ledger.

mod common;

mod errors;
mod faults;
mod lifecycle;
mod supervision;
mod tls;
mod unknowns;
