//! Field mapping: per-object configuration and the transforms between SQL columns and HubSpot
//! properties. Pure code, no I/O.

mod object;

pub use object::ObjectConfig;
