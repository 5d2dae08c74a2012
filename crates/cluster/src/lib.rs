//! A holdline cluster on NATS JetStream: nodes agree on who holds which piece of work
//! through leases in key-value buckets (no consensus of holdline's own), and compute the
//! holders of each piece by rendezvous hashing over the live members.

pub mod assign;
pub mod cover;
pub mod lease;
pub mod ledger;
pub mod members;
pub mod node;
pub mod slots;

pub use assign::holders;
pub use lease::{Bucket, Lease, LeaseError};
pub use members::View;
pub use node::{ClusterUrl, HOLDERS, Joined, join};
